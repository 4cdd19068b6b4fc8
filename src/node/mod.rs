//! The node: huddle's pure state machine.
//!
//! [`Node::handle`] takes the time, a random source and one [`Input`], and
//! returns [`Output`]s as values; [`Node::command`] does the same for user
//! commands and also returns a [`Reply`]. The node owns the documents, the
//! membership checks, and the sync state per peer; it does no I/O, reads no
//! clock and spawns nothing, so the tokio shell and the simulator drive the
//! very same code.
//!
//! Architecture invariants:
//! - Bytes of a document reach a peer only through [`Node::push_doc`], which
//!   asks [`Node::may_share`] first: a non-member never receives a
//!   conversation, and a device without a valid certificate receives nothing
//!   but our hello and a refusal.
//! - Nothing from a peer can panic the node: every frame is decoded with
//!   bounds, and any error becomes a refusal and a disconnect; a panic
//!   inside Automerge on a peer's bytes is contained to that peer and that
//!   document (`contain.rs`).
//! - Effects are ordered `Persist…, Flush, Emit…, Send…, Disconnect…,
//!   SetTimer…`, so "sent" is emitted (and frames leave) only once the change
//!   is durable. The one step that writes without a `Flush` is taking a
//!   peer's conversation changes (`Fx::lazy`): that claims nothing the peer
//!   cannot give again, and every later flush covers it. Anything we
//!   write ourselves (a message, a receipt, a header, the team document, a
//!   revocation) is flushed before anything else leaves the step, so our own
//!   changes never reach a peer before they are durable here.

mod alerts;
mod answer;
mod blobs;
pub(crate) mod clinical;
pub use clinical::Fault as ClinicalFault;
mod commands;
mod contain;
mod docs;
mod fx;
use fx::persist_ops;
mod io;
mod peer;
mod pull;
mod push;
mod receive;
mod sealing;
mod trail;
pub use sealing::MailStats;
pub use trail::TrailReader;
mod upgrade;
mod view;

use std::collections::{BTreeMap, BTreeSet};

use automerge::ActorId;
use thiserror::Error;

pub use alerts::{Alert, AlertKind, OnCallView};
pub use io::{Command, CommandError, Event, Input, Output, Reply, Timer};
pub use view::{
    ConversationSummary, EscalationInfo, LastMessage, PeerInfo, ReminderInfo, RenderedMessage,
    PREVIEW_CHARS, UNREAD_SCAN,
};

use crate::conversation::Conversation;
use crate::crypto::DeviceKey;
use crate::hlc::HlcClock;
use crate::ids::{ConversationId, DeviceId, MemberId, Millis, TeamId};
use crate::membership::{Certificate, Revocation};
use crate::store::{Loader, Stored, StoredDoc};
use crate::team::{TeamDoc, TEAM_DOC_ID};
use crate::wire::Reason;
pub(crate) use answer::Lacking;
pub(crate) use fx::Fx;
use peer::Peer;
pub(crate) use push::Send;

