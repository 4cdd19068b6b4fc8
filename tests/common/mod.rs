//! A small in-memory mesh for core tests: real `Node`s with `MemoryStore`s,
//! frames carried between them by a queue the test controls (drops,
//! duplicates and reordering injected from a seeded RNG), timers fired in
//! virtual time. No threads, no clock: a seed replays a run exactly.
#![allow(dead_code)]

pub mod mutate;
pub mod sealed;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use huddle::crypto::{AuthorityKey, DeviceKey};
use huddle::membership::{Certificate, CertificateRequest};
use huddle::node::{Command, CommandError, Event, Input, Node, NodeConfig, Output, Reply, Timer};
use huddle::store::{MemoryStore, Store};
use huddle::{DeviceId, MemberId};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub const T0: u64 = 1_700_000_000_000;
pub const DAY: u64 = 24 * 3600 * 1000;

#[derive(Clone)]
pub struct Device {
    pub key: DeviceKey,
    pub cert: Option<Certificate>,
    pub node: Node,
    pub store: MemoryStore,
    /// Every frame this device was sent, in order.
    pub received: Vec<Vec<u8>>,
    /// Messages whose `Sent` this device emitted.
    pub sent: Vec<(huddle::ConversationId, huddle::MessageId)>,
    pub events: Vec<Event>,
}

impl Device {
    pub fn member(&self) -> MemberId {
        self.cert.as_ref().expect("member").member
    }

    pub fn id(&self) -> DeviceId {
        self.key.device_id()
    }
}

/// Fault knobs for frames on live links.
#[derive(Clone, Copy, Debug, Default)]
pub struct Faults {
    /// Probability that delivering a frame breaks the connection instead
    /// (the frame and everything in flight on that link are lost).
    pub break_link: f64,
    /// Probability that a frame is delivered twice.
    pub duplicate: f64,
    /// Frames may overtake each other within this window (0 = in order).
    pub reorder_window: usize,
}

#[derive(Clone)]
pub struct Mesh {
    pub now: u64,
    pub rng: ChaCha8Rng,
    pub authority: AuthorityKey,
    pub devices: Vec<Device>,
    pub links: BTreeSet<(usize, usize)>,
    pub queue: VecDeque<(usize, usize, Vec<u8>)>,
    timers: BTreeMap<(usize, Timer), u64>,
    pub faults: Faults,
    pub frames_delivered: u64,
    pub bytes_delivered: u64,
    /// The configuration of nodes added or restarted from now on.
    pub config: NodeConfig,
    /// When set, every frame sent from now on, with its sender and its
    /// place in the send order (`huddle::sendq`).
    pub sends: Option<Vec<(usize, huddle::sendq::Prio, Vec<u8>)>>,
}

