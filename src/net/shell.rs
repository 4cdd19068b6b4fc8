//! The event loop: one task that owns the node, the swarm, the store and
//! the mDNS daemon, and reacts to one event at a time. Swarm events are
//! handled in `events.rs`, dialling and discovery in `dialer.rs`.
//!
//! Invariants:
//! - the loop waits on exactly the sources in [`LoopEvent`]; nothing else
//!   runs concurrently with the node, so there is no shared mutable state;
//! - the node's outputs are carried out in order ([`Shell::carry_out`]); a
//!   store error stops the loop (a node that cannot persist must not claim
//!   messages were sent);
//! - group commit: the commands already waiting in the request queue (at
//!   most [`MAX_BATCH`]) run through the core together and share one store
//!   flush; every output after a `Flush`, and every reply, is held until
//!   that flush is done (`commit.rs`). The batch takes only what is already
//!   queued, never waits for more, and is committed before anything else
//!   (a query, a swarm event, a timer) is handled, so nothing outside the
//!   batch ever sees a state that is not durable; frames read from peers
//!   are group-committed the same way (`events.rs`);
//! - frames travel on one long-lived stream per peer and direction, read
//!   and written by tasks of their own (`streams.rs`); what they read
//!   reaches the loop through one bounded channel ([`STREAM_QUEUE`]), so
//!   the loop still sees every input one at a time, and what is queued for
//!   a peer is bounded (`links.rs`); a refused peer is closed once its
//!   queue has drained, or after [`CLOSE_GRACE`] at the latest.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use libp2p::core::transport::ListenerId;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm};
use mdns_sd::ServiceEvent;
use rand_core::OsRng;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::Instant;

use super::behaviour::{build_swarm, Behaviour, BehaviourEvent};
use super::commit::{Batch, CommandResult, Effects, ReplyTo};
use super::deadlines::{Deadline, Deadlines};
use super::dialer::{dial_opts, StaticPeer};
use super::discovery::Discovery;
use super::links::Link;
use super::loglimit::LogLimit;
use super::streams::{Counters, StreamMsg};
use super::{FoundBy, Request, ShellConfig, ShellError, ShellStats, REQUEST_QUEUE};
use crate::ids::{DeviceId, Millis};
use crate::sendq::Prio;
use crate::store::peers::PeerRecord;
use crate::store::{SledStore, Store, StoreError, StoreOp};
use crate::{Event, Input, Node, Output};

/// How long a refused peer's queue may take to drain (so that it can read
/// why) before its connections are closed anyway.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// The furthest ahead a node timer is scheduled; one set later fires then.
const MAX_TIMER: Duration = Duration::from_secs(24 * 3600);
/// How long [`Shell::new`] waits for the listeners to bind.
const LISTEN_WAIT: Duration = Duration::from_secs(10);
/// Most requests taken off the queue for one group commit: as many as the
/// queue holds, so one batch can take everything that was waiting.
const MAX_BATCH: usize = REQUEST_QUEUE;
/// Reports from the stream tasks (frames read, mostly) wait here; when it
/// is full, readers wait, and Yamux flow control slows their peers.
const STREAM_QUEUE: usize = 256;

pub fn now_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

pub(super) fn peer_id_of(device: &DeviceId) -> Option<PeerId> {
    PeerId::from_bytes(&device.peer_id_bytes()).ok()
}

/// The closed set of things the loop reacts to.
// One value lives on the stack per iteration; boxing the big variant would
// only add an allocation per swarm event.
#[allow(clippy::large_enum_variant)]
enum LoopEvent {
    Swarm(SwarmEvent<BehaviourEvent>),
    /// `None`: every handle is gone, so nobody can use the node any more.
    Request(Option<Request>),
    /// The earliest deadline is due.
    Deadline,
    Mdns(Result<ServiceEvent, mdns_sd::RecvError>),
    /// A stream task's report (never `None`: the loop keeps a sender).
    Stream(Option<StreamMsg>),
}

