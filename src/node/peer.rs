//! Per-peer sessions: the membership gate (hello, then identify), the
//! catalog exchange, headers, and the framing of Automerge sync messages.
//!
//! Invariant: until a peer's hello has proved a valid pass of our team for
//! the key Noise authenticated, the only frames it can cause us to send are
//! our hello (a pass: no name, member, roles or team) and a refusal; until
//! its identify has completed a valid certificate, only those and our
//! identify (sync.md §2).

use std::collections::{BTreeMap, HashMap, HashSet};

use automerge::{sync, ChangeHash};

use super::{Event, Fx, Node, Timer};
use crate::ids::{ConversationId, DeviceId, Millis};
use crate::membership::{CertError, Certificate, Pass, Revocation, RevocationTarget, Secret};
use crate::sendq::{Prio, Rank};
use crate::team::TEAM_DOC_ID;
use crate::wire::{CatalogEntry, Frame, Reason, MAX_CATALOG_ENTRIES, PROTOCOL_VERSION};

/// Most catalog entries we accept from one peer in one catalog.
const MAX_CATALOG_TOTAL: usize = 1_000_000;

/// Devices whose shared heads we keep after they leave (the most recent).
const MAX_KEPT_PEERS: usize = 256;

type SharedHeads = BTreeMap<[u8; 16], Vec<ChangeHash>>;

/// The heads we last knew we shared with devices that have left, per
/// document (finding E in BENCHMARKS.md). A reconnection's first sync
/// message then carries a Bloom filter of the changes since those heads,
/// not of the whole history: ~1.3 KB instead of ~126 KB for a 100k-message
/// conversation that moved by 1k. Only `shared_heads` is kept, as
/// Automerge's own `State::encode` does; if the peer has lost some of them
/// (a crash), it answers with Automerge's sync reset and the exchange
/// starts from nothing, as it would have anyway. In memory only: a restart
/// forgets it, which costs bytes, never correctness.
///
/// Only heads the peer itself stated count (Automerge moves `shared_heads`
/// on what the peer's messages say, never on what we sent): the heads a
/// push is assumed to give the peer (`their_heads` after `push_local`) may
/// have been lost with the connection, and a kept head the peer lacks
/// costs a sync reset, which sends the whole document.

#[derive(Clone, Default)]
pub(crate) struct KeptSync {
    /// Per device: when it was kept, and the shared heads per document.
    by_peer: BTreeMap<DeviceId, (u64, SharedHeads)>,
    /// Bumped at every `keep`: the oldest entry goes first.
    stamp: u64,
}

impl KeptSync {
    /// Keeps what a verified member that just left shared with us.
    pub fn keep(&mut self, device: DeviceId, peer: Peer) {
        if peer.member().is_none() {
            return;
        }
        let heads: SharedHeads = peer
            .sync
            .into_iter()
            .filter(|(_, s)| !s.shared_heads.is_empty())
            .map(|(doc, s)| (doc, s.shared_heads))
            .collect();
        if heads.is_empty() {
            return;
        }
        self.stamp += 1;
        self.by_peer.insert(device, (self.stamp, heads));
        if self.by_peer.len() > MAX_KEPT_PEERS {
            let oldest = self
                .by_peer
                .iter()
                .min_by_key(|(_, (stamp, _))| *stamp)
                .map(|(d, _)| *d);
            if let Some(d) = oldest {
                self.by_peer.remove(&d);
            }
        }
    }

    /// Forgets the heads kept for `doc`.
    pub fn forget(&mut self, doc: &[u8; 16]) {
        for (_, heads) in self.by_peer.values_mut() {
            heads.remove(doc);
        }
    }

    /// The sync states to start a new connection with `device` from.
    pub fn take(&mut self, device: &DeviceId) -> HashMap<[u8; 16], sync::State> {
        let Some((_, heads)) = self.by_peer.remove(device) else {
            return HashMap::new();
        };
        heads
            .into_iter()
            .map(|(doc, shared)| {
                let mut s = sync::State::new();
                s.shared_heads = shared;
                (doc, s)
            })
            .collect()
    }
}

/// A peer's partly received sync messages would pass their bound.
#[derive(Debug)]
pub(crate) struct Overflow;

