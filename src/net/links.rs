//! What the shell knows about each connected peer: its connections, its
//! frame streams and its send queue.
//!
//! Invariants:
//! - one session per peer (`epoch`): it begins with the first connection
//!   and ends when the last one closes or the peer is cut; a stream task's
//!   report carries the epoch, so it never touches a later session;
//! - we write to a peer on exactly one stream per session, so a peer's
//!   frames arrive in the order our core produced them;
//! - what is queued and not yet written is bounded by [`MAX_QUEUED_FRAMES`]
//!   and [`MAX_QUEUED_BYTES`], counted from the moment the core produced a
//!   frame (before the stream is open too); a peer that falls that far
//!   behind is cut off;
//! - a link owns its session's stream tasks: dropping it (the session
//!   ended) or cutting the peer ends them, so no task or buffer outlives
//!   the session.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use libp2p::swarm::ConnectionId;
use libp2p::Multiaddr;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::streams::{Queue, Queued, Tasks};
use super::FoundBy;
use crate::ids::DeviceId;
use crate::sendq::Prio;

/// Most frames queued for one peer and not yet written.
pub const MAX_QUEUED_FRAMES: usize = 1024;
/// Most bytes queued for one peer and not yet written.
pub const MAX_QUEUED_BYTES: usize = 64 * 1024 * 1024;

pub struct ConnMeta {
    pub addr: Multiaddr,
    /// We dialled it (so `addr` is where the peer listens).
    pub dialled: bool,
    pub found_by: FoundBy,
    pub since_ms: u64,
    pub opened: Instant,
}

/// The queue would exceed its bound.
#[derive(Debug)]
pub struct Overflow {
    pub frames: usize,
    pub bytes: usize,
}

/// Our side of the session's frame stream.
pub enum Writer {
    /// Asked the connection to open it; frames wait in `Link::waiting`.
    Opening(ConnectionId),
    /// Open: frames go straight to the writer task.
    Open {
        conn: ConnectionId,
        tx: mpsc::UnboundedSender<Queued>,
    },
    /// The peer declined the protocol: frames are dropped (it cannot take
    /// them; the core refuses it when its hello time is up).
    Declined,
}

pub struct Link {
    pub device: DeviceId,
    pub epoch: u64,
    pub conns: BTreeMap<ConnectionId, ConnMeta>,
    pub writer: Writer,
    /// The connection the peer's stream to us arrived on, once it has.
    pub reader: Option<ConnectionId>,
    /// Frames produced before the stream opened, in order.
    waiting: VecDeque<Queued>,
    /// Counts everything queued and not yet written (waiting or in the
    /// writer task), shared with the writer task.
    pub queue: Arc<Queue>,
    /// The core asked to disconnect: send what is queued, then close.
    pub closing: bool,
    /// The session's reader and writer tasks; they end when the link is
    /// dropped, i.e. when the session ends.
    pub tasks: Tasks,
    /// The device proved membership in this session.
    pub member: bool,
    /// The addresses it announced over identify, at most
    /// [`HEARD_ADDRS`] of them (`remember.rs` picks what to keep).
    pub heard: Vec<Multiaddr>,
}

/// Announced addresses a link holds.
pub const HEARD_ADDRS: usize = 32;

impl Link {
    pub fn new(device: DeviceId, epoch: u64, first: ConnectionId) -> Link {
        Link {
            device,
            epoch,
            conns: BTreeMap::new(),
            writer: Writer::Opening(first),
            reader: None,
            waiting: VecDeque::new(),
            queue: Arc::new(Queue::default()),
            closing: false,
            tasks: Tasks::default(),
            member: false,
            heard: Vec::new(),
        }
    }

    /// Queues a frame for the peer, to be written in `prio`'s order.
    pub fn enqueue(&mut self, frame: Vec<u8>, prio: Prio) -> Result<(), Overflow> {
        if matches!(self.writer, Writer::Declined) {
            return Ok(());
        }
        let q = &self.queue;
        let (frames, bytes) = (
            q.frames.load(Ordering::SeqCst),
            q.bytes.load(Ordering::SeqCst),
        );
        if frames >= MAX_QUEUED_FRAMES || bytes + frame.len() > MAX_QUEUED_BYTES {
            return Err(Overflow { frames, bytes });
        }
        q.frames.fetch_add(1, Ordering::SeqCst);
        q.bytes.fetch_add(frame.len(), Ordering::SeqCst);
        match &self.writer {
            Writer::Open { tx, .. } => {
                // The task drops its receiver only when the loop dropped
                // `tx` or after it reported its end, so a failed send
                // means a cut of this peer is on its way.
                let _ = tx.send((prio, frame));
            }
            _ => self.waiting.push_back((prio, frame)),
        }
        Ok(())
    }

    /// Our stream is open: hands it what waited.
    pub fn opened(&mut self, conn: ConnectionId, tx: mpsc::UnboundedSender<Queued>) {
        for f in self.waiting.drain(..) {
            let _ = tx.send(f);
        }
        self.writer = Writer::Open { conn, tx };
    }

    /// The peer declined the protocol: forgets what waited.
    pub fn declined(&mut self) {
        self.waiting.clear();
        self.queue.frames.store(0, Ordering::SeqCst);
        self.queue.bytes.store(0, Ordering::SeqCst);
        self.writer = Writer::Declined;
    }

    /// The connection our stream is (to be) on.
    pub fn writer_conn(&self) -> Option<ConnectionId> {
        match self.writer {
            Writer::Opening(c) | Writer::Open { conn: c, .. } => Some(c),
            Writer::Declined => None,
        }
    }

    /// Marks the session as ending; true if everything queued is written
    /// already (else the writer task reports `Drained` when it is).
    pub fn start_closing(&mut self) -> bool {
        self.closing = true;
        // Frames read from now on are dropped unread; so the reader's
        // buffer need not wait for the connections to close.
        self.tasks.end_reader();
        self.queue.closing.store(true, Ordering::SeqCst);
        self.queue.is_empty()
    }
}