pub struct Shell {
    pub(super) node: Node,
    pub(super) store: SledStore,
    pub(super) swarm: Swarm<Behaviour>,
    pub(super) rng: OsRng,
    /// Bounded broadcast: lagging subscribers lose old events, `send` never waits.
    pub(super) events: broadcast::Sender<Event>,
    pub(super) requests: mpsc::Receiver<Request>,
    pub(super) deadlines: Deadlines,
    pub(super) links: HashMap<PeerId, Link>,
    /// The session number of the next peer to connect.
    pub(super) next_epoch: u64,
    /// Where stream tasks report, and the loop's end of it.
    pub(super) to_loop: mpsc::Sender<StreamMsg>,
    pub(super) from_streams: mpsc::Receiver<StreamMsg>,
    /// Dials we started and not yet resolved, and why we started them.
    pub(super) dials: HashMap<ConnectionId, FoundBy>,
    pub(super) statics: Vec<StaticPeer>,
    /// Where each device that proved membership was reached, as stored
    /// (`remember.rs`).
    pub(super) remembered: HashMap<DeviceId, PeerRecord>,
    pub(super) discovery: Option<Discovery>,
    pub(super) listen_addrs: Vec<Multiaddr>,
    /// Swarm events that arrived while [`Shell::new`] waited for listeners.
    pub(super) early: Vec<SwarmEvent<BehaviourEvent>>,
    pub(super) stats: ShellStats,
    /// Documents read back for the node (`Output::Reload`), to hand it
    /// before the next event.
    pub(super) reloaded: Vec<Input>,
    /// What the stream tasks hold, counted by the tasks themselves.
    pub(super) counters: Arc<Counters>,
    /// Rate limit of the log lines remote addresses cause.
    pub(super) log_limit: LogLimit,
    /// Attachments: the store, the fetches, what is being served.
    pub(super) blobs: super::blobs::BlobNet,
}

impl Shell {
    pub async fn new(
        config: ShellConfig,
        store: SledStore,
        requests: mpsc::Receiver<Request>,
        events: broadcast::Sender<Event>,
    ) -> Result<Shell, ShellError> {
        // Conversations are read on first use (node/docs.rs): start-up reads
        // only the index, so it does not grow with the history.
        let stored = crate::store::load_lazy(&store, store.loader())?;
        let mut rng = OsRng;
        let node = Node::new(
            config.key.clone(),
            config.certificate.clone(),
            stored,
            config.node.clone(),
            &mut rng,
        )?;
        let codec = super::blobs::BlobCodec::default();
        let blobs = super::blobs::BlobNet::new(store.blobs().clone(), &codec);
        let mut swarm = build_swarm(config.key.secret(), codec)?;
        let mut waiting: HashMap<ListenerId, Multiaddr> = HashMap::new();
        for addr in &config.listen {
            let id = swarm
                .listen_on(addr.clone())
                .map_err(|e| ShellError::Listen {
                    addr: addr.clone(),
                    why: e.to_string(),
                })?;
            waiting.insert(id, addr.clone());
        }
        let (to_loop, from_streams) = mpsc::channel(STREAM_QUEUE);
        let mut shell = Shell {
            node,
            store,
            swarm,
            rng,
            events,
            requests,
            deadlines: Deadlines::default(),
            links: HashMap::new(),
            next_epoch: 0,
            to_loop,
            from_streams,
            dials: HashMap::new(),
            statics: config.peers.into_iter().map(StaticPeer::new).collect(),
            remembered: HashMap::new(),
            discovery: None,
            listen_addrs: Vec::new(),
            early: Vec::new(),
            stats: ShellStats::default(),
            reloaded: Vec::new(),
            counters: Arc::default(),
            log_limit: LogLimit::default(),
            blobs,
        };
        shell.await_listeners(waiting).await?;
        shell.input(Input::Start)?;
        if config.mdns {
            let team = shell.node.team_id().map(|t| t.fingerprint());
            let local = *shell.swarm.local_peer_id();
            let d = Discovery::start(local, team, &shell.listen_addrs)
                .map_err(ShellError::Discovery)?;
            shell.discovery = Some(d);
        }
        shell.dial_remembered()?;
        // Fetches cut by a stop or a crash go on once the loop runs.
        shell.deadlines.set(Deadline::Blobs, Instant::now());
        let now = Instant::now();
        for i in 0..shell.statics.len() {
            shell.deadlines.set(Deadline::Redial(i), now);
        }
        tracing::info!(peer = %shell.swarm.local_peer_id(), "huddle node started");
        Ok(shell)
    }

