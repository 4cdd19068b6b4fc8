//! Containing a panic that one peer's bytes cause inside a library.
//!
//! Bytes from a peer are checked before Automerge sees them
//! (`replica/check.rs`), but a library bug we have not met yet must still
//! cost only that peer and that document, never the node. Every call that
//! hands a peer's bytes, or a sync state built from them, to Automerge runs
//! under [`guarded`]: receiving a sync message (`peer.rs`), and generating
//! one from the peer's state (`push.rs`) — Automerge 0.12's Bloom filter
//! panic fires there, when the state a peer left is next used.
//!
//! Invariant: no half-applied state survives a panic. The document's copy
//! in memory is dropped at once (a panic may leave Automerge's op set
//! half-changed) and read back from the store ([`Output::Reload`] →
//! [`Input::Reloaded`]): the store holds exactly what earlier steps applied,
//! since a step persists only after Automerge returned. Until it is back,
//! the document is neither synced nor written (`Node::reloading`); every
//! peer's sync state for it is dropped, so the next exchange starts from
//! what the store holds. The peer whose bytes were in play is refused.
//!
//! [`Output::Reload`]: super::Output::Reload
//! [`Input::Reloaded`]: super::Input::Reloaded

use std::panic::{catch_unwind, AssertUnwindSafe};

use super::{Fx, Node};
use crate::conversation::Conversation;
use crate::ids::{ConversationId, DeviceId};
use crate::store::StoredDoc;
use crate::team::{TeamDoc, TEAM_DOC_ID};
use crate::wire::Reason;

/// Runs `f`, turning a panic into an error that says what panicked.
///
/// `AssertUnwindSafe` is sound here because whatever `f` touched is thrown
/// away on a panic ([`Node::contain`]): the document is reloaded and the
/// sync states are dropped.
pub(super) fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
        payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic with no message".to_owned())
    })
}

impl Node {
    /// Is `doc` waiting to be read back from the store?
    pub(super) fn reloading(&self, doc: &[u8; 16]) -> bool {
        self.reloading.contains(doc)
    }

    /// A library panicked on `doc` while handling `peer`'s bytes.
    pub(super) fn contain_panic(&mut self, doc: [u8; 16], peer: DeviceId, why: &str, fx: &mut Fx) {
        tracing::error!(peer = %peer.short(), document = %ConversationId(doc), "a library panicked on this peer's data ({why})");
        self.contained_panics += 1;
        self.contain(doc, peer, Reason::Malformed, fx);
    }

    /// `doc`'s copy in memory can no longer be trusted because of `peer`'s
    /// bytes: refuses the peer, drops the copy and every peer's sync state
    /// for it, and asks for it to be read back from the store.
    pub(super) fn contain(&mut self, doc: [u8; 16], peer: DeviceId, reason: Reason, fx: &mut Fx) {
        tracing::warn!(peer = %peer.short(), document = %ConversationId(doc), "the peer is cut and the document read back from the store");
        if self.peers.contains_key(&peer) {
            self.refuse(peer, reason, fx);
        }
        for p in self.peers.values_mut() {
            p.forget(&doc);
        }
        self.kept_sync.forget(&doc);
        if doc != TEAM_DOC_ID {
            if let Some(slot) = self.convs.get_mut(&ConversationId(doc)) {
                slot.drop_doc();
            }
        }
        if self.reloading.insert(doc) {
            fx.reload.push(doc);
        }
    }

    /// The store's copy of a document we dropped ([`Node::contain`]).
    pub(super) fn on_reloaded(
        &mut self,
        doc: [u8; 16],
        stored: Result<StoredDoc, String>,
        fx: &mut Fx,
    ) {
        if !self.reloading.remove(&doc) {
            return;
        }
        let stored = match stored {
            Ok(s) => s,
            Err(e) => {
                self.unreadable(doc, &format!("cannot read it back from the store: {e}"));
                return;
            }
        };
        if doc == TEAM_DOC_ID {
            let Some(m) = &mut self.membership else {
                return;
            };
            match TeamDoc::load(
                m.cert.team,
                &self.actor,
                stored.snapshot.as_deref(),
                &stored.chunks,
            ) {
                Ok((mut team, _)) => {
                    // Revocations once seen are kept forever, and every
                    // certificate in the directory was verified.
                    let old =
                        std::mem::replace(&mut m.team, TeamDoc::new(m.cert.team, &self.actor));
                    team.revoked.extend(old.revoked);
                    for (d, c) in old.directory {
                        team.directory.entry(d).or_insert(c);
                    }
                    m.team = team;
                }
                Err(e) => {
                    self.unreadable(doc, &e.to_string());
                    return;
                }
            }
        } else {
            let id = ConversationId(doc);
            let Some(slot) = self.convs.get_mut(&id) else {
                return;
            };
            match Conversation::load(
                slot.header.clone(),
                &self.actor,
                stored.snapshot.as_deref(),
                &stored.chunks,
                &stored.rejected,
            ) {
                Ok((c, _)) => *slot = super::docs::Slot::loaded(c),
                Err(e) => {
                    self.unreadable(doc, &e.to_string());
                    return;
                }
            }
        }
        tracing::info!(document = %ConversationId(doc), "read back from the store");
        // Start over with every peer that may hold it: whatever the dropped
        // copy had that the store did not, they still have.
        let peers: Vec<DeviceId> = self.peers.keys().copied().collect();
        for peer in peers {
            self.push_doc(&doc, peer, fx);
        }
    }

