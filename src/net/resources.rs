//! What remote devices make the shell hold, counted: sessions, stream
//! tasks, partly read frames, handshakes under way, log lines held back
//! ([`Resources`], shown by `GET /v1/status`); and the loop's side of the
//! bounds on what remote addresses cause (the per-address handshake bound
//! learns members' addresses here; log lines about a peer are keyed by its
//! address).
//!
//! Invariant: every figure is read from the thing it counts (the tasks'
//! own guards, the behaviour's pending table, the links), never kept
//! alongside it, so it cannot drift from what is really held.

use std::net::IpAddr;
use std::sync::atomic::Ordering;

use libp2p::PeerId;
use tokio::time::Instant;

use super::addr_limits::ip_of;
use super::shell::{peer_id_of, Shell};
use crate::ids::DeviceId;

/// What remote devices make the shell hold at this moment (`GET
/// /v1/status` shows it): what an attacker could grow, counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Resources {
    /// Peers with a session (connected, proved membership or not).
    pub sessions: usize,
    /// Live tasks reading a peer's frame stream (at most one per session).
    pub reader_tasks: usize,
    /// Live tasks writing to a peer's frame stream (at most one per session).
    pub writer_tasks: usize,
    /// Bytes allocated for frames partly read (grown as bytes arrive).
    pub frame_buffer_bytes: usize,
    /// Inbound connections still in their handshake.
    pub pending_incoming: usize,
    /// Log lines about remote addresses held back by the rate limit, since
    /// the start.
    pub suppressed_log_lines: u64,
    /// Times a peer over its read rate had its next frame read later
    /// (never refused for it), since the start.
    #[serde(default)]
    pub slowed_reads: u64,
    /// Bytes of sync messages partly received from peers (the node's
    /// reassembly buffers, all peers together).
    #[serde(default)]
    pub reassembly_bytes: usize,
    /// Panics inside a library on a peer's bytes that the node contained
    /// (that peer cut, that document read back), since the start.
    #[serde(default)]
    pub contained_panics: u64,
    /// Sealed envelopes the mailbox holds for others, and their bytes
    /// (protocol/sealed.md §4).
    #[serde(default)]
    pub mailbox_envelopes: usize,
    #[serde(default)]
    pub mailbox_bytes: usize,
    /// Envelopes dropped or not taken for a full mailbox, routine / urgent
    /// / STAT / not taken, since the start.
    #[serde(default)]
    pub mailbox_dropped: [u64; 4],
    /// Envelopes sealed to us whose contents were refused, since the start.
    #[serde(default)]
    pub envelopes_refused: u64,
}

impl Shell {
    pub(super) fn resources(&self) -> Resources {
        let c = &self.counters;
        let mail = self.node.mail_stats();
        Resources {
            sessions: self.links.len(),
            reader_tasks: c.readers.load(Ordering::SeqCst),
            writer_tasks: c.writers.load(Ordering::SeqCst),
            frame_buffer_bytes: c.frame_bytes.load(Ordering::SeqCst),
            pending_incoming: self.swarm.behaviour().addrs.pending(),
            suppressed_log_lines: self.log_limit.suppressed,
            slowed_reads: c.slowed.load(Ordering::SeqCst),
            reassembly_bytes: self.node.reassembly_bytes(),
            contained_panics: self.node.contained_panics(),
            mailbox_envelopes: mail.envelopes,
            mailbox_bytes: mail.bytes,
            mailbox_dropped: [
                mail.dropped.routine,
                mail.dropped.urgent,
                mail.dropped.stat,
                mail.dropped.refused,
            ],
            envelopes_refused: mail.refused,
        }
    }

    /// Whether a line about something `addr` caused may be logged now (see
    /// `loglimit.rs`); if so, how many such lines were held back before it.
    pub(super) fn may_log(&mut self, addr: Option<IpAddr>) -> Option<u64> {
        self.log_limit.allow(addr, Instant::now())
    }

    /// The address of a peer's first connection, for rate-limited lines.
    pub(super) fn peer_addr(&self, peer: &PeerId) -> Option<IpAddr> {
        let link = self.links.get(peer)?;
        link.conns.values().find_map(|c| ip_of(&c.addr))
    }

    /// A device proved membership: the addresses it connects from are a
    /// member's (exempt from the per-address handshake bound).
    /// It is also remembered (`remember.rs`).
    pub(super) fn member_joined(&mut self, device: &DeviceId) {
        let Some(peer) = peer_id_of(device) else {
            return;
        };
        let Some(link) = self.links.get_mut(&peer) else {
            return;
        };
        link.member = true;
        let addrs: Vec<IpAddr> = link.conns.values().filter_map(|c| ip_of(&c.addr)).collect();
        for a in addrs {
            self.swarm.behaviour_mut().addrs.member_at(a);
        }
        self.remember(peer);
    }
}