    /// Waits until every listener has bound an address, keeping any other
    /// event for the loop.
    async fn await_listeners(
        &mut self,
        mut waiting: HashMap<ListenerId, Multiaddr>,
    ) -> Result<(), ShellError> {
        let deadline = Instant::now() + LISTEN_WAIT;
        while !waiting.is_empty() {
            let ev = tokio::time::timeout_at(deadline, self.swarm.select_next_some())
                .await
                .map_err(|_| {
                    ShellError::Transport("the listeners did not start within 10 seconds".into())
                })?;
            match ev {
                SwarmEvent::NewListenAddr {
                    listener_id,
                    address,
                } => {
                    waiting.remove(&listener_id);
                    self.listen_addrs.push(address);
                }
                SwarmEvent::ListenerClosed {
                    listener_id,
                    reason,
                    ..
                } => {
                    if let Some(addr) = waiting.remove(&listener_id) {
                        let why = match reason {
                            Ok(()) => "the listener closed".into(),
                            Err(e) => e.to_string(),
                        };
                        return Err(ShellError::Listen { addr, why });
                    }
                }
                SwarmEvent::ListenerError { listener_id, error } => {
                    if let Some(addr) = waiting.remove(&listener_id) {
                        let why = error.to_string();
                        return Err(ShellError::Listen { addr, why });
                    }
                }
                other => self.early.push(other),
            }
        }
        Ok(())
    }

    /// Runs the loop until shutdown, then releases everything (the store's
    /// lock included) before telling the caller that it is done.
    pub async fn run(mut self) -> Result<(), ShellError> {
        let outcome = self.serve().await;
        if let Some(d) = self.discovery.take() {
            d.stop().await;
        }
        let (result, reply) = match outcome {
            Ok(reply) => (self.store.flush().map_err(ShellError::from), reply),
            Err(e) => (Err(e), None),
        };
        drop(self);
        match &result {
            Ok(()) => tracing::info!("huddle node stopped"),
            Err(e) => tracing::error!("stopping the huddle node: {e}"),
        }
        if let Some(reply) = reply {
            let _ = reply.send(match &result {
                Ok(()) => Ok(()),
                Err(ShellError::Store(e)) => Err(ShellError::Store(duplicate(e))),
                Err(_) => Err(ShellError::Stopped),
            });
        }
        result
    }

    /// The loop proper. Returns the shutdown requester, if there is one.
    async fn serve(
        &mut self,
    ) -> Result<Option<oneshot::Sender<Result<(), ShellError>>>, ShellError> {
        for ev in std::mem::take(&mut self.early) {
            self.on_swarm(ev)?;
        }
        loop {
            let next = self.deadlines.next();
            let ev = tokio::select! {
                ev = self.swarm.select_next_some() => LoopEvent::Swarm(ev),
                req = self.requests.recv() => LoopEvent::Request(req),
                () = sleep_until(next) => LoopEvent::Deadline,
                m = next_mdns(self.discovery.as_ref()) => LoopEvent::Mdns(m),
                msg = self.from_streams.recv() => LoopEvent::Stream(msg),
            };
            match ev {
                LoopEvent::Swarm(ev) => self.on_swarm(ev)?,
                LoopEvent::Request(None) => return Ok(None),
                LoopEvent::Request(Some(req)) => {
                    if let Some(reply) = self.on_requests(req)? {
                        return Ok(Some(reply));
                    }
                }
                LoopEvent::Deadline => {
                    let now = Instant::now();
                    while let Some(d) = self.deadlines.pop_due(now) {
                        self.on_deadline(d)?;
                    }
                }
                LoopEvent::Mdns(ev) => self.on_mdns(ev),
                LoopEvent::Stream(Some(msg)) => self.on_streams(msg)?,
                LoopEvent::Stream(None) => {}
            }
            while !self.reloaded.is_empty() {
                for input in std::mem::take(&mut self.reloaded) {
                    self.input(input)?;
                }
            }
        }
    }

    // ----- the node -----

    pub(super) fn input(&mut self, input: Input) -> Result<(), ShellError> {
        let outputs = self.node.handle(now_ms(), input);
        self.carry_out(outputs)
    }

    /// Carries out the node's outputs in order (the contract on `Output`).
    /// The writes of every `Persist` are flushed once, before anything that
    /// followed the first `Flush` is done.
    pub(super) fn carry_out(&mut self, outputs: Vec<Output>) -> Result<(), ShellError> {
        let mut batch = Batch::default();
        batch.stage(self, outputs)?;
        batch.commit(self)
    }