    /// A document we could not read back stays set aside until the next
    /// start, as one damaged at start would be: a conversation is listed
    /// with the damaged ones; the team document is neither synced nor
    /// written (the membership gate keeps the directory and revocations it
    /// had in memory, which were verified one by one).
    fn unreadable(&mut self, doc: [u8; 16], why: &str) {
        tracing::error!(document = %ConversationId(doc), "the document could not be read back and is set aside until the next start: {why}");
        if doc == TEAM_DOC_ID {
            self.reloading.insert(doc);
        } else {
            self.damaged.insert(ConversationId(doc), why.to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use automerge::sync;
    use rand_core::SeedableRng;

    use super::super::{Command, Event, Input, Node, NodeConfig, Output, Reply};
    use crate::crypto::{AuthorityKey, DeviceKey};
    use crate::header::ConversationKind;
    use crate::ids::{DeviceId, MemberId};
    use crate::membership::{Certificate, CertificateRequest};
    use crate::store::{self, DocLoader, MemoryStore, Store};
    use crate::team::TEAM_DOC_ID;
    use crate::wire::{Frame, PROTOCOL_VERSION};

    const T0: u64 = 1_700_000_000_000;
    const DAY: u64 = 24 * 3600 * 1000;

    struct Ward {
        rng: rand_chacha::ChaCha8Rng,
        authority: AuthorityKey,
    }

    impl Ward {
        fn member(&mut self, name: &str) -> (DeviceKey, Certificate) {
            let key = DeviceKey::generate(&mut self.rng);
            let cert = CertificateRequest {
                team_name: "Ward 7".into(),
                member: MemberId::random(&mut self.rng),
                display_name: name.into(),
                roles: vec![],
                device: key.device_id(),
                issued: T0 - DAY,
                expires: T0 + 365 * DAY,
            }
            .sign(&self.authority)
            .unwrap();
            (key, cert)
        }
    }

    /// Ana's node, with Ben (and then Cai) connected and proven members.
    struct Ana {
        node: Node,
        store: MemoryStore,
    }

    impl Ana {
        fn apply(&mut self, outs: Vec<Output>) -> Vec<Output> {
            for o in &outs {
                if let Output::Persist(ops) = o {
                    self.store.apply(ops).unwrap();
                }
            }
            outs
        }

        fn handle(&mut self, input: Input) -> Vec<Output> {
            let outs = self.node.handle(T0, input);
            self.apply(outs)
        }

        fn meet(&mut self, cert: &Certificate) -> Vec<Output> {
            self.handle(Input::PeerConnected { peer: cert.device });
            let hello = Frame::Hello {
                version: PROTOCOL_VERSION,
                pass: cert.pass(),
            };
            let mut outs = self.handle(Input::Frame {
                peer: cert.device,
                bytes: hello.encode(),
            });
            let identify = Frame::Identify {
                secret: cert.secret(),
            };
            outs.extend(self.handle(Input::Frame {
                peer: cert.device,
                bytes: identify.encode(),
            }));
            outs
        }

        /// Leaves in Ana's sync state for `peer` a Bloom filter that claims
        /// an entry but holds no bits: Automerge 0.12 divides by zero when
        /// it next generates a message from that state.
        fn poison(&mut self, peer: DeviceId, doc: [u8; 16]) {
            let bloom = sync::BloomFilter::try_from(&[1u8, 0, 7][..]).unwrap();
            let p = self.node.peers.get_mut(&peer).unwrap();
            let state = p.sync.entry(doc).or_default();
            state.their_have = Some(vec![sync::Have {
                last_sync: vec![],
                bloom,
            }]);
            state.their_need = Some(vec![]);
            state.their_heads = Some(vec![]);
        }

        fn push(&mut self, doc: [u8; 16], peer: DeviceId) -> Vec<Output> {
            let mut fx = super::Fx::default();
            self.node.push_doc(&doc, peer, &mut fx);
            let outs = fx.into_outputs();
            self.apply(outs)
        }

        /// Carries out the `Reload` among `outs`, as a shell does.
        fn reload(&mut self, outs: &[Output]) -> Vec<Output> {
            let docs: Vec<[u8; 16]> = outs
                .iter()
                .filter_map(|o| match o {
                    Output::Reload { doc } => Some(*doc),
                    _ => None,
                })
                .collect();
            assert_eq!(docs.len(), 1, "one reload asked for: {outs:?}");
            let stored = self.store.load_doc(&docs[0]).map_err(|e| e.to_string());
            self.handle(Input::Reloaded {
                doc: docs[0],
                stored,
            })
        }
    }

    fn ward() -> (Ward, Ana, Certificate, Certificate) {
        let mut w = Ward {
            rng: rand_chacha::ChaCha8Rng::seed_from_u64(7),
            authority: AuthorityKey::generate(&mut rand_chacha::ChaCha8Rng::seed_from_u64(8)),
        };
        let (key, cert) = w.member("Ana");
        let (_, ben) = w.member("Ben");
        let (_, cai) = w.member("Cai");
        let store = MemoryStore::new();
        let node = Node::new(
            key,
            Some(cert),
            store::load(&store).unwrap(),
            NodeConfig::default(),
            &mut w.rng,
        )
        .unwrap();
        let mut ana = Ana { node, store };
        ana.handle(Input::Start);
        ana.meet(&ben);
        (w, ana, ben, cai)
    }

    fn refused(outs: &[Output], peer: DeviceId) -> bool {
        outs.iter()
            .any(|o| matches!(o, Output::Disconnect { peer: p, .. } if *p == peer))
            && outs.iter().any(|o| {
                matches!(o, Output::Emit(Event::PeerRefused { peer: p, by_us: true, .. }) if *p == peer)
            })
    }

    fn sent_to(outs: &[Output], peer: DeviceId) -> Vec<Frame> {
        outs.iter()
            .filter_map(|o| match o {
                Output::Send { peer: p, frame, .. } if *p == peer => Frame::decode(frame).ok(),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_panic_generating_for_one_peer_costs_that_peer_and_a_reload_of_the_team_document() {
        let (_w, mut ana, ben, cai) = ward();
        let heads = ana.node.team_heads();
        ana.poison(ben.device, TEAM_DOC_ID);
        let outs = ana.push(TEAM_DOC_ID, ben.device);
        assert_eq!(ana.node.contained_panics(), 1);
        assert!(refused(&outs, ben.device), "{outs:?}");
        assert!(ana.node.reloading(&TEAM_DOC_ID));
        // Until the store's copy is back, nobody gets the team document.
        ana.meet(&cai);
        assert!(ana.push(TEAM_DOC_ID, cai.device).is_empty());
        let back = ana.reload(&outs);
        assert!(!ana.node.reloading(&TEAM_DOC_ID));
        assert_eq!(ana.node.team_heads(), heads);
        // Everyone else is served on: Cai gets the team document.
        let to_cai = sent_to(&back, cai.device);
        assert!(
            to_cai
                .iter()
                .any(|f| matches!(f, Frame::Sync { doc, .. } if *doc == TEAM_DOC_ID)),
            "{to_cai:?}"
        );
    }

    #[test]
    fn a_panic_on_a_conversation_drops_it_and_reads_it_back_whole() {
        let (_w, mut ana, ben, _) = ward();
        let members = [ana.node.member_id().unwrap(), ben.member];
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let kind = ConversationKind::Direct { members };
        let (r, outs) = ana
            .node
            .command(T0, &mut rng, Command::CreateConversation { kind });
        ana.apply(outs);
        let Ok(Reply::Conversation(id)) = r else {
            panic!("{r:?}")
        };
        let send = Command::Send {
            conversation: id,
            body: "bed 4 needs review".into(),
            priority: crate::message::Priority::Stat,
            reply_to: None,
            fields: Default::default(),
        };
        let (r, outs) = ana.node.command(T0, &mut rng, send);
        ana.apply(outs);
        assert!(r.is_ok());
        let before = ana.node.conversation(&id).unwrap().replica().heads();

        ana.poison(ben.device, id.0);
        let outs = ana.push(id.0, ben.device);
        assert!(refused(&outs, ben.device), "{outs:?}");
        // Dropped from memory: neither read nor written until it is back.
        assert!(ana.node.conversation(&id).is_none());
        assert!(ana
            .reload(&outs)
            .iter()
            .all(|o| !matches!(o, Output::Reload { .. })));
        let c = ana.node.conversation(&id).expect("read back");
        assert_eq!(c.replica().heads(), before);
        assert_eq!(c.len(), 1);
        assert!(ana.node.damaged_conversations().is_empty());
    }
}