#[derive(Clone)]
pub(crate) enum PeerState {
    AwaitingHello,
    /// Its pass verified and we sent our identify; its own is due.
    AwaitingIdentify(Box<Pass>),
    Member(Box<Certificate>),
}

#[derive(Clone)]
pub(crate) struct Peer {
    pub state: PeerState,
    pub sync: HashMap<[u8; 16], sync::State>,
    /// Partly received sync messages, per document.
    parts: HashMap<[u8; 16], Vec<u8>>,
    parts_bytes: usize,
    /// The peer's catalog as it arrives (it may span frames).
    catalog: BTreeMap<[u8; 16], [u8; 16]>,
    /// Conversations we hold that the peer is known to hold too (its
    /// catalog named them, or a header went either way): anything else
    /// gets its header before its first sync message, so relayed
    /// conversations reach peers that have never seen them. Never more
    /// than the conversations we hold, whatever the peer sends.
    pub known: HashSet<[u8; 16]>,
    /// Stalled exchanges in a row, per document (answer.rs): only
    /// documents we hold with this peer, so bounded like `sync`.
    stalls: HashMap<[u8; 16], u8>,
}

impl Peer {
    fn new() -> Peer {
        Peer {
            state: PeerState::AwaitingHello,
            sync: HashMap::new(),
            parts: HashMap::new(),
            parts_bytes: 0,
            catalog: BTreeMap::new(),
            known: HashSet::new(),
            stalls: HashMap::new(),
        }
    }

    /// Counts a stalled exchange on `doc` (or clears the count when the
    /// exchange moved); returns the stalls in a row.
    pub fn note_stall(&mut self, doc: &[u8; 16], stalled: bool) -> u8 {
        if !stalled {
            self.stalls.remove(doc);
            return 0;
        }
        let n = self.stalls.entry(*doc).or_default();
        *n = n.saturating_add(1);
        *n
    }

    /// Forgets everything of `doc` this session holds: its sync state and
    /// any part of a sync message.
    pub fn forget(&mut self, doc: &[u8; 16]) {
        self.sync.remove(doc);
        self.stalls.remove(doc);
        if let Some(part) = self.parts.remove(doc) {
            self.parts_bytes -= part.len();
        }
    }

    pub fn parts_bytes(&self) -> usize {
        self.parts_bytes
    }

    /// Adds one `Sync` frame's data for `doc`: the whole message once the
    /// last frame is in (`more` false), `None` while more is to come, or
    /// `Overflow` past `limit` bytes waiting, all documents together.
    pub fn reassemble(
        &mut self,
        doc: [u8; 16],
        more: bool,
        data: &[u8],
        limit: usize,
    ) -> Result<Option<Vec<u8>>, Overflow> {
        self.parts_bytes += data.len();
        if self.parts_bytes > limit {
            return Err(Overflow);
        }
        self.parts.entry(doc).or_default().extend_from_slice(data);
        if more {
            return Ok(None);
        }
        let msg = self.parts.remove(&doc).unwrap_or_default();
        self.parts_bytes -= msg.len();
        Ok(Some(msg))
    }

    pub fn member(&self) -> Option<&Certificate> {
        match &self.state {
            PeerState::Member(c) => Some(c),
            PeerState::AwaitingHello | PeerState::AwaitingIdentify(_) => None,
        }
    }
}

pub(crate) fn reason_for(e: &CertError) -> Reason {
    match e {
        CertError::WrongTeam => Reason::WrongTeam,
        CertError::BadSignature => Reason::BadSignature,
        CertError::NotYetValid => Reason::NotYetValid,
        CertError::Expired => Reason::Expired,
        CertError::RevokedDevice | CertError::RevokedMember => Reason::Revoked,
        CertError::WrongDevice => Reason::WrongDevice,
    }
}

/// The revocation to show a peer refused for `e`: only when its pass
/// verified under our team key (so its device is the Noise-authenticated
/// peer) and what refused it is that revocation; never to a stranger.
fn shown_revocation(
    e: &CertError,
    pass: &Pass,
    revoked: &crate::membership::Revocations,
) -> Option<Revocation> {
    match e {
        CertError::RevokedDevice | CertError::RevokedMember => pass.revocation(revoked).cloned(),
        _ => None,
    }
}