    /// Serves `first` and then the requests already queued behind it (at
    /// most [`MAX_BATCH`] in all, without waiting for more): consecutive
    /// commands are group-committed; anything else is served only after
    /// the commands before it are committed. Returns the requester if one
    /// asked us to stop.
    fn on_requests(
        &mut self,
        first: Request,
    ) -> Result<Option<oneshot::Sender<Result<(), ShellError>>>, ShellError> {
        let mut batch = Batch::default();
        let mut next = Some(first);
        let mut taken = 1;
        while let Some(req) = next.take() {
            match req {
                Request::Command(cmd, reply) => self.command(&mut batch, cmd, reply)?,
                other => {
                    batch.commit(self)?;
                    if let Some(stop) = self.on_request(other)? {
                        return Ok(Some(stop));
                    }
                }
            }
            if taken < MAX_BATCH {
                next = self.requests.try_recv().ok();
                taken += 1;
            }
        }
        batch.commit(self)?;
        Ok(None)
    }

    /// Runs one command through the core and stages its outputs and reply.
    fn command(
        &mut self,
        batch: &mut Batch,
        cmd: crate::Command,
        reply: ReplyTo,
    ) -> Result<(), ShellError> {
        self.stats.commands += 1;
        let (result, outputs) = self.node.command(now_ms(), &mut self.rng, cmd);
        batch.stage(self, outputs)?;
        batch.reply(self, reply, result);
        Ok(())
    }

    /// Serves one request; returns the requester if it asked us to stop.
    fn on_request(
        &mut self,
        req: Request,
    ) -> Result<Option<oneshot::Sender<Result<(), ShellError>>>, ShellError> {
        match req {
            Request::Command(cmd, reply) => {
                let mut batch = Batch::default();
                self.command(&mut batch, cmd, reply)?;
                batch.commit(self)?;
            }
            Request::Query(f) => f(&self.node),
            Request::Stats(reply) => {
                let stats = ShellStats {
                    resources: self.resources(),
                    blobs: self.blobs.stats(),
                    ..self.stats
                };
                let _ = reply.send(stats);
            }
            Request::ListenAddrs(reply) => {
                let me = *self.swarm.local_peer_id();
                let addrs = self
                    .listen_addrs
                    .iter()
                    .map(|a| a.clone().with(Protocol::P2p(me)))
                    .collect();
                let _ = reply.send(addrs);
            }
            Request::Reach(reply) => {
                let _ = reply.send(super::Reach {
                    mdns: self.discovery.is_some(),
                    dialling: self
                        .statics
                        .iter()
                        .filter(|s| self.still_wanted(s))
                        .flat_map(|s| s.addrs.clone())
                        .collect(),
                    remembered: self.remembered.len(),
                });
            }
            Request::Connections(reply) => {
                let _ = reply.send(self.connections());
            }
            Request::Dial(addr, reply) => {
                let _ = reply.send(self.dial(dial_opts(&addr), FoundBy::Dialed).map_err(|e| {
                    ShellError::Dial {
                        addr,
                        why: e.to_string(),
                    }
                }));
            }
            Request::Fetch(conversation, message, hash, reply) => {
                self.fetch_blob(conversation, message, hash, Some(reply));
            }
            Request::Shutdown(reply) => return Ok(Some(reply)),
        }
        Ok(None)
    }

    fn on_deadline(&mut self, d: Deadline) -> Result<(), ShellError> {
        match d {
            Deadline::Node(t) => self.input(Input::Timer(t))?,
            Deadline::Close(device) => {
                if let Some(peer) = peer_id_of(&device) {
                    tracing::debug!(peer = %device.short(), "queue did not drain in time; closing");
                    self.cut(peer);
                }
            }
            Deadline::Redial(i) => self.redial(i),
            Deadline::Blobs => self.pump_blobs(),
        }
        Ok(())
    }

    // ----- sending -----