/// Tunables; the defaults suit a ward LAN.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// A peer must prove membership this soon after connecting.
    pub hello_timeout_ms: Millis,
    /// Delivered receipts are batched for this long.
    pub receipt_delay_ms: Millis,
    pub maintenance_interval_ms: Millis,
    /// Heads changed by relayed changes are announced to peers after this
    /// long, so a burst of changes costs one announcement per peer.
    pub announce_delay_ms: Millis,
    /// A sync message that leaves us lacking changes its sender has is
    /// answered (with what we need) only if we still lack them this long
    /// after: on a busy mesh they are usually on their way from their
    /// authors, over other links.
    pub answer_delay_ms: Millis,
    /// A pull (an exchange opened because a peer's heads differ) that has
    /// not finished after this long stops holding back pulls of the same
    /// document from other peers.
    pub pull_timeout_ms: Millis,
    /// A node publishes its certificate in the team document once it has
    /// synced the team document with a peer, or this long after starting.
    pub publish_delay_ms: Millis,
    /// Bound on a peer's partly received sync messages, all documents together.
    pub max_reassembly_bytes: usize,
    /// Documents are append-only by schema (protocol/sync.md §7.5): a
    /// peer's change that breaks the rules is refused. Only the simulator
    /// turns this off, to show that its append-only checker catches what
    /// the rules stop; a node that does is not huddle protocol 4.
    #[doc(hidden)]
    pub append_only: bool,
    /// A deliberately broken clinical rule, only for the simulator's
    /// checkers to show they catch it.
    #[doc(hidden)]
    pub clinical_fault: clinical::Fault,
    /// The team authority's proof that this device holds the team key: it
    /// then asks members for their audit trails (`trail.rs`).
    pub trail_admin: Option<crate::trail::AdminProof>,
    /// How much the mailbox of sealed envelopes holds (sealed.md §4.1).
    pub mailbox: crate::sealed::mailbox::Limits,
    /// How long a member device may be away before what it is owed is
    /// sealed for carriers (sealed.md §3): a short absence costs no
    /// envelope, sync brings the changes when it is back.
    pub seal_grace_ms: Millis,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            hello_timeout_ms: 10_000,
            receipt_delay_ms: 500,
            maintenance_interval_ms: 30_000,
            announce_delay_ms: 20,
            answer_delay_ms: 50,
            pull_timeout_ms: 2_000,
            publish_delay_ms: 5_000,
            max_reassembly_bytes: 64 * 1024 * 1024,
            append_only: true,
            clinical_fault: clinical::Fault::None,
            trail_admin: None,
            mailbox: crate::sealed::mailbox::Limits::default(),
            seal_grace_ms: 60_000,
        }
    }
}

#[derive(Debug, Error)]
pub enum LoadError {
    #[error("the stored team document is damaged: {0}")]
    Team(String),
}

/// What this node is, as far as membership goes.
#[derive(Clone)]
pub(crate) struct Membership {
    pub cert: Certificate,
    pub team: TeamDoc,
}

/// `Clone` makes a second node with the same key and Automerge actor, for
/// tests and fuzzing that start many runs from one prepared state: the
/// original must not write again once a copy has (both would number their
/// changes from the same actor sequence).
#[derive(Clone)]
pub struct Node {
    key: DeviceKey,
    device: DeviceId,
    actor: ActorId,
    clock: HlcClock,
    config: NodeConfig,
    membership: Option<Membership>,
    convs: BTreeMap<ConversationId, docs::Slot>,
    /// Reads conversations left unloaded at start (docs.rs).
    loader: Option<Loader>,
    /// Conversations whose index entry is to be written at start.
    unindexed: BTreeSet<ConversationId>,
    /// Stored conversations set aside at start, and why
    /// ([`Node::damaged_conversations`]).
    damaged: BTreeMap<ConversationId, String>,
    peers: BTreeMap<DeviceId, Peer>,
    /// What we last knew we shared with devices that left (peer.rs), so a
    /// reconnection's sync starts from there.
    kept_sync: peer::KeptSync,
    /// Conversations with remote messages not yet covered by our delivered receipt.
    pending_receipts: BTreeSet<ConversationId>,
    receipts_timer_set: bool,
    /// Documents whose heads changed by changes from a peer, to announce.
    announce: BTreeSet<[u8; 16]>,
    announce_timer_set: bool,
    /// (document, peer) whose last sync message left us lacking some of
    /// its heads: answered when `Timer::Answer` fires, if still lacking.
    lacking: BTreeMap<([u8; 16], DeviceId), Lacking>,
    answer_timer_set: bool,
    pulls: pull::Pulls,
    /// Our certificate waits to be published in the team document.
    pub(super) publish_pending: bool,
    /// Documents dropped after a library panicked on them, until the store's
    /// copy is back (`contain.rs`): neither synced nor written meanwhile.
    reloading: BTreeSet<[u8; 16]>,
    /// Panics contained since start.
    contained_panics: u64,
    /// Documents the upgrade pass changed, written at start (upgrade.rs).
    audited: Vec<upgrade::Audited>,
    team_audit_pending: bool,
    /// A version-1 team document found at start, carried into version 2
    /// when the node starts (upgrade.rs).
    team_v1: Option<StoredDoc>,
    /// Open urgent messages and reminders (`clinical.rs`).
    clinical: clinical::Clinical,
    /// The audit trails held (`trail.rs`).
    trails: trail::Trails,
    /// The mailbox of sealed envelopes (`sealing.rs`).
    mail: sealing::Mail,
    /// Conversations with a pressing change lately (`push.rs`).
    ranks: push::DocRanks,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("device", &self.device)
            .field("conversations", &self.convs.len())
            .field("peers", &self.peers.len())
            .finish()
    }
}

