//! User commands: create a conversation, send, mark read, acknowledge,
//! revoke. Each validates its input, changes the local documents, persists,
//! and pushes the change to every connected peer allowed to have it.

use std::collections::BTreeSet;

use super::{sealing, Command, CommandError, Event, Fx, Node, Output, Reply};
use crate::header::conversation_id;
use crate::header::{ConversationHeader, ConversationKind, MAX_GROUP_MEMBERS};
use crate::ids::{ConversationId, MemberId, MessageId, Millis};
use crate::membership::{valid_role, Revocation, MAX_NAME_LEN};
use crate::message::{Draft, Fields, Message, Priority, ReceiptKind, MAX_BODY_LEN};
use crate::store::{keys, StoreOp};
use crate::team::TEAM_DOC_ID;
use crate::trail::Action;

impl Node {
    /// Carries out a user command. `_rng` is where a command would take its
    /// randomness from; none needs any since conversation ids are derived
    /// from their headers (wire.md).
    pub fn command(
        &mut self,
        now: Millis,
        _rng: &mut dyn rand_core::RngCore,
        cmd: Command,
    ) -> (Result<Reply, CommandError>, Vec<Output>) {
        let mut fx = Fx::default();
        self.clinical_clock(now);
        let r = self.run_command(now, cmd, &mut fx);
        self.clinical_timer(&mut fx);
        (r, fx.into_outputs())
    }

    fn run_command(
        &mut self,
        now: Millis,
        cmd: Command,
        fx: &mut Fx,
    ) -> Result<Reply, CommandError> {
        if self.membership.is_none() && !matches!(cmd, Command::Audit(_)) {
            return Err(CommandError::NoMembership);
        }
        match cmd {
            Command::Audit(action) => {
                self.trail_append(now, action, fx);
                Ok(Reply::Done)
            }
            Command::CreateConversation { kind } => self.create(now, kind, fx),
            Command::Send {
                conversation,
                body,
                priority,
                reply_to,
                fields,
            } => {
                if fields.escalation.is_some() {
                    return Err(CommandError::Invalid(
                        "escalation entries are written by the node itself".into(),
                    ));
                }
                if let Some(r) = &fields.reminder {
                    let c = self
                        .conversation(&conversation)
                        .ok_or_else(|| self.missing(conversation))?;
                    if let Some(who) = r.targets.iter().find(|m| !self.is_recipient(c, m, now)) {
                        return Err(CommandError::Invalid(format!(
                            "member {} is not in this conversation, so a reminder cannot be for them",
                            &who.to_hex()[..8]
                        )));
                    }
                }
                fields
                    .validate()
                    .map_err(|e| CommandError::Invalid(e.to_string()))?;
                let id = self.send(now, conversation, body, priority, reply_to, fields, fx)?;
                let message = id;
                self.trail_append(
                    now,
                    Action::Sent {
                        conversation,
                        message,
                    },
                    fx,
                );
                Ok(Reply::Message(id))
            }
            Command::MarkRead { conversation } => {
                let conv = self
                    .conversation(&conversation)
                    .ok_or_else(|| self.missing(conversation))?;
                if let Some(pos) = conv.last_position() {
                    self.write_receipt(now, conversation, ReceiptKind::Read, pos, fx)?;
                }
                Ok(Reply::Done)
            }
            Command::Ack {
                conversation,
                message,
            } => {
                let conv = self
                    .conversation(&conversation)
                    .ok_or_else(|| self.missing(conversation))?;
                let m = conv
                    .get(&message)
                    .ok_or(CommandError::UnknownMessage(message))?;
                if !m.priority.wants_ack() {
                    return Err(CommandError::NotAckable(message));
                }
                if Some(m.author_member) == self.member_id() {
                    return Err(CommandError::OwnMessage(message));
                }
                let pos = m.order_key();
                if !conv.has_ack_from(&message, &self.device) {
                    self.write_receipt(now, conversation, ReceiptKind::Ack, pos, fx)?;
                    let action = Action::Acknowledged {
                        conversation,
                        message,
                    };
                    self.trail_append(now, action, fx);
                }
                Ok(Reply::Done)
            }
            Command::ReminderDone {
                conversation,
                message,
                occurrence,
            } => {
                let pos = self.own_reminder(conversation, message, occurrence)?;
                let kind = ReceiptKind::Done { occurrence };
                self.write_receipt(now, conversation, kind, pos, fx)?;
                Ok(Reply::Done)
            }
            Command::Snooze {
                conversation,
                message,
                occurrence,
                until,
            } => {
                let pos = self.own_reminder(conversation, message, occurrence)?;
                if until <= now {
                    return Err(CommandError::Invalid("a snooze ends in the future".into()));
                }
                let kind = ReceiptKind::Snooze { occurrence, until };
                self.write_receipt(now, conversation, kind, pos, fx)?;
                Ok(Reply::Done)
            }
            Command::SetPolicy(p) => {
                self.team_write(now, fx, |team, now| team.set_policy(now, &p))?;
                Ok(Reply::Done)
            }
            Command::OnCall {
                role,
                holders,
                from_ms,
                to_ms,
            } => {
                let cert = self
                    .certificate()
                    .ok_or(CommandError::NoMembership)?
                    .clone();
                if !cert.has_role(&role) {
                    return Err(CommandError::Invalid(format!(
                        "you do not hold the role \"{role}\": only its holders or an administrator (the device with the team key) set who is on call"
                    )));
                }
                let draft = crate::clinical::AssignmentDraft {
                    replaces: self.roster().overlapping(&role, from_ms, to_ms),
                    role,
                    holders,
                    from_ms,
                    to_ms,
                    issued: self.clock.tick(now).0,
                };
                let a = crate::clinical::Assignment::sign_by_device(
                    &self.key,
                    cert.team,
                    cert.member,
                    draft,
                )
                .map_err(|e| CommandError::Invalid(e.to_string()))?;
                self.team_write(now, fx, |team, now| team.add_assignment(now, &a))?;
                Ok(Reply::Done)
            }
            Command::AddAssignment(a) => {
                if a.signer != crate::clinical::Signer::Authority {
                    return Err(CommandError::Invalid(
                        "only an assignment the team authority signed is installed as given".into(),
                    ));
                }
                self.team_write(now, fx, |team, now| team.add_assignment(now, &a))?;
                Ok(Reply::Done)
            }
            Command::Revoke(rev) => {
                if self.reloading(&TEAM_DOC_ID) {
                    return Err(CommandError::Document(
                        "the team document is being read back from the store; try again".into(),
                    ));
                }
                self.learn_revocation(now, &rev, fx)?;
                let target = rev.target;
                self.trail_append(now, Action::Revoked { target }, fx);
                Ok(Reply::Done)
            }
        }
    }

