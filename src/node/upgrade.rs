//! The upgrade pass at start for stores written before documents were
//! append-only (store format 3, protocol/storage.md §5): documents read
//! whole at start because the upgrade marked them (a conversation with an
//! unknown index entry; the team document while `meta/audit-team` is
//! there) are replayed through the rules (`replica/audit.rs`).
//!
//! Invariant: what the pass sets aside is kept in the store and reported,
//! never dropped silently; the genuine messages of changes set aside are
//! written again as changes of ours, so they reach every device that
//! refuses the changes they came in.

use super::{persist_ops, Event, Fx, Node};
use crate::conversation::Conversation;
use crate::header::ConversationHeader;
use crate::ids::{ConversationId, Millis};
use crate::message::Message;
use crate::replica::{Audit, Persist, ReplicaError};
use crate::store::{keys, StoreOp, StoredDoc};
use crate::team::{TeamDoc, TEAM_DOC_ID, TEAM_DOC_V1_ID};

/// A document the pass changed, to write at start.
#[derive(Clone)]
pub(super) struct Audited {
    doc: [u8; 16],
    audit: Audit,
}

impl Node {
    /// The team document as the upgrade pass leaves it (unchanged unless
    /// it was marked and something breaks the rules).
    pub(super) fn audit_team(
        &mut self,
        id: crate::ids::TeamId,
        team: TeamDoc,
        stored: &StoredDoc,
    ) -> Result<TeamDoc, ReplicaError> {
        if !stored.audit || !self.config.append_only {
            return Ok(team);
        }
        self.team_audit_pending = true;
        let Some(audit) = team.replica().audit()? else {
            return Ok(team);
        };
        let (team, _) = TeamDoc::load(id, &self.actor, Some(&audit.rebuilt), &[])?;
        self.audited.push(Audited {
            doc: TEAM_DOC_ID,
            audit,
        });
        Ok(team)
    }

    /// A conversation read whole at start, as the upgrade pass leaves it.
    pub(super) fn audit_conversation(
        &mut self,
        conv: (Conversation, crate::conversation::Applied),
        header: &ConversationHeader,
        stored: &StoredDoc,
    ) -> Result<(Conversation, crate::conversation::Applied), ReplicaError> {
        if stored.meta.is_some() || !self.config.append_only {
            return Ok(conv);
        }
        let Some(audit) = conv.0.replica().audit()? else {
            return Ok(conv);
        };
        let loaded = Conversation::load(
            header.clone(),
            &self.actor,
            Some(&audit.rebuilt),
            &[],
            &stored.rejected,
        )?;
        self.audited.push(Audited {
            doc: header.id.0,
            audit,
        });
        Ok(loaded)
    }

    /// Writes what the pass did: each changed document whole (its chunks
    /// replaced by the rebuilt snapshot), what it set aside, and, as our
    /// own changes, the genuine messages of changes set aside; reports it.
    pub(super) fn write_audits(&mut self, now: Millis, fx: &mut Fx) {
        for Audited { doc, audit } in std::mem::take(&mut self.audited) {
            tracing::warn!(
                document = %ConversationId(doc),
                set_aside = audit.aside.len(),
                built_on_them = audit.stranded(),
                "stored changes break the append-only rules and are set aside (kept in the store): {}",
                audit.breaches.join("; ")
            );
            persist_ops(
                &doc,
                Persist::Snapshot {
                    bytes: audit.rebuilt.clone(),
                    upto: u64::MAX,
                },
                &mut fx.persist,
            );
            for c in &audit.aside {
                fx.persist.push(StoreOp::Put {
                    key: keys::aside(&doc, &c.hash().0),
                    value: c.raw_bytes().to_vec(),
                });
            }
            let conversation = (doc != TEAM_DOC_ID).then_some(ConversationId(doc));
            if let Some(id) = conversation {
                self.rewrite_messages(now, id, &audit);
                self.persist_conv(&id, fx);
                self.persist_index(&id, fx);
            }
            fx.emit.push(Event::Rejected {
                conversation,
                count: audit.aside.len(),
            });
        }
        if std::mem::take(&mut self.team_audit_pending) {
            fx.persist.push(StoreOp::Delete {
                key: keys::AUDIT_TEAM.to_vec(),
            });
        }
    }

    /// Appends again, as our changes, the genuine messages the changes set
    /// aside carried that the rebuilt document lacks.
    fn rewrite_messages(&mut self, now: Millis, id: ConversationId, audit: &Audit) {
        let Some(conv) = self.conversation_mut(&id) else {
            return;
        };
        let mut again = 0;
        for change in &audit.aside {
            for op in change.decode().operations {
                let automerge::legacy::OpType::Put(automerge::ScalarValue::Bytes(v)) = &op.action
                else {
                    continue;
                };
                let Ok(m) = Message::decode(v) else { continue };
                if m.verify(&id) && conv.append(now, &m).unwrap_or(false) {
                    again += 1;
                }
            }
        }
        if again > 0 {
            tracing::warn!(conversation = %id, messages = again, "wrote again the genuine messages of changes set aside");
        }
    }
}

impl Node {
    /// Carries a version-1 team document's certificates and revocations
    /// into the version-2 team document (storage.md §5.1), once: the old
    /// records go in the same batch. Every entry is verified again on the
    /// way, as if a peer had sent it.
    pub(super) fn upgrade_team_v1(&mut self, now: Millis, fx: &mut Fx) {
        let Some(old) = self.team_v1.take() else {
            return;
        };
        let Some(m) = &mut self.membership else {
            return;
        };
        match m.team.upgrade(now, old.snapshot.as_deref(), &old.chunks) {
            Ok(n) => {
                tracing::info!("carried {n} entries of the version-1 team document into version 2");
                self.persist_team(fx);
                let from = keys::doc_prefix(&TEAM_DOC_V1_ID);
                let mut to = from.clone();
                *to.last_mut().expect("a prefix") += 1;
                fx.persist.push(StoreOp::DeleteRange { from, to });
            }
            Err(e) => tracing::error!(
                "the version-1 team document could not be carried into version 2 ({e}); it is kept, and its entries come back from peers"
            ),
        }
    }
}
