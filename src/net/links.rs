//! What the shell knows about each connected peer: its connections and its
//! send queue.
//!
//! Invariants:
//! - at most one frame per peer is in flight; the next is sent only once the
//!   remote has acknowledged the previous one, which it does only after its
//!   core has processed it — so a peer's frames are processed in the order
//!   our core produced them, whichever connection carries each;
//! - the queue behind it is bounded by [`MAX_QUEUED_FRAMES`] and
//!   [`MAX_QUEUED_BYTES`]; a peer that falls that far behind is cut off.

use std::collections::{BTreeMap, VecDeque};

use libp2p::request_response::OutboundRequestId;
use libp2p::swarm::ConnectionId;
use libp2p::Multiaddr;
use tokio::time::Instant;

use super::FoundBy;
use crate::ids::DeviceId;

/// Most frames queued for one peer behind the one in flight.
pub const MAX_QUEUED_FRAMES: usize = 1024;
/// Most bytes queued for one peer.
pub const MAX_QUEUED_BYTES: usize = 64 * 1024 * 1024;

pub struct ConnMeta {
    pub addr: Multiaddr,
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

pub struct Link {
    pub device: DeviceId,
    pub conns: BTreeMap<ConnectionId, ConnMeta>,
    queue: VecDeque<Vec<u8>>,
    queued_bytes: usize,
    in_flight: Option<OutboundRequestId>,
    /// The core asked to disconnect: send what is queued, then close.
    pub closing: bool,
}

impl Link {
    pub fn new(device: DeviceId) -> Link {
        Link {
            device,
            conns: BTreeMap::new(),
            queue: VecDeque::new(),
            queued_bytes: 0,
            in_flight: None,
            closing: false,
        }
    }

    pub fn enqueue(&mut self, frame: Vec<u8>) -> Result<(), Overflow> {
        if self.queue.len() >= MAX_QUEUED_FRAMES
            || self.queued_bytes + frame.len() > MAX_QUEUED_BYTES
        {
            return Err(Overflow {
                frames: self.queue.len(),
                bytes: self.queued_bytes,
            });
        }
        self.queued_bytes += frame.len();
        self.queue.push_back(frame);
        Ok(())
    }

    /// The next frame to send, if nothing is in flight.
    pub fn take_next(&mut self) -> Option<Vec<u8>> {
        if self.in_flight.is_some() {
            return None;
        }
        let frame = self.queue.pop_front()?;
        self.queued_bytes -= frame.len();
        Some(frame)
    }

    pub fn set_in_flight(&mut self, id: OutboundRequestId) {
        self.in_flight = Some(id);
    }

    pub fn in_flight(&self) -> Option<OutboundRequestId> {
        self.in_flight
    }

    /// Records an acknowledgement; false if it was not for the frame in flight.
    pub fn acked(&mut self, id: OutboundRequestId) -> bool {
        if self.in_flight == Some(id) {
            self.in_flight = None;
            true
        } else {
            false
        }
    }

    /// Forgets every frame, queued or in flight (the peer cannot take them).
    pub fn discard_all(&mut self) {
        self.queue.clear();
        self.queued_bytes = 0;
        self.in_flight = None;
    }

    /// Nothing queued and nothing in flight.
    pub fn drained(&self) -> bool {
        self.in_flight.is_none() && self.queue.is_empty()
    }

    pub fn queued(&self) -> usize {
        self.queue.len()
    }
}