    /// Appends a message this device signs, persists it, and pushes it.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn send(
        &mut self,
        now: Millis,
        conversation: ConversationId,
        body: String,
        priority: Priority,
        reply_to: Option<MessageId>,
        fields: Fields,
        fx: &mut Fx,
    ) -> Result<MessageId, CommandError> {
        let body = body.trim().to_owned();
        if body.is_empty() && fields.attachments.is_empty() {
            return Err(CommandError::EmptyBody);
        }
        if body.len() > MAX_BODY_LEN {
            return Err(CommandError::BodyTooLong {
                len: body.len(),
                max: MAX_BODY_LEN,
            });
        }
        let conv = self
            .conversation(&conversation)
            .ok_or_else(|| self.missing(conversation))?;
        if let Some(r) = reply_to {
            conv.get(&r).ok_or(CommandError::UnknownMessage(r))?;
        }
        let member = self.member_id().ok_or(CommandError::NoMembership)?;
        let hlc = self.clock.tick(now);
        let msg = Message::sign(
            &self.key,
            &conversation,
            Draft {
                author_member: member,
                hlc,
                priority,
                reply_to,
                body,
                fields,
            },
        );
        let id = msg.id();
        let conv = self.conversation_mut(&conversation).expect("checked above");
        let before = conv.replica().heads();
        conv.append(now, &msg)
            .map_err(|e| CommandError::Document(e.to_string()))?;
        self.persist_conv(&conversation, fx);
        self.clinical_note(now, conversation, &msg, now, fx);
        fx.emit.push(Event::MessageAdded {
            conversation,
            message: id,
            hlc,
            author: member,
            priority,
            local: true,
        });
        fx.emit.push(Event::Sent {
            conversation,
            message: id,
        });
        self.push_local(
            now,
            &conversation.0,
            &before,
            Some(sealing::class_of(priority)),
            fx,
        );
        Ok(id)
    }

    /// Would `member` be asked by a message in `c` (or is it the author)?
    fn is_recipient(
        &self,
        c: &crate::conversation::Conversation,
        member: &MemberId,
        now: Millis,
    ) -> bool {
        match &c.header.kind {
            ConversationKind::Direct { members } => members.contains(member),
            ConversationKind::Group { members, .. } => members.contains(member),
            ConversationKind::Role { role } => self.role_holders(role, now).contains(member),
        }
    }

    /// The position of occurrence `occurrence` of a reminder for our member.
    fn own_reminder(
        &self,
        conversation: ConversationId,
        message: MessageId,
        occurrence: u16,
    ) -> Result<(crate::hlc::Hlc, MessageId), CommandError> {
        let c = self
            .conversation(&conversation)
            .ok_or_else(|| self.missing(conversation))?;
        let m = c
            .get(&message)
            .ok_or(CommandError::UnknownMessage(message))?;
        let me = self.member_id().ok_or(CommandError::NoMembership)?;
        match &m.fields.reminder {
            Some(r) if r.targets.contains(&me) => {
                if occurrence >= r.times {
                    return Err(CommandError::Invalid(format!(
                        "the reminder has {} occurrence(s); there is no number {}",
                        r.times,
                        u32::from(occurrence) + 1
                    )));
                }
                Ok(m.order_key())
            }
            _ => Err(CommandError::NotYourReminder(message)),
        }
    }

    /// A change to the team document: persisted, pushed, and every open
    /// message re-checked against the policy and roster now in force.
    fn team_write(
        &mut self,
        now: Millis,
        fx: &mut Fx,
        write: impl FnOnce(
            &mut crate::team::TeamDoc,
            Millis,
        ) -> Result<bool, crate::replica::ReplicaError>,
    ) -> Result<(), CommandError> {
        if self.reloading(&TEAM_DOC_ID) {
            return Err(CommandError::Document(
                "the team document is being read back from the store; try again".into(),
            ));
        }
        let m = self.membership.as_mut().ok_or(CommandError::NoMembership)?;
        let before = m.team.replica().heads();
        let changed = write(&mut m.team, now).map_err(|e| CommandError::Document(e.to_string()))?;
        if changed {
            self.persist_team(fx);
            self.push_local(now, &TEAM_DOC_ID, &before, None, fx);
            self.clinical_retrack(now, fx);
        }
        Ok(())
    }

    pub(super) fn create(
        &mut self,
        now: Millis,
        kind: ConversationKind,
        fx: &mut Fx,
    ) -> Result<Reply, CommandError> {
        let cert = self
            .certificate()
            .ok_or(CommandError::NoMembership)?
            .clone();
        let invalid = |s: &str| Err(CommandError::InvalidConversation(s.to_owned()));
        match &kind {
            ConversationKind::Direct { members } => {
                if members[0] == members[1] {
                    return invalid("a direct conversation needs two different members");
                }
                if !members.contains(&cert.member) {
                    return invalid("you must be one of the two members of a direct conversation");
                }
            }
            ConversationKind::Group { title, members } => {
                if title.trim().is_empty() || title.len() > MAX_NAME_LEN {
                    return invalid("a group needs a title of 1 to 100 bytes");
                }
                if members.len() > MAX_GROUP_MEMBERS {
                    return invalid("a group has at most 256 members");
                }
                if !members.contains(&cert.member) {
                    return invalid("you must be a member of a group you create");
                }
            }
            ConversationKind::Role { role } => {
                if !valid_role(role) {
                    return invalid("a role is 1 to 64 lowercase letters, digits or '-'");
                }
                if !cert.has_role(role) {
                    return Err(CommandError::InvalidConversation(format!(
                        "you do not hold the role \"{role}\", so you could not read its channel"
                    )));
                }
            }
        }
        let id = conversation_id(&kind, self.device, now);
        if self.convs.contains_key(&id) {
            return Ok(Reply::Conversation(id));
        }
        let header = ConversationHeader::create(&self.key, kind, now);
        let title = header.title();
        if !self.add_conversation(header, fx) {
            return Err(CommandError::Unreadable(id));
        }
        fx.emit.push(Event::ConversationAdded {
            conversation: id,
            title,
        });
        // push_doc sends the header first to peers that do not know it;
        // members out of reach get it sealed.
        self.push_doc_to_all(&id.0, crate::sendq::Rank::Routine, fx);
        if let Some(heads) = self.replica_of(&id.0).map(crate::replica::Replica::heads) {
            let push = crate::replica::LocalPush::heads_only(heads.clone());
            self.seal_local(now, &id.0, &heads, &push, crate::sealed::Class::Routine, fx);
        }
        Ok(Reply::Conversation(id))
    }

    fn write_receipt(
        &mut self,
        now: Millis,
        conversation: ConversationId,
        kind: ReceiptKind,
        pos: (crate::hlc::Hlc, crate::ids::MessageId),
        fx: &mut Fx,
    ) -> Result<(), CommandError> {
        let member = self.member_id().ok_or(CommandError::NoMembership)?;
        self.conversation(&conversation)
            .ok_or_else(|| self.missing(conversation))?;
        let conv = self
            .convs
            .get_mut(&conversation)
            .and_then(super::docs::Slot::if_loaded_mut)
            .expect("loaded above");
        let current = match kind {
            ReceiptKind::Read => conv.receipts.read.get(&self.device),
            ReceiptKind::Delivered => conv.receipts.delivered.get(&self.device),
            _ => None,
        };
        if current.is_some_and(|(_, c)| *c >= pos) {
            return Ok(());
        }
        let at = self.clock.tick(now);
        let r = conv.sign_receipt(&self.key, kind, member, pos, at);
        let before = conv.replica().heads();
        conv.put_receipt(now, &r)
            .map_err(|e| CommandError::Document(e.to_string()))?;
        self.persist_conv(&conversation, fx);
        fx.emit.push(Event::ReceiptsChanged { conversation });
        // An acknowledgement closes an urgent message: it travels as urgent.
        let class = match kind {
            ReceiptKind::Ack => crate::sealed::Class::Urgent,
            _ => crate::sealed::Class::Routine,
        };
        self.push_local(now, &conversation.0, &before, Some(class), fx);
        self.clinical_receipt(now, conversation, pos.1, kind, fx);
        Ok(())
    }

    /// Writes a delivered receipt for each conversation that received
    /// messages from others since the last time.
    pub(super) fn write_delivered_receipts(&mut self, now: Millis, fx: &mut Fx) {
        let pending: BTreeSet<ConversationId> = std::mem::take(&mut self.pending_receipts);
        for id in pending {
            let Some(pos) = self.conversation(&id).and_then(|c| c.last_position()) else {
                continue;
            };
            if let Err(e) = self.write_receipt(now, id, ReceiptKind::Delivered, pos, fx) {
                tracing::warn!(conversation = %id, "could not write a delivered receipt: {e}");
            }
        }
    }
}