impl Node {
    /// Builds a node from its keys, its certificate (if it has joined a team)
    /// and what its store holds. `rng` picks this session's Automerge actor.
    pub fn new(
        key: DeviceKey,
        cert: Option<Certificate>,
        stored: Stored,
        config: NodeConfig,
        rng: &mut dyn rand_core::RngCore,
    ) -> Result<Node, LoadError> {
        let mut actor = [0u8; 16];
        rng.fill_bytes(&mut actor);
        let actor = ActorId::from(actor.as_slice());
        let device = key.device_id();
        let mail = sealing::Mail::new(&key, &config, &stored, rng);
        let mut node = Node {
            key,
            device,
            actor,
            clock: HlcClock::default(),
            config: config.clone(),
            membership: None,
            convs: BTreeMap::new(),
            loader: stored.loader.clone(),
            unindexed: BTreeSet::new(),
            damaged: BTreeMap::new(),
            peers: BTreeMap::new(),
            kept_sync: peer::KeptSync::default(),
            pending_receipts: BTreeSet::new(),
            receipts_timer_set: false,
            announce: BTreeSet::new(),
            announce_timer_set: false,
            lacking: BTreeMap::new(),
            answer_timer_set: false,
            pulls: pull::Pulls::default(),
            publish_pending: false,
            reloading: BTreeSet::new(),
            contained_panics: 0,
            audited: Vec::new(),
            team_audit_pending: false,
            team_v1: None,
            clinical: clinical::Clinical::from_store(&stored.held),
            trails: trail::Trails::new(&stored, &config, cert.as_ref(), &device),
            mail,
            ranks: push::DocRanks::default(),
        };
        let Some(cert) = cert else {
            return Ok(node);
        };
        let mut docs = stored.docs;
        let team_stored = docs.remove(&TEAM_DOC_ID).unwrap_or_default();
        node.team_v1 = docs
            .remove(&crate::team::TEAM_DOC_V1_ID)
            .filter(|d| d.snapshot.is_some() || !d.chunks.is_empty());
        let (team, _) = TeamDoc::load(
            cert.team,
            &node.actor,
            team_stored.snapshot.as_deref(),
            &team_stored.chunks,
        )
        .map_err(|e| LoadError::Team(e.to_string()))?;
        let mut team = node
            .audit_team(cert.team, team, &team_stored)
            .map_err(|e| LoadError::Team(e.to_string()))?;
        for bytes in &stored.revocations {
            if let Ok(r) = Revocation::decode(bytes) {
                if r.verify(&cert.team) {
                    team.revoked.insert_signed(&r);
                }
            }
        }
        team.directory.insert(cert.device, cert.clone());
        for (id, doc) in docs {
            let conv_id = ConversationId(id);
            if let Err(why) = node.open_stored(conv_id, doc) {
                // One damaged conversation must not keep the device from
                // starting: it is set aside, its records left untouched.
                tracing::error!(conversation = %conv_id, "the stored conversation is damaged and set aside (its records are kept): {why}");
                node.damaged.insert(conv_id, why);
            }
        }
        node.membership = Some(Membership { cert, team });
        Ok(node)
    }

    /// Stored conversations that could not be read at start, and why. They
    /// are not synced (a peer offering one is ignored, so nothing overwrites
    /// their records) until the store is repaired.
    pub fn damaged_conversations(&self) -> &BTreeMap<ConversationId, String> {
        &self.damaged
    }

    /// Bytes of sync messages partly received, all peers together (each
    /// peer's are bounded by `NodeConfig::max_reassembly_bytes`, and go
    /// with its session).
    pub fn reassembly_bytes(&self) -> usize {
        self.peers.values().map(peer::Peer::parts_bytes).sum()
    }