    pub(super) fn enqueue(&mut self, device: DeviceId, frame: Vec<u8>, prio: Prio) {
        let Some(peer) = peer_id_of(&device) else {
            return;
        };
        let Some(link) = self.links.get_mut(&peer) else {
            tracing::debug!(peer = %device.short(), "dropping a frame for a peer that is gone");
            return;
        };
        if link.closing {
            return;
        }
        tracing::trace!(peer = %device.short(), len = frame.len(), tag = frame.first().copied().unwrap_or(0), "sending frame");
        if let Err(o) = link.enqueue(frame, prio) {
            if let Some(held_back) = self.may_log(self.peer_addr(&peer)) {
                tracing::warn!(peer = %device.short(), frames = o.frames, bytes = o.bytes,
                    held_back, "send queue full; disconnecting the peer");
            }
            self.cut(peer);
        }
    }

    pub(super) fn close_after_drain(&mut self, device: DeviceId) {
        let Some(peer) = peer_id_of(&device) else {
            return;
        };
        let Some(link) = self.links.get_mut(&peer) else {
            return;
        };
        if link.start_closing() {
            self.cut(peer);
        } else {
            self.deadlines
                .set(Deadline::Close(device), Instant::now() + CLOSE_GRACE);
        }
    }

    /// Closes every connection to `peer` now. The core hears of it when the
    /// last one has closed.
    pub(super) fn cut(&mut self, peer: PeerId) {
        if let Some(link) = self.links.get_mut(&peer) {
            link.closing = true;
            // Not left to the connections' close: Yamux may never wake a
            // reader waiting on a stream of a closed connection.
            link.tasks.end();
            self.deadlines.cancel(Deadline::Close(link.device));
        }
        let _ = self.swarm.disconnect_peer_id(peer);
    }
}

impl Effects for Shell {
    fn persist(&mut self, ops: &[StoreOp]) -> Result<(), ShellError> {
        Ok(self.store.apply(ops)?)
    }

    fn flush(&mut self) -> Result<(), ShellError> {
        self.store.flush()?;
        self.stats.flushes += 1;
        Ok(())
    }

    fn effect(&mut self, out: Output) -> Result<(), ShellError> {
        match out {
            // `Batch` keeps these to itself; carried out faithfully anyway.
            Output::Persist(ops) => self.persist(&ops)?,
            Output::Flush => Effects::flush(self)?,
            Output::Emit(ev) => {
                match &ev {
                    Event::PeerLeft { peer } => {
                        tracing::info!(peer = %peer.short(), "peer left");
                    }
                    Event::PeerJoined { peer, .. } => self.member_joined(peer),
                    Event::MessageAdded { .. } => self.auto_fetch(&ev),
                    _ => {}
                }
                // No subscriber is not an error.
                let _ = self.events.send(ev);
            }
            Output::Send { peer, frame, prio } => self.enqueue(peer, frame, prio),
            Output::Disconnect { peer, reason } => {
                tracing::debug!(peer = %peer.short(), %reason, "closing after the queue drains");
                self.close_after_drain(peer);
            }
            Output::Reload { doc } => {
                // Fed to the node by the loop right after this event
                // (carrying out an effect never feeds the node itself).
                let stored =
                    crate::store::DocLoader::load_doc(&self.store, &doc).map_err(|e| e.to_string());
                self.reloaded.push(Input::Reloaded { doc, stored });
            }
            Output::SetTimer { timer, at } => {
                // Capped so that the deadline is always representable.
                let wait = Duration::from_millis(at.saturating_sub(now_ms())).min(MAX_TIMER);
                self.deadlines
                    .set(Deadline::Node(timer), Instant::now() + wait);
            }
        }
        Ok(())
    }

    fn reply(&mut self, to: ReplyTo, result: CommandResult) {
        // The caller may have gone away; then nobody wants the answer.
        let _ = to.send(result);
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn next_mdns(d: Option<&Discovery>) -> Result<ServiceEvent, mdns_sd::RecvError> {
    match d {
        Some(d) => d.events.recv_async().await,
        None => std::future::pending().await,
    }
}

/// A copy of a store error for a second recipient (the error types hold
/// only plain data).
fn duplicate(e: &StoreError) -> StoreError {
    match e {
        StoreError::Locked { pid } => StoreError::Locked { pid: *pid },
        StoreError::NewerFormat { found, supported } => StoreError::NewerFormat {
            found: *found,
            supported: *supported,
        },
        StoreError::Corrupt(s) => StoreError::Corrupt(s.clone()),
        StoreError::Io(s) => StoreError::Io(s.clone()),
        StoreError::NotPrivate(s) => StoreError::NotPrivate(s.clone()),
        StoreError::Encrypted => StoreError::Encrypted,
    }
}