impl Node {
    /// Takes in a revocation (from the user, or shown by a peer refusing
    /// this device): kept in the team document and the store, reported if
    /// new, enforced on every session, and pushed to the team.
    pub(super) fn learn_revocation(
        &mut self,
        now: Millis,
        rev: &Revocation,
        fx: &mut Fx,
    ) -> Result<(), CommandError> {
        let m = self.membership.as_mut().ok_or(CommandError::NoMembership)?;
        if !rev.verify(&m.cert.team) {
            return Err(CommandError::BadRevocation);
        }
        let new = m
            .team
            .add_revocation(now, rev)
            .map_err(|e| CommandError::Document(e.to_string()))?;
        self.persist_team(fx);
        fx.persist.push(StoreOp::Put {
            key: keys::revocation(&rev.key()),
            value: rev.encode(),
        });
        if new {
            fx.emit.push(Event::Revoked { target: rev.target });
        }
        self.enforce_membership(now, fx);
        self.push_doc_to_all(&TEAM_DOC_ID, crate::sendq::Rank::Stat, fx);
        Ok(())
    }

    /// Takes in this device's own revocation, shown by a peer refusing it
    /// (already verified): kept in the store (read back at start) and the
    /// revocation set, reported and enforced; the team document is left
    /// alone.
    pub(super) fn learn_own_revocation(&mut self, now: Millis, rev: &Revocation, fx: &mut Fx) {
        let Some(m) = self.membership.as_mut() else {
            return;
        };
        if m.team.revoked.insert_signed(rev) {
            fx.persist.push(StoreOp::Put {
                key: keys::revocation(&rev.key()),
                value: rev.encode(),
            });
            fx.emit.push(Event::Revoked { target: rev.target });
        }
        self.enforce_membership(now, fx);
    }
}