    /// How many panics inside a library, caused by a peer's bytes, this
    /// node has contained since it started (`contain.rs`).
    pub fn contained_panics(&self) -> u64 {
        self.contained_panics
    }

    pub fn device_id(&self) -> DeviceId {
        self.device
    }

    pub fn certificate(&self) -> Option<&Certificate> {
        self.membership.as_ref().map(|m| &m.cert)
    }

    pub fn member_id(&self) -> Option<MemberId> {
        self.certificate().map(|c| c.member)
    }

    pub fn team_id(&self) -> Option<TeamId> {
        self.certificate().map(|c| c.team)
    }

    /// Every verified certificate this node knows, by device.
    pub fn directory(&self) -> impl Iterator<Item = &Certificate> {
        self.membership
            .iter()
            .flat_map(|m| m.team.directory.values())
    }

    pub fn is_revoked(&self, device: &DeviceId, member: &MemberId) -> bool {
        self.membership
            .as_ref()
            .is_some_and(|m| m.team.revoked.is_revoked(device, member))
    }

    pub fn conversation_ids(&self) -> impl Iterator<Item = &ConversationId> {
        self.convs.keys()
    }

    /// The heads digest of the team document (for convergence checks).
    pub fn team_heads(&self) -> Option<[u8; 16]> {
        self.membership
            .as_ref()
            .map(|m| m.team.replica().heads_digest())
    }

    /// Handles one input.
    pub fn handle(&mut self, now: Millis, input: Input) -> Vec<Output> {
        let mut fx = Fx::default();
        self.clinical_clock(now);
        match input {
            Input::Start => self.on_start(now, &mut fx),
            Input::PeerConnected { peer } => self.on_connected(now, peer, &mut fx),
            Input::PeerDisconnected { peer } => {
                if let Some(p) = self.peers.remove(&peer) {
                    self.mail_left(now, peer, &p, &mut fx);
                    self.kept_sync.keep(peer, p);
                    fx.emit.push(Event::PeerLeft { peer });
                }
                self.peer_gone(now, peer, &mut fx);
            }
            Input::Frame { peer, bytes } => self.on_frame(now, peer, &bytes, &mut fx),
            Input::Timer(t) => self.on_timer(now, t, &mut fx),
            Input::Reloaded { doc, stored } => self.on_reloaded(doc, stored, &mut fx),
        }
        self.clinical_timer(&mut fx);
        fx.into_outputs()
    }

    fn on_start(&mut self, now: Millis, fx: &mut Fx) {
        fx.timers.push((
            Timer::Maintenance,
            now + self.config.maintenance_interval_ms,
        ));
        self.write_audits(now, fx);
        self.upgrade_team_v1(now, fx);
        for id in std::mem::take(&mut self.unindexed) {
            self.persist_index(&id, fx);
        }
        self.clinical_start(now, fx);
        self.mail_start(now, fx);
        let Some(m) = &mut self.membership else {
            return;
        };
        // Our certificate goes into the team directory once we have the
        // team document from a peer (or after a delay): written on top of
        // everyone else's certificates, it joins the document's heads into
        // one, where written at once it would be one more concurrent head
        // (and every team sync message carries every head).
        let cert = m.cert.clone();
        m.team.directory.entry(cert.device).or_insert(cert);
        self.publish_pending = true;
        fx.timers
            .push((Timer::Publish, now + self.config.publish_delay_ms));
    }

    /// Publishes our certificate in the team directory if it is not there yet.
    fn publish_certificate(&mut self, now: Millis, fx: &mut Fx) {
        if self.reloading(&TEAM_DOC_ID) || !std::mem::take(&mut self.publish_pending) {
            return;
        }
        let Some(m) = &mut self.membership else {
            return;
        };
        let cert = m.cert.clone();
        let before = m.team.replica().heads();
        match m.team.add_certificate(now, &cert) {
            Ok(true) => {
                self.persist_team(fx);
                self.push_local(now, &TEAM_DOC_ID, &before, None, fx);
            }
            Ok(false) => {}
            Err(e) => tracing::warn!("could not publish our certificate: {e}"),
        }
    }