impl Node {
    pub(super) fn on_connected(&mut self, now: Millis, peer: DeviceId, fx: &mut Fx) {
        if peer == self.device {
            fx.disconnect.push((peer, Reason::ProtocolViolation));
            return;
        }
        let Some(m) = &self.membership else {
            // We cannot prove anything, so we say nothing but why.
            fx.send.push((
                peer,
                Frame::Refuse {
                    reason: Reason::NotAMember,
                }
                .encode(),
                Prio::SESSION,
            ));
            fx.disconnect.push((peer, Reason::NotAMember));
            return;
        };
        // Only the pass: who we are goes to proven members (on_hello).
        let hello = Frame::Hello {
            version: PROTOCOL_VERSION,
            pass: m.cert.pass(),
        };
        let mut p = Peer::new();
        p.sync = self.kept_sync.take(&peer);
        self.peers.insert(peer, p);
        fx.send.push((peer, hello.encode(), Prio::SESSION));
        fx.timers
            .push((Timer::Hello(peer), now + self.config.hello_timeout_ms));
    }

    pub(super) fn on_frame(&mut self, now: Millis, peer: DeviceId, bytes: &[u8], fx: &mut Fx) {
        let Some(p) = self.peers.get(&peer) else {
            // Not connected (or already refused): ignore whatever is in flight.
            return;
        };
        let frame = match Frame::decode(bytes) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(peer = %peer.short(), error = %e, "frame does not decode");
                let reason = match e {
                    crate::codec::DecodeError::Unknown("protocol version", _) => {
                        Reason::UnsupportedVersion
                    }
                    crate::codec::DecodeError::TooLong("frame", _) => Reason::LimitExceeded,
                    _ => Reason::Malformed,
                };
                self.refuse(peer, reason, fx);
                return;
            }
        };
        let is_member = p.member().is_some();
        let awaiting_hello = matches!(p.state, PeerState::AwaitingHello);
        match frame {
            Frame::Refuse { reason } => {
                tracing::info!(peer = %peer.short(), %reason, "peer refused us");
                self.peers.remove(&peer);
                fx.disconnect.push((peer, reason));
                fx.emit.push(Event::PeerRefused {
                    peer,
                    reason,
                    by_us: false,
                });
            }
            Frame::Revoked { revocation } => self.on_revoked(now, peer, revocation, fx),
            Frame::Hello { pass, .. } if awaiting_hello => self.on_hello(now, peer, pass, fx),
            // Identify before we accepted the hello, or twice: a correct
            // peer sends it only after ours, which follows its accepted hello.
            Frame::Identify { secret } if !awaiting_hello && !is_member => {
                self.on_identify(now, peer, secret, fx)
            }
            _ if !is_member => self.refuse(peer, Reason::ProtocolViolation, fx),
            Frame::Hello { .. } | Frame::Identify { .. } => {
                self.refuse(peer, Reason::ProtocolViolation, fx)
            }
            Frame::Catalog { entries, last } => self.on_catalog(now, peer, entries, last, fx),
            Frame::Header { header } => self.on_header(now, peer, header, fx),
            Frame::Sync { doc, more, data } => self.on_sync(now, peer, doc, more, data, fx),
            Frame::Heads { entries } => self.on_heads(now, peer, entries, fx),
            Frame::TrailAsk { proof, have } => self.on_trail_ask(now, peer, proof, have, fx),
            Frame::Sealed { envelopes } => self.on_sealed(now, peer, envelopes, fx),
            Frame::MailIds { ids } => self.on_mail_ids(now, peer, ids, fx),
            Frame::MailWant { ids } => self.mail_send(peer, &ids, fx),
            Frame::MailDone { done } => self.on_mail_done(now, peer, done, fx),
            Frame::Trail {
                len,
                head,
                answer,
                more,
                entries,
            } => {
                let shown = super::trail::Shown {
                    len,
                    head,
                    answer,
                    more,
                };
                self.on_trail(now, peer, shown, entries, fx)
            }
        }
    }

    /// A peer's pass: if it is of our team, valid now and not revoked, we
    /// tell it who we are and wait for it to do the same.
    fn on_hello(&mut self, now: Millis, peer: DeviceId, pass: Pass, fx: &mut Fx) {
        let Some(m) = &self.membership else { return };
        let verdict = if pass.device != peer {
            Err(CertError::WrongDevice)
        } else {
            pass.check(&m.cert.team, now, &m.team.revoked)
        };
        if let Err(e) = verdict {
            let shown = shown_revocation(&e, &pass, &m.team.revoked);
            self.refuse_with(peer, reason_for(&e), shown, fx);
            return;
        }
        let identify = Frame::Identify {
            secret: m.cert.secret(),
        };
        if let Some(p) = self.peers.get_mut(&peer) {
            p.state = PeerState::AwaitingIdentify(Box::new(pass));
        }
        fx.send.push((peer, identify.encode(), Prio::SESSION));
    }

    /// A peer about to refuse us shows the revocation of this device or its
    /// member. One that verifies and names us is learnt (kept in the store,
    /// reported, enforced), but never written into the team document: a
    /// revoked device authors nothing the team would then hold apart from
    /// it. Anything else is a protocol violation.
    fn on_revoked(&mut self, now: Millis, peer: DeviceId, rev: Revocation, fx: &mut Fx) {
        let ours = self.membership.as_ref().is_some_and(|m| {
            rev.verify(&m.cert.team)
                && match rev.target {
                    RevocationTarget::Device(d) => d == self.device,
                    RevocationTarget::Member(member) => member == m.cert.member,
                }
        });
        if !ours {
            self.refuse(peer, Reason::ProtocolViolation, fx);
            return;
        }
        tracing::warn!(peer = %peer.short(), "a peer showed this device's revocation");
        self.learn_own_revocation(now, &rev, fx);
    }

    /// The rest of a peer's certificate, after its pass was accepted: the
    /// whole certificate is checked again, and the peer becomes a member.
    fn on_identify(&mut self, now: Millis, peer: DeviceId, secret: Secret, fx: &mut Fx) {
        let Some(m) = &self.membership else { return };
        let Some(PeerState::AwaitingIdentify(pass)) = self.peers.get(&peer).map(|p| &p.state)
        else {
            return;
        };
        let team = m.cert.team;
        let verdict = pass
            .join(&team, secret)
            .and_then(|cert| cert.check(&team, now, &m.team.revoked).map(|()| cert));
        let cert = match verdict {
            Ok(cert) => cert,
            Err(e) => {
                let shown = shown_revocation(&e, pass, &m.team.revoked);
                self.refuse_with(peer, reason_for(&e), shown, fx);
                return;
            }
        };
        tracing::info!(peer = %peer.short(), name = %cert.display_name, "peer proved membership");
        fx.emit.push(Event::PeerJoined {
            peer,
            member: cert.member,
            name: cert.display_name.clone(),
        });
        if let Some(m) = &mut self.membership {
            m.team
                .directory
                .entry(cert.device)
                .or_insert_with(|| cert.clone());
        }
        if let Some(p) = self.peers.get_mut(&peer) {
            p.state = PeerState::Member(Box::new(cert));
        }
        self.send_catalog(peer, fx);
        self.trail_ask(peer, fx);
        self.mail_hello(peer, fx);
    }

    /// Our catalog for `peer`: the team document and every conversation it may have.
    fn send_catalog(&mut self, peer: DeviceId, fx: &mut Fx) {
        let mut entries = Vec::new();
        if let Some(m) = &self.membership {
            entries.push(CatalogEntry {
                doc: TEAM_DOC_ID,
                heads: m.team.replica().heads_digest(),
            });
        }
        for id in self.convs.keys() {
            if self.may_share(&id.0, &peer) {
                if let Some(heads) = self.conversation_digest(id) {
                    entries.push(CatalogEntry { doc: id.0, heads });
                }
            }
        }
        let n = entries.len().div_ceil(MAX_CATALOG_ENTRIES).max(1);
        let mut chunks = entries.chunks(MAX_CATALOG_ENTRIES);
        for i in 0..n {
            let frame = Frame::Catalog {
                entries: chunks
                    .next()
                    .map(<[CatalogEntry]>::to_vec)
                    .unwrap_or_default(),
                last: i + 1 == n,
            };
            fx.send.push((peer, frame.encode(), Prio::SESSION));
        }
    }

    fn on_catalog(
        &mut self,
        now: Millis,
        peer: DeviceId,
        entries: Vec<CatalogEntry>,
        last: bool,
        fx: &mut Fx,
    ) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        for e in entries {
            p.catalog.insert(e.doc, e.heads);
        }
        if p.catalog.len() > MAX_CATALOG_TOTAL {
            self.refuse(peer, Reason::LimitExceeded, fx);
            return;
        }
        if !last {
            return;
        }
        let theirs = std::mem::take(&mut p.catalog);
        // Only ids we hold are worth keeping (`introduce` asks about no
        // other), and a peer may send any number of catalogs.
        let convs = &self.convs;
        p.known.extend(
            theirs
                .keys()
                .filter(|d| convs.contains_key(&ConversationId(**d)))
                .copied(),
        );
        let mut docs: Vec<([u8; 16], [u8; 16])> = Vec::new();
        if let Some(m) = &self.membership {
            docs.push((TEAM_DOC_ID, m.team.replica().heads_digest()));
        }
        docs.extend(
            self.convs
                .keys()
                .filter_map(|id| Some((id.0, self.conversation_digest(id)?))),
        );
        for (doc, ours) in docs {
            if !self.may_share(&doc, &peer) {
                continue;
            }
            match theirs.get(&doc) {
                Some(h) if *h == ours => {
                    self.mark_level(peer, &doc);
                    if doc == TEAM_DOC_ID {
                        self.publish_certificate(now, fx);
                    }
                }
                Some(h) => self.start_exchange(now, doc, peer, *h, fx),
                // They lack it: push_doc sends the header first.
                None => self.push_doc(&doc, peer, fx),
            }
        }
    }

    /// Our replica of `doc` (the team document or a conversation).
    pub(super) fn replica_of(&self, doc: &[u8; 16]) -> Option<&crate::replica::Replica> {
        if self.reloading(doc) {
            None
        } else if *doc == TEAM_DOC_ID {
            self.membership.as_ref().map(|m| m.team.replica())
        } else {
            self.conversation(&ConversationId(*doc))
                .map(|c| c.replica())
        }
    }

    /// Sends `peer` the header of conversation `doc` unless it is known to
    /// hold it: every `Sync` or `Heads` frame for a conversation follows it.
    pub(super) fn introduce(&mut self, peer: DeviceId, doc: &[u8; 16], fx: &mut Fx) {
        let unknown = *doc != TEAM_DOC_ID
            && self
                .peers
                .get_mut(&peer)
                .is_some_and(|p| p.known.insert(*doc));
        if let (true, Some(h)) = (unknown, self.header_of(&ConversationId(*doc))) {
            let header = Frame::Header { header: h.clone() };
            // Routine: before a `Heads` announcement that names the
            // conversation (routine, queued after it), which a receiver
            // without the header drops; a more urgent sync message after
            // it in its lane takes it along.
            fx.send
                .push((peer, header.encode(), Prio::doc(*doc, Rank::Routine)));
        }
    }

    fn on_header(
        &mut self,
        now: Millis,
        peer: DeviceId,
        header: crate::header::ConversationHeader,
        fx: &mut Fx,
    ) {
        let Some(m) = &self.membership else { return };
        if self.convs.contains_key(&header.id) {
            if let Some(p) = self.peers.get_mut(&peer) {
                p.known.insert(header.id.0);
            }
            return;
        }
        if self.damaged.contains_key(&header.id) {
            // Taking it again would write over the records we set aside.
            tracing::warn!(conversation = %header.id, "not taking a conversation whose stored copy is damaged");
            return;
        }
        let peer_admitted = self
            .peers
            .get(&peer)
            .and_then(Peer::member)
            .is_some_and(|c| header.admits(c));
        if !header.admits(&m.cert) || !peer_admitted {
            // Not ours to hold: a correct peer never sends it. Drop it.
            tracing::warn!(peer = %peer.short(), conversation = %header.id, "ignoring a header we are not a member of");
            return;
        }
        let id = header.id;
        let title = header.title();
        if !self.add_conversation(header, fx) {
            return;
        }
        if let Some(p) = self.peers.get_mut(&peer) {
            p.known.insert(id.0);
        }
        fx.emit.push(Event::ConversationAdded {
            conversation: id,
            title,
        });
        // Pass it on: a conversation with no messages yet never changes our
        // heads, so the relay in on_sync would never carry it further.
        self.schedule_announce(now, id.0, fx);
    }
}
