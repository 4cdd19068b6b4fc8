//! The audit trail on the node (protocol/sync.md §8): this device's own
//! trail, appended to as commands run, and the copies of other devices'
//! trails an administrator holds.
//!
//! Invariants:
//! - Entries leave this device only for a connected member that showed an
//!   administrator's proof for its own (Noise-authenticated) device id;
//!   everyone else is never sent one, nor told how long our trail is.
//! - An entry is taken into a held copy only if its signature verifies
//!   under the device it names, the device is in the team directory, and it
//!   follows the copy's last entry (its place and its `prev`); anything
//!   else waits for the next ask. A held copy therefore only ever grows.
//! - A trail that another device shows shorter than, or different from,
//!   what this device holds is recorded as a [`Finding`] (once per pair
//!   of devices, the latest kept), so `huddle audit verify` names a tail cut
//!   from a device's end though the device's own chain looks whole.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::{Fx, Node};
use crate::ids::{DeviceId, Millis};
use crate::store::{keys, StoreOp, Stored};
use crate::trail::{Action, AdminProof, Entry, EntryHash, Finding};
use crate::wire::{Frame, Reason, TrailHave, MAX_TRAIL_CHAINS, MAX_TRAIL_ENTRIES};

/// Entries of each trail kept in memory to serve without reading the store.
const RECENT: usize = MAX_TRAIL_ENTRIES;
/// The most entries of another device's trail an administrator keeps
/// (about 50 MB): a hostile member cannot fill its disk.
pub const MAX_HELD_ENTRIES: u64 = 1 << 18;

/// What `huddle audit` reads: a store reader and the findings.
pub struct TrailReader {
    loader: Option<crate::store::Loader>,
    pub findings: Vec<Vec<u8>>,
}

impl TrailReader {
    /// Every trail's entries by device, (place, bytes) in place order.
    #[allow(clippy::type_complexity)]
    pub fn trails(
        &self,
    ) -> Result<BTreeMap<DeviceId, Vec<(u64, Vec<u8>)>>, crate::store::StoreError> {
        Ok(match &self.loader {
            Some(l) => crate::trail::group_records(l.0.scan(keys::TRAIL_PREFIX)?),
            None => BTreeMap::new(),
        })
    }
}

/// What a `Trail` frame says beside its entries.
#[derive(Clone, Copy, Debug)]
pub(super) struct Shown {
    /// The sender's own trail: its length and last hash.
    pub len: u64,
    pub head: EntryHash,
    /// It answers our ask (else it pushes one new entry).
    pub answer: bool,
    /// The sender held some back.
    pub more: bool,
}

#[derive(Clone, Default)]
pub(crate) struct Trails {
    /// Every trail held (ours included): entries and the last one's hash.
    held: BTreeMap<DeviceId, (u64, EntryHash)>,
    /// The newest entries of each trail held, ending at its length.
    recent: BTreeMap<DeviceId, VecDeque<Vec<u8>>>,
    /// This device's proof that it holds the team key.
    admin: Option<AdminProof>,
    /// Connected peers that showed an administrator's proof.
    admins: BTreeSet<DeviceId>,
    /// Our one outstanding ask to each peer, with what we held of the
    /// peer's own trail when we sent it: everything in it existed on the
    /// peer before it answered, so an answer shorter than it (or the same
    /// length, other) shows a cut or a rewrite, however our copy has grown
    /// since through others.
    asked: BTreeMap<DeviceId, (u64, EntryHash)>,
    /// Peers that showed an administrator's proof while our ask to them
    /// (listing only their own trail) was out: asked again, in full.
    reask: BTreeSet<DeviceId>,
    findings: BTreeMap<(DeviceId, DeviceId), Finding>,
}

impl Trails {
    pub(super) fn new(
        stored: &Stored,
        config: &super::NodeConfig,
        cert: Option<&crate::membership::Certificate>,
        device: &DeviceId,
    ) -> Trails {
        let admin = config
            .trail_admin
            .filter(|p| cert.is_some_and(|c| p.verify(&c.team, device)));
        Trails {
            admin,
            held: stored
                .trails
                .iter()
                .map(|(d, len, head)| (*d, (*len, *head)))
                .collect(),
            findings: stored
                .findings
                .iter()
                .map(|f| ((f.device, f.holder), f.clone()))
                .collect(),
            ..Trails::default()
        }
    }