pub fn request(
    name: &str,
    roles: &[&str],
    device: DeviceId,
    member: MemberId,
) -> CertificateRequest {
    CertificateRequest {
        team_name: "St Mary Ward 7".into(),
        member,
        display_name: name.into(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        device,
        issued: T0 - DAY,
        expires: T0 + 365 * DAY,
    }
}

impl Mesh {
    pub fn new(seed: u64) -> Mesh {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let authority = AuthorityKey::generate(&mut rng);
        Mesh {
            now: T0,
            rng,
            authority,
            devices: Vec::new(),
            links: BTreeSet::new(),
            queue: VecDeque::new(),
            timers: BTreeMap::new(),
            faults: Faults::default(),
            frames_delivered: 0,
            bytes_delivered: 0,
            config: NodeConfig::default(),
            sends: None,
        }
    }

    /// Adds a team member with the given roles; returns its index.
    pub fn add_member(&mut self, name: &str, roles: &[&str]) -> usize {
        let key = DeviceKey::generate(&mut self.rng);
        let member = MemberId::random(&mut self.rng);
        let cert = request(name, roles, key.device_id(), member)
            .sign(&self.authority)
            .expect("valid request");
        self.add_device(key, Some(cert))
    }

    /// Adds a device with any certificate (or none).
    pub fn add_device(&mut self, key: DeviceKey, cert: Option<Certificate>) -> usize {
        let store = MemoryStore::new();
        let node = Node::new(
            key.clone(),
            cert.clone(),
            huddle::store::load(&store).unwrap(),
            self.config.clone(),
            &mut self.rng,
        )
        .unwrap();
        self.devices.push(Device {
            key,
            cert,
            node,
            store,
            received: Vec::new(),
            sent: Vec::new(),
            events: Vec::new(),
        });
        let i = self.devices.len() - 1;
        let out = self.devices[i].node.handle(self.now, Input::Start);
        self.apply(i, out);
        i
    }

    fn index_of(&self, d: &DeviceId) -> Option<usize> {
        self.devices.iter().position(|x| x.id() == *d)
    }

    pub fn apply(&mut self, i: usize, outputs: Vec<Output>) {
        for o in outputs {
            match o {
                Output::Persist(ops) => self.devices[i].store.apply(&ops).unwrap(),
                Output::Flush => self.devices[i].store.flush().unwrap(),
                Output::Emit(e) => {
                    if let Event::Sent {
                        conversation,
                        message,
                    } = &e
                    {
                        self.devices[i].sent.push((*conversation, *message));
                    }
                    self.devices[i].events.push(e);
                }
                Output::Send { peer, frame, prio } => {
                    if let Some(log) = &mut self.sends {
                        log.push((i, prio, frame.clone()));
                    }
                    if let Some(j) = self.index_of(&peer) {
                        if self.links.contains(&(i.min(j), i.max(j))) {
                            self.queue.push_back((i, j, frame));
                        }
                    }
                }
                Output::Disconnect { peer, .. } => {
                    if let Some(j) = self.index_of(&peer) {
                        self.disconnect(i, j);
                    }
                }
                Output::SetTimer { timer, at } => {
                    self.timers.insert((i, timer), at);
                }
                Output::Reload { doc } => {
                    let stored = huddle::store::DocLoader::load_doc(&self.devices[i].store, &doc)
                        .map_err(|e| e.to_string());
                    let now = self.now;
                    let out = self.devices[i]
                        .node
                        .handle(now, Input::Reloaded { doc, stored });
                    self.apply(i, out);
                }
            }
        }
    }

    pub fn command(&mut self, i: usize, cmd: Command) -> Result<Reply, CommandError> {
        let now = self.now;
        let (r, out) = {
            let Mesh { devices, rng, .. } = self;
            devices[i].node.command(now, rng, cmd)
        };
        self.apply(i, out);
        r
    }

    /// Sends a routine text message from device `i`; returns its id.
    pub fn send_text(
        &mut self,
        i: usize,
        conversation: huddle::ConversationId,
        body: &str,
    ) -> huddle::MessageId {
        let cmd = Command::Send {
            conversation,
            body: body.into(),
            priority: huddle::Priority::Routine,
            reply_to: None,
            fields: Default::default(),
        };
        match self.command(i, cmd) {
            Ok(Reply::Message(m)) => m,
            other => panic!("send failed: {other:?}"),
        }
    }

    /// Device `i` creates a role channel for `role`; returns its id.
    pub fn create_role_channel(&mut self, i: usize, role: &str) -> huddle::ConversationId {
        let kind = huddle::ConversationKind::Role { role: role.into() };
        match self.command(i, Command::CreateConversation { kind }) {
            Ok(Reply::Conversation(id)) => id,
            other => panic!("create failed: {other:?}"),
        }
    }

    pub fn connect(&mut self, i: usize, j: usize) {
        let key = (i.min(j), i.max(j));
        if i == j || !self.links.insert(key) {
            return;
        }
        let (di, dj) = (self.devices[i].id(), self.devices[j].id());
        let out = self.devices[i]
            .node
            .handle(self.now, Input::PeerConnected { peer: dj });
        self.apply(i, out);
        let out = self.devices[j]
            .node
            .handle(self.now, Input::PeerConnected { peer: di });
        self.apply(j, out);
    }

    pub fn disconnect(&mut self, i: usize, j: usize) {
        let key = (i.min(j), i.max(j));
        if !self.links.remove(&key) {
            return;
        }
        // A connection that breaks loses everything in flight on it.
        self.queue
            .retain(|(a, b, _)| !((*a == i && *b == j) || (*a == j && *b == i)));
        let (di, dj) = (self.devices[i].id(), self.devices[j].id());
        let out = self.devices[i]
            .node
            .handle(self.now, Input::PeerDisconnected { peer: dj });
        self.apply(i, out);
        let out = self.devices[j]
            .node
            .handle(self.now, Input::PeerDisconnected { peer: di });
        self.apply(j, out);
    }

    pub fn connect_all(&mut self, group: &[usize]) {
        for (a, &i) in group.iter().enumerate() {
            for &j in &group[a + 1..] {
                self.connect(i, j);
            }
        }
    }

    /// Breaks every link, then connects everyone to everyone: a clean heal.
    pub fn heal(&mut self) {
        let links: Vec<(usize, usize)> = self.links.iter().copied().collect();
        for (i, j) in links {
            self.disconnect(i, j);
        }
        let all: Vec<usize> = (0..self.devices.len()).collect();
        self.connect_all(&all);
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && (self.rng.next_u64() as f64 / u64::MAX as f64) < p
    }

    /// Delivers one frame (subject to faults). Returns false if none was queued.
    pub fn step(&mut self) -> bool {
        if self.queue.is_empty() {
            return false;
        }
        let w = self.faults.reorder_window.min(self.queue.len() - 1);
        let k = if w > 0 {
            (self.rng.next_u64() as usize) % (w + 1)
        } else {
            0
        };
        let (from, to, frame) = self.queue.remove(k).expect("index in range");
        if self.chance(self.faults.break_link) {
            self.disconnect(from, to);
            return true;
        }
        if self.chance(self.faults.duplicate) {
            self.deliver(from, to, frame.clone());
        }
        self.deliver(from, to, frame);
        true
    }

    fn deliver(&mut self, from: usize, to: usize, frame: Vec<u8>) {
        if !self.links.contains(&(from.min(to), from.max(to))) {
            return;
        }
        self.frames_delivered += 1;
        self.bytes_delivered += frame.len() as u64;
        self.devices[to].received.push(frame.clone());
        let peer = self.devices[from].id();
        let out = self.devices[to]
            .node
            .handle(self.now, Input::Frame { peer, bytes: frame });
        self.apply(to, out);
    }

    /// Runs until no frame is in flight and no timer (other than periodic
    /// maintenance) is due; advances virtual time to fire timers.
    pub fn run_until_quiet(&mut self) {
        assert!(
            self.run_until_quiet_within(10_000_000),
            "the mesh did not become quiet"
        );
    }

    /// [`Mesh::run_until_quiet`], giving up (false) after `limit` frames
    /// and timers: for tests of exchanges that must end.
    pub fn run_until_quiet_within(&mut self, limit: u64) -> bool {
        for _ in 0..limit {
            if self.step() {
                continue;
            }
            let next = self
                .timers
                .iter()
                .filter(|((_, t), _)| *t != Timer::Maintenance)
                .map(|(k, at)| (*at, *k))
                .min();
            let Some((at, (i, timer))) = next else {
                return true;
            };
            self.timers.remove(&(i, timer));
            self.now = self.now.max(at);
            let out = self.devices[i].node.handle(self.now, Input::Timer(timer));
            self.apply(i, out);
        }
        false
    }

    /// Delivers frames and fires every timer due up to virtual time `t` (in
    /// order), then sets the time to `t`: for tests of what happens on a
    /// schedule (re-notifications, escalations, reminders).
    pub fn run_until(&mut self, t: u64) {
        loop {
            if self.step() {
                continue;
            }
            let next = self
                .timers
                .iter()
                .filter(|(_, at)| **at <= t)
                .map(|(k, at)| (*at, *k))
                .min();
            let Some((at, (i, timer))) = next else {
                break;
            };
            self.timers.remove(&(i, timer));
            self.now = self.now.max(at);
            let out = self.devices[i].node.handle(self.now, Input::Timer(timer));
            self.apply(i, out);
        }
        self.now = self.now.max(t);
    }

    /// Simulates a crash of device `i`: unflushed writes are lost and the
    /// node is rebuilt from its store.
    pub fn crash_restart(&mut self, i: usize) {
        let peers: Vec<usize> = self
            .links
            .iter()
            .filter_map(|&(a, b)| {
                if a == i {
                    Some(b)
                } else if b == i {
                    Some(a)
                } else {
                    None
                }
            })
            .collect();
        for j in peers {
            self.disconnect(i, j);
        }
        self.timers.retain(|(d, _), _| *d != i);
        let d = &mut self.devices[i];
        d.store.crash();
        // As the shell starts: conversations are read on first use.
        let loader = huddle::store::Loader(std::sync::Arc::new(d.store.clone()));
        d.node = Node::new(
            d.key.clone(),
            d.cert.clone(),
            huddle::store::load_lazy(&d.store, loader).unwrap(),
            self.config.clone(),
            &mut self.rng,
        )
        .unwrap();
        let out = self.devices[i].node.handle(self.now, Input::Start);
        self.apply(i, out);
    }
}

/// A group of `members` (device indexes) created by `by`, once every
/// member holds it.
pub fn group_of(m: &mut Mesh, by: usize, members: &[usize], title: &str) -> huddle::ConversationId {
    let members: BTreeSet<MemberId> = members.iter().map(|&i| m.devices[i].member()).collect();
    let kind = huddle::ConversationKind::Group {
        title: title.into(),
        members,
    };
    let Ok(Reply::Conversation(id)) = m.command(by, Command::CreateConversation { kind }) else {
        panic!("create");
    };
    m.run_until_quiet();
    id
}

/// Device `i`'s stored copy of conversation `id`, changed by `edit` as a
/// modified client would change it, as the `Sync` frame that carries the
/// change.
pub fn tampered_frame(
    m: &Mesh,
    i: usize,
    id: huddle::ConversationId,
    edit: impl FnOnce(
        &mut automerge::transaction::Transaction<'_>,
    ) -> Result<(), automerge::AutomergeError>,
) -> Vec<u8> {
    try_tampered_frame(m, i, id, edit).expect("the edit applies and changes the document")
}

/// [`tampered_frame`], or `None` if the edit changed nothing.
pub fn try_tampered_frame(
    m: &Mesh,
    i: usize,
    id: huddle::ConversationId,
    edit: impl FnOnce(
        &mut automerge::transaction::Transaction<'_>,
    ) -> Result<(), automerge::AutomergeError>,
) -> Option<Vec<u8>> {
    let stored = huddle::store::DocLoader::load_doc(&m.devices[i].store, &id.0).unwrap();
    let header = m.devices[i].node.conversation(&id).unwrap().header.clone();
    let (mut c, _) = huddle::conversation::Conversation::load(
        header,
        &automerge::ActorId::from([0x66u8; 16].as_slice()),
        stored.snapshot.as_deref(),
        &stored.chunks,
        &stored.rejected,
    )
    .unwrap();
    c.replica_mut().local(m.now, edit).ok()?;
    let data = c
        .replica()
        .local_push()?
        .message_for(&mut automerge::sync::State::new());
    let frame = huddle::wire::Frame::Sync {
        doc: id.0,
        more: false,
        data,
    };
    Some(frame.encode())
}

impl Mesh {
    /// Whether `f` is a hello, a refusal, or the revocation of device
    /// `dev`'s own device or member shown before a refusal: all a device
    /// outside the team may receive.
    pub fn is_handshake(&self, dev: usize, f: &huddle::wire::Frame) -> bool {
        use huddle::membership::RevocationTarget;
        use huddle::wire::Frame;
        let d = &self.devices[dev];
        match f {
            Frame::Hello { .. } | Frame::Refuse { .. } => true,
            Frame::Revoked { revocation } => {
                revocation.target == RevocationTarget::Device(d.id())
                    || revocation.target == RevocationTarget::Member(d.member())
            }
            _ => false,
        }
    }
}