    fn on_timer(&mut self, now: Millis, t: Timer, fx: &mut Fx) {
        match t {
            Timer::Hello(peer) => {
                if self.peers.get(&peer).is_some_and(|p| p.member().is_none()) {
                    self.refuse(peer, Reason::HelloTimeout, fx);
                }
            }
            Timer::Receipts => {
                self.receipts_timer_set = false;
                self.write_delivered_receipts(now, fx);
            }
            Timer::Pull(doc) => self.pull_timer(now, doc, fx),
            Timer::Publish => self.publish_certificate(now, fx),
            Timer::Clinical => self.clinical_tick(now, fx),
            Timer::Seal => self.on_mail_timer(now, fx),
            Timer::Announce => {
                self.announce_timer_set = false;
                self.announce_heads(fx);
            }
            Timer::Answer => {
                self.answer_timer_set = false;
                self.answer_lacking(now, fx);
            }
            Timer::Maintenance => {
                self.enforce_membership(now, fx);
                self.trail_ask_all(fx);
                self.mail_expire(now, fx);
                fx.timers.push((
                    Timer::Maintenance,
                    now + self.config.maintenance_interval_ms,
                ));
            }
        }
    }

    /// Refuses `peer`: tells it why, forgets it, and asks the shell to disconnect.
    fn refuse(&mut self, peer: DeviceId, reason: Reason, fx: &mut Fx) {
        self.refuse_with(peer, reason, None, fx);
    }

    /// [`Self::refuse`], first showing a revoked peer its `revocation`.
    fn refuse_with(
        &mut self,
        peer: DeviceId,
        reason: Reason,
        revocation: Option<crate::membership::Revocation>,
        fx: &mut Fx,
    ) {
        tracing::info!(peer = %peer.short(), %reason, "refusing peer");
        if let Some(revocation) = revocation {
            fx.send.push((
                peer,
                crate::wire::Frame::Revoked { revocation }.encode(),
                crate::sendq::Prio::SESSION,
            ));
        }
        fx.send.push((
            peer,
            crate::wire::Frame::Refuse { reason }.encode(),
            crate::sendq::Prio::SESSION,
        ));
        fx.disconnect.push((peer, reason));
        fx.emit.push(Event::PeerRefused {
            peer,
            reason,
            by_us: true,
        });
        self.peers.remove(&peer);
    }

    /// Drops every connected peer whose certificate is no longer valid.
    fn enforce_membership(&mut self, now: Millis, fx: &mut Fx) {
        let Some(m) = &self.membership else { return };
        let doomed: Vec<(DeviceId, Reason)> = self
            .peers
            .iter()
            .filter_map(|(d, p)| {
                // The signature was verified when the peer said hello.
                let cert = p.member()?;
                cert.check_standing(now, &m.team.revoked)
                    .err()
                    .map(|e| (*d, peer::reason_for(&e)))
            })
            .collect();
        for (d, reason) in doomed {
            self.refuse(d, reason, fx);
        }
    }

    /// May `doc` be exchanged with `peer`? The single gate for document bytes.
    fn may_share(&self, doc: &[u8; 16], peer: &DeviceId) -> bool {
        let Some(cert) = self.peers.get(peer).and_then(Peer::member) else {
            return false;
        };
        if *doc == TEAM_DOC_ID {
            return !self.reloading(doc);
        }
        self.header_of(&ConversationId(*doc))
            .is_some_and(|h| h.admits(cert))
    }

    fn persist_team(&mut self, fx: &mut Fx) {
        if self.reloading(&TEAM_DOC_ID) {
            return;
        }
        if let Some(m) = &mut self.membership {
            if let Some(p) = m.team.take_persist() {
                persist_ops(&TEAM_DOC_ID, p, &mut fx.persist);
            }
        }
    }

    /// Writes what is new in a conversation, and its index entry with it.
    fn persist_conv(&mut self, id: &ConversationId, fx: &mut Fx) {
        if let Some(p) = self
            .conversation_mut(id)
            .and_then(Conversation::take_persist)
        {
            persist_ops(&id.0, p, &mut fx.persist);
            self.persist_index(id, fx);
        }
    }
}