    fn head(&self, device: &DeviceId) -> (u64, EntryHash) {
        self.held.get(device).copied().unwrap_or((0, [0; 32]))
    }

    fn have_of(&self, device: &DeviceId) -> TrailHave {
        let (len, head) = self.head(device);
        TrailHave {
            device: device.0,
            len,
            head,
        }
    }
}

impl Node {
    /// Makes this node an administrator for the trail: it asks members for
    /// theirs. Ignored unless `proof` is the team authority's for our device.
    pub fn set_trail_admin(&mut self, proof: AdminProof) {
        if self
            .team_id()
            .is_some_and(|team| proof.verify(&team, &self.device))
        {
            self.trails.admin = Some(proof);
        }
    }

    /// How much of each trail this node holds (ours included).
    pub fn trail_heads(&self) -> impl Iterator<Item = (&DeviceId, &(u64, EntryHash))> {
        self.trails.held.iter()
    }

    pub fn is_trail_admin(&self) -> bool {
        self.trails.admin.is_some()
    }

    /// Reads every trail this node holds, as stored, off the node's own
    /// thread (`huddle audit`): the store's reader, and the findings
    /// encoded.
    pub fn trail_reader(&self) -> TrailReader {
        TrailReader {
            loader: self.loader.clone(),
            findings: self.trails.findings.values().map(Finding::encode).collect(),
        }
    }

    /// What devices showed of trails that this node's copies contradict.
    pub fn trail_findings(&self) -> impl Iterator<Item = &Finding> {
        self.trails.findings.values()
    }

    /// Appends `action` to our trail, and hands it to connected administrators.
    pub(super) fn trail_append(&mut self, now: Millis, action: Action, fx: &mut Fx) {
        let me = self.device;
        let (len, head) = self.trails.head(&me);
        let prev = (len > 0).then(|| (len - 1, head));
        let entry = Entry::sign(&self.key, prev, now, action);
        let bytes = entry.encode();
        self.hold(&entry, bytes.clone(), fx);
        let (len, head) = self.trails.head(&me);
        let admins: Vec<DeviceId> = self.trails.admins.iter().copied().collect();
        for peer in admins.into_iter().filter(|p| self.peers.contains_key(p)) {
            let frame = Frame::Trail {
                len,
                head,
                answer: false,
                more: false,
                entries: vec![bytes.clone()],
            };
            fx.send
                .push((peer, frame.encode(), crate::sendq::Prio::TRAIL));
        }
    }

    /// Writes an entry that follows what we hold of its trail.
    fn hold(&mut self, entry: &Entry, bytes: Vec<u8>, fx: &mut Fx) {
        let hash = crate::trail::hash_of(&bytes);
        let len = entry.seq + 1;
        fx.persist.push(StoreOp::Put {
            key: keys::trail(&entry.device, entry.seq),
            value: bytes.clone(),
        });
        fx.persist.push(StoreOp::Put {
            key: keys::trail_head(&entry.device),
            value: [len.to_be_bytes().as_slice(), &hash].concat(),
        });
        self.trails.held.insert(entry.device, (len, hash));
        let recent = self.trails.recent.entry(entry.device).or_default();
        recent.push_back(bytes);
        if recent.len() > RECENT {
            recent.pop_front();
        }
    }

    /// A member became known (or answered, or maintenance came round): an
    /// administrator asks for its trails, unless an ask to it is still
    /// unanswered.
    pub(super) fn trail_ask(&mut self, peer: DeviceId, fx: &mut Fx) {
        let Some(proof) = self.trails.admin else {
            return;
        };
        if self.trails.asked.contains_key(&peer) {
            return;
        }
        self.trails.asked.insert(peer, self.trails.head(&peer));
        let frame = Frame::TrailAsk {
            proof: proof.0,
            have: self.trail_have(&peer),
        };
        fx.send
            .push((peer, frame.encode(), crate::sendq::Prio::TRAIL));
    }

    /// What an ask to `peer` lists: for an administrator, every trail held
    /// and every other device in the directory (at 0 when none is held, so
    /// it serves its copies of them); for anyone else only its own (a
    /// member is never told how long others' trails are).
    fn trail_have(&self, peer: &DeviceId) -> Vec<TrailHave> {
        if !self.trails.admins.contains(peer) {
            return vec![self.trails.have_of(peer)];
        }
        let mut devices: BTreeSet<DeviceId> = self.trails.held.keys().copied().collect();
        if let Some(m) = &self.membership {
            devices.extend(m.team.directory.keys());
        }
        devices
            .iter()
            .take(MAX_TRAIL_CHAINS)
            .map(|d| self.trails.have_of(d))
            .collect()
    }

    /// Asks every connected member again (maintenance): entries cut off by
    /// a gap or a session's end come back so.
    pub(super) fn trail_ask_all(&mut self, fx: &mut Fx) {
        if self.trails.admin.is_none() {
            return;
        }
        let members: Vec<DeviceId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.member().is_some())
            .map(|(d, _)| *d)
            .collect();
        for peer in members {
            self.trail_ask(peer, fx);
        }
    }

    pub(super) fn trail_peer_gone(&mut self, peer: &DeviceId) {
        self.trails.admins.remove(peer);
        self.trails.asked.remove(peer);
        self.trails.reask.remove(peer);
    }

    /// An administrator's ask: our trails from where it stands.
    pub(super) fn on_trail_ask(
        &mut self,
        now: Millis,
        peer: DeviceId,
        proof: [u8; 64],
        have: Vec<TrailHave>,
        fx: &mut Fx,
    ) {
        let Some(team) = self.team_id() else { return };
        if !AdminProof(proof).verify(&team, &peer) {
            self.refuse(peer, Reason::BadSignature, fx);
            return;
        }
        if self.trails.admins.insert(peer) && self.trails.admin.is_some() {
            // A fellow administrator: our ask to it lists every trail.
            if self.trails.asked.contains_key(&peer) {
                self.trails.reask.insert(peer);
            } else {
                self.trail_ask(peer, fx);
            }
        }
        let me = self.device;
        let theirs: BTreeMap<DeviceId, (u64, EntryHash)> = have
            .iter()
            .map(|h| (DeviceId(h.device), (h.len, h.head)))
            .collect();
        let (len, head) = self.trails.head(&me);
        if let Some(&(held, held_head)) = theirs.get(&me) {
            if held > len || (held == len && held > 0 && held_head != head) {
                self.note_finding(now, me, peer, len, held, held == len, fx);
            }
        }
        // Ours first, then (an administrator's) copies of the others it
        // listed.
        let mut chains = vec![me];
        if self.trails.admin.is_some() {
            chains.extend(
                self.trails
                    .held
                    .keys()
                    .filter(|d| **d != me && theirs.contains_key(d)),
            );
        }
        let mut entries = Vec::new();
        let mut more = false;
        for device in chains {
            let (ours, _) = self.trails.head(&device);
            let from = theirs.get(&device).map_or(0, |(l, _)| *l);
            if from >= ours {
                continue;
            }
            let budget = MAX_TRAIL_ENTRIES - entries.len();
            if budget == 0 {
                more = true;
                break;
            }
            let got = self.read_trail(&device, from, ours.min(from + budget as u64));
            more |= from + (got.len() as u64) < ours && got.len() == budget;
            entries.extend(got);
        }
        let frame = Frame::Trail {
            len,
            head,
            answer: true,
            more,
            entries,
        };
        fx.send
            .push((peer, frame.encode(), crate::sendq::Prio::TRAIL));
    }

    /// Entries `from..to` of `device`'s trail, as many from the first as
    /// can be read (memory, then the store).
    fn read_trail(&self, device: &DeviceId, from: u64, to: u64) -> Vec<Vec<u8>> {
        let (len, _) = self.trails.head(device);
        let recent = self.trails.recent.get(device);
        let recent_from = len - recent.map_or(0, |r| r.len() as u64);
        let mut out = Vec::new();
        let mut block: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        let mut seq = from;
        while seq < to {
            if seq >= recent_from {
                let r = recent.expect("recent entries cover the tail");
                out.push(r[(seq - recent_from) as usize].clone());
            } else {
                if !block.contains_key(&seq) {
                    block = self.read_block(device, seq);
                }
                match block.remove(&seq) {
                    Some(bytes) => out.push(bytes),
                    None => break,
                }
            }
            seq += 1;
        }
        out
    }

    fn read_block(&self, device: &DeviceId, seq: u64) -> BTreeMap<u64, Vec<u8>> {
        let Some(loader) = &self.loader else {
            return BTreeMap::new();
        };
        match loader.0.scan(&keys::trail_block(device, seq)) {
            Ok(pairs) => crate::trail::group_records(pairs)
                .remove(device)
                .unwrap_or_default()
                .into_iter()
                .collect(),
            Err(e) => {
                tracing::warn!("could not read the audit trail: {e}");
                BTreeMap::new()
            }
        }
    }

    /// A member's entries, for us as an administrator: the answer to our
    /// ask, or one new entry pushed.
    pub(super) fn on_trail(
        &mut self,
        now: Millis,
        peer: DeviceId,
        shown: Shown,
        entries: Vec<Vec<u8>>,
        fx: &mut Fx,
    ) {
        // Only an administrator asks, and only it is sent entries; an
        // answer answers an ask, and a push carries one entry.
        let asked = if shown.answer {
            self.trails.asked.remove(&peer)
        } else {
            None
        };
        let pushed_one = !shown.answer && !shown.more && entries.len() <= 1;
        if self.trails.admin.is_none()
            || (shown.answer && asked.is_none())
            || !(shown.answer || pushed_one)
        {
            self.refuse(peer, Reason::ProtocolViolation, fx);
            return;
        }
        let me = self.device;
        let (mut gap, mut progress) = (false, false);
        let mut diverged = BTreeSet::new();
        for bytes in entries {
            let entry = match crate::trail::Entry::decode(&bytes) {
                Ok(e) if e.verify() => e,
                _ => {
                    self.refuse(peer, Reason::BadSignature, fx);
                    return;
                }
            };
            let known = entry.device == peer
                || self
                    .membership
                    .as_ref()
                    .is_some_and(|m| m.team.directory.contains_key(&entry.device));
            let (held, held_head) = self.trails.head(&entry.device);
            if !known || entry.device == me || entry.seq < held || diverged.contains(&entry.device)
            {
                continue;
            }
            if entry.seq > held {
                gap = true;
                continue;
            }
            if entry.prev != held_head {
                // Signed by its device, yet not after what we hold: its
                // trail was rewritten from before our copy's end. Nothing
                // more of it is taken, and it is not asked for again.
                self.note_finding(now, entry.device, me, entry.seq, held, true, fx);
                diverged.insert(entry.device);
                continue;
            }
            if held >= MAX_HELD_ENTRIES {
                tracing::warn!(device = %entry.device.short(), "a copy of an audit trail is full; its later entries are not kept");
                diverged.insert(entry.device);
                continue;
            }
            self.hold(&entry, bytes, fx);
            progress = true;
        }
        // The peer's own trail against what we held of it when we asked.
        if let Some((held, held_head)) = asked {
            if shown.len < held {
                self.note_finding(now, peer, me, shown.len, held, false, fx);
            } else if shown.len == held && held > 0 && shown.head != held_head {
                self.note_finding(now, peer, me, shown.len, held, true, fx);
            }
        }
        // Asked again only when this answer moved us on (so two devices
        // never ask each other round in circles), or when the peer has
        // since shown it is an administrator (a full ask is owed).
        let again = self.trails.reask.remove(&peer);
        if shown.answer && (again || (progress && (shown.more || gap))) {
            self.trail_ask(peer, fx);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn note_finding(
        &mut self,
        now: Millis,
        device: DeviceId,
        holder: DeviceId,
        shown: u64,
        held: u64,
        diverged: bool,
        fx: &mut Fx,
    ) {
        let finding = Finding {
            device,
            holder,
            shown,
            held,
            diverged,
            at: now,
        };
        let same = self
            .trails
            .findings
            .get(&(device, holder))
            .is_some_and(|f| (f.shown, f.held, f.diverged) == (shown, held, diverged));
        if same {
            return;
        }
        tracing::warn!(
            device = %device.short(),
            holder = %holder.short(),
            shown,
            held,
            diverged,
            "an audit trail is shorter than, or differs from, a copy an administrator holds"
        );
        fx.persist.push(StoreOp::Put {
            key: keys::trail_finding(&device, &holder),
            value: finding.encode(),
        });
        self.trails.findings.insert((device, holder), finding);
    }
}
