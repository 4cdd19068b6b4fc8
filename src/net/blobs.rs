//! Attachments over the network (protocol/blobs.md §3–4): the
//! `/huddle/blob/1` request-response protocol, serving behind the
//! membership gate, and the transfers `blobs::fetch` plans.
//!
//! Invariants:
//! - a request is answered with a blob's part only if `Node::blob_gate`
//!   admits the requester for the conversation and message it names, and
//!   the blob is within this device's limit; every other case gets the
//!   same `Unavailable`, so a stranger learns nothing by probing;
//! - blobs travel on streams of their own, never on the frame stream that
//!   carries text, so a message never waits behind a chunk;
//! - what we serve at once is bounded ([`MAX_SERVING`], then `Busy`), as is
//!   what we fetch ([`MAX_FETCHES`] blobs, `fetch::IN_ALL` requests);
//! - a device that sends a part that does not verify is cut, and nothing
//!   it sent is kept.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use libp2p::request_response::{self, InboundRequestId, OutboundRequestId, ResponseChannel};
use libp2p::PeerId;
use tokio::sync::oneshot;
use tokio::time::Instant;

pub use super::blob_codec::{behaviour, Behaviour, BlobCodec};
use super::deadlines::Deadline;
use super::shell::{now_ms, peer_id_of, Shell};
use crate::blobs::fetch::{Fetches, Outcome};
use crate::blobs::store::{BlobStore, Status};
use crate::blobs::wire::{BlobRequest, BlobResponse, Want};
use crate::blobs::{BlobHash, Key};
use crate::ids::{ConversationId, DeviceId, MessageId};
use crate::node::Event;

/// Responses handed to libp2p and not yet sent, in all.
pub const MAX_SERVING: usize = 32;
/// Outlines and chunks being sent to one device at once.
pub const SERVING_PER_PEER: usize = 4;
/// Blobs being fetched at once.
pub const MAX_FETCHES: usize = 64;
/// Blob streams a peer may have open on one connection.
pub const STREAMS_PER_CONNECTION: usize = 8;
/// A request unanswered this long fails (a chunk at 64 kbit/s fits).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A fetch that made no progress this long is given up until it is opened
/// again (or the node restarts).
const STALL_MS: u64 = 120_000;
const NO_SOURCE: &str = "no device that holds this conversation is connected now; the attachment will be fetched as soon as one is";
const WENT_AWAY: &str = "the devices that hold this conversation went away; the attachment will be fetched when one is back";
const GIVEN_UP: &str =
    "no device supplied this attachment for 2 minutes; open it again to try again";
/// How often a fetch that waits (for a source, after a refusal) is looked at.
const PUMP: Duration = Duration::from_millis(250);

/// Counters of blob traffic since start (`GET /v1/status`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BlobStats {
    /// Bytes of blob responses read, whole or cut off.
    pub bytes_in: u64,
    pub chunks_in: u64,
    pub chunks_served: u64,
    /// Requests answered `Unavailable`.
    pub refused: u64,
    /// Admitted requests for a blob not held for that conversation at that
    /// size.
    pub not_held: u64,
    /// Devices cut for sending what did not verify.
    pub cut: u64,
    pub fetching: usize,
    pub serving: usize,
}

/// A deliberate fault, for the tests of what peers do about a bad source
/// (debug builds only; `HUDDLE_BLOB_FAULT`): `corrupt` serves every chunk
/// with one bit flipped, `exit-after:N` ends the process once it has sent
/// N blob responses (a transfer cut in the middle).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Fault {
    #[default]
    None,
    Corrupt,
    ExitAfter(u64),
}

impl Fault {
    fn from_env() -> Fault {
        if !cfg!(debug_assertions) {
            return Fault::None;
        }
        match std::env::var("HUDDLE_BLOB_FAULT").ok().as_deref() {
            Some("corrupt") => Fault::Corrupt,
            Some(s) => s
                .strip_prefix("exit-after:")
                .and_then(|n| n.parse().ok())
                .map_or(Fault::None, Fault::ExitAfter),
            None => Fault::None,
        }
    }
}

/// The shell's blob state.
pub struct BlobNet {
    pub store: Arc<BlobStore>,
    pub fetches: Fetches,
    outbound: HashMap<OutboundRequestId, (DeviceId, BlobRequest)>,
    /// Outlines and chunks being sent: to whom, and for our own blobs'
    /// chunks which one.
    responding: HashMap<InboundRequestId, (PeerId, Option<(Key, u32)>)>,
    /// Chunks of our own blobs not yet known to have reached anyone, sent.
    served: HashMap<Key, HashSet<u32>>,
    waiters: HashMap<Key, Vec<oneshot::Sender<Result<Status, String>>>>,
    bytes_in: Arc<AtomicU64>,
    stats: BlobStats,
    fault: Fault,
    /// Chunk responses sent (for `Fault::ExitAfter`).
    sent: u64,
    /// The fetches a stop or a crash cut were listed (at the first pump).
    resumed: bool,
    /// Of those, the ones whose message this node does not hold (yet): a
    /// crash can lose a peer's changes not yet flushed, and the next sync
    /// brings them back (ARCHITECTURE.md, "Durable before confirmed").
    to_resume: Vec<(Key, MessageId)>,
}

impl BlobNet {
    pub fn new(store: Arc<BlobStore>, codec: &BlobCodec) -> BlobNet {
        BlobNet {
            store,
            fetches: Fetches::default(),
            outbound: HashMap::new(),
            responding: HashMap::new(),
            served: HashMap::new(),
            waiters: HashMap::new(),
            bytes_in: codec.bytes_in.clone(),
            stats: BlobStats::default(),
            fault: Fault::from_env(),
            sent: 0,
            resumed: false,
            to_resume: Vec::new(),
        }
    }

    pub fn stats(&self) -> BlobStats {
        BlobStats {
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            fetching: self.fetches.len(),
            serving: self.responding.len(),
            ..self.stats
        }
    }
}

impl Shell {
    fn blob_limit(&self) -> u64 {
        self.node.attachment_limit()
    }

    pub(super) fn on_blob_event(&mut self, ev: request_response::Event<BlobRequest, BlobResponse>) {
        use request_response::{Event as E, Message as M};
        match ev {
            E::Message {
                peer,
                message:
                    M::Request {
                        request_id,
                        request,
                        channel,
                    },
                ..
            } => self.serve_blob(peer, request_id, request, channel),
            E::Message {
                message:
                    M::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                if let Some((device, req)) = self.blobs.outbound.remove(&request_id) {
                    self.blob_response(device, &req, response);
                }
                self.pump_blobs();
            }
            E::OutboundFailure {
                request_id, error, ..
            } => {
                if let Some((device, req)) = self.blobs.outbound.remove(&request_id) {
                    tracing::debug!(peer = %device.short(), "a blob request failed: {error}");
                    self.blobs.fetches.on_failure(now_ms(), device, &req);
                }
                self.pump_blobs();
            }
            E::InboundFailure { request_id, .. } => {
                self.blobs.responding.remove(&request_id);
            }
            E::ResponseSent { request_id, .. } => {
                if let Some((_, Some((key, index)))) = self.blobs.responding.remove(&request_id) {
                    self.chunk_left(key, index);
                }
                self.blobs.sent += 1;
                if let Fault::ExitAfter(n) = self.blobs.fault {
                    if self.blobs.sent >= n {
                        tracing::warn!("HUDDLE_BLOB_FAULT: exiting after {n} blob responses");
                        std::process::exit(75);
                    }
                }
            }
        }
    }

    fn serve_blob(
        &mut self,
        peer: PeerId,
        request_id: InboundRequestId,
        req: BlobRequest,
        channel: ResponseChannel<BlobResponse>,
    ) {
        let device = self.links.get(&peer).map(|l| l.device);
        let admitted = device
            .and_then(|d| {
                self.node
                    .blob_gate(&d, &req.conversation, &req.message, &req.hash)
            })
            .filter(|a| a.size <= self.blob_limit());
        let key = Key::new(req.conversation, req.hash);
        let mut own_chunk = None;
        let mut counted = false;
        let resp = if let Some(att) = admitted {
            let store = &self.blobs.store;
            // What we hold for this conversation, at the size this message
            // signed: a message that lies about a blob's size gets nothing.
            let held = store
                .status(&key)
                .ok()
                .flatten()
                .filter(|s| s.size == att.size);
            let from_peer = self
                .blobs
                .responding
                .values()
                .filter(|(p, _)| *p == peer)
                .count();
            if held.is_none() {
                BlobResponse::NotHeld
            } else if self.blobs.responding.len() >= MAX_SERVING || from_peer >= SERVING_PER_PEER {
                BlobResponse::Busy
            } else {
                counted = true;
                match req.want {
                    Want::Outline => match store.outline_of(&key) {
                        Ok(Some(o)) => BlobResponse::Outline(o),
                        _ => BlobResponse::NotHeld,
                    },
                    Want::Chunk(i) => match store.chunk(&key, i) {
                        Ok(Some(mut bytes)) => {
                            if self.blobs.fault == Fault::Corrupt {
                                bytes[0] ^= 1;
                            }
                            self.blobs.stats.chunks_served += 1;
                            if held.is_some_and(|s| s.own && !s.reached) {
                                own_chunk = Some((key, i));
                            }
                            BlobResponse::Chunk(bytes)
                        }
                        Ok(None) => BlobResponse::NotHeld,
                        Err(e) => {
                            tracing::warn!("reading an attachment to serve it: {e}");
                            BlobResponse::NotHeld
                        }
                    },
                }
            }
        } else {
            self.blobs.stats.refused += 1;
            BlobResponse::Unavailable
        };
        if resp == BlobResponse::NotHeld {
            self.blobs.stats.not_held += 1;
        }
        if self
            .swarm
            .behaviour_mut()
            .blobs
            .send_response(channel, resp)
            .is_ok()
            && counted
        {
            self.blobs.responding.insert(request_id, (peer, own_chunk));
        }
    }

    /// A chunk of our own blob was sent: once every chunk has been, the
    /// blob has reached another device, shown in the history.
    fn chunk_left(&mut self, key: Key, index: u32) {
        let Ok(Some(s)) = self.blobs.store.status(&key) else {
            return;
        };
        let sent = self.blobs.served.entry(key).or_default();
        sent.insert(index);
        if sent.len() as u64 >= s.chunks {
            self.blobs.served.remove(&key);
            if let Err(e) = self.blobs.store.mark_reached(&key) {
                tracing::warn!("recording that an attachment reached another device: {e}");
            }
        }
    }

    fn blob_response(&mut self, device: DeviceId, req: &BlobRequest, resp: BlobResponse) {
        let store = self.blobs.store.clone();
        match self.blobs.fetches.on_response(now_ms(), device, req, resp) {
            Outcome::Nothing => {}
            Outcome::Outline(key, cvs) => {
                if let Err(e) = store.put_outline(&key, &cvs) {
                    self.fetch_failed(&key, e.to_string());
                }
            }
            Outcome::Chunk {
                key,
                index,
                bytes,
                done,
            } => {
                self.blobs.stats.chunks_in += 1;
                if let Err(e) = store.put_chunk(&key, index, &bytes) {
                    self.fetch_failed(&key, e.to_string());
                } else if done {
                    self.fetch_done(&key);
                }
            }
            Outcome::Cut(d) => {
                self.blobs.stats.cut += 1;
                tracing::warn!(peer = %d.short(), "a device sent attachment data that does not verify; closing its connections");
                if let Some(p) = peer_id_of(&d) {
                    self.cut(p);
                }
            }
        }
    }

    fn fetch_done(&mut self, key: &Key) {
        let Some(f) = self.blobs.fetches.stop(key) else {
            return;
        };
        let status = self.blobs.store.status(key).ok().flatten();
        for w in self.blobs.waiters.remove(key).unwrap_or_default() {
            let _ = w.send(
                status
                    .clone()
                    .ok_or_else(|| "the attachment is gone".into()),
            );
        }
        let _ = self.events.send(Event::AttachmentHeld {
            conversation: f.conversation,
            message: f.message,
            hash: key.hash,
        });
    }

    fn fetch_failed(&mut self, key: &Key, why: String) {
        tracing::warn!("fetching an attachment failed: {why}");
        self.blobs.fetches.stop(key);
        for w in self.blobs.waiters.remove(key).unwrap_or_default() {
            let _ = w.send(Err(why.clone()));
        }
    }

    /// Starts fetching attachment `hash` of `message`; with `wait`, the
    /// reply comes when it is held whole.
    pub(super) fn fetch_blob(
        &mut self,
        conversation: ConversationId,
        message: MessageId,
        hash: BlobHash,
        reply: Option<oneshot::Sender<Result<Status, String>>>,
    ) {
        let answer = |reply: Option<oneshot::Sender<_>>, r: Result<Status, String>| {
            if let Err(why) = &r {
                tracing::debug!(blob = %hash, %conversation, %message, "not fetched: {why}");
            }
            if let Some(reply) = reply {
                let _ = reply.send(r);
            }
        };
        let Some(att) = self.node.attachment(&conversation, &message, &hash) else {
            return answer(reply, Err("that message has no such attachment".into()));
        };
        let limit = self.blob_limit();
        if att.size > limit {
            let why = format!(
                "the attachment is {} bytes, over the team's limit of {limit}; it is not fetched",
                att.size
            );
            return answer(reply, Err(why));
        }
        let key = Key::new(conversation, hash);
        if self
            .blobs
            .fetches
            .get(&key)
            .is_some_and(|f| f.attachment.size != att.size)
        {
            // The same blob under another size, from another message: one
            // of the two lies; the size the blob's chunks verify at wins.
            self.blobs.fetches.stop(&key);
        }
        let running = self.blobs.fetches.get(&key).is_some();
        if !running && self.blobs.fetches.len() >= MAX_FETCHES {
            let why = "too many attachments are being fetched; try again shortly";
            return answer(reply, Err(why.into()));
        }
        let (outline, have) = match self.blobs.store.begin(&key, att.size, message) {
            Ok(x) => x,
            Err(e) => return answer(reply, Err(e.to_string())),
        };
        if outline.is_some() && have.iter().all(|h| *h) {
            let held = match self.blobs.store.status(&key) {
                Ok(Some(s)) => Ok(s),
                Ok(None) => Err("the attachment is gone".into()),
                Err(e) => Err(e.to_string()),
            };
            return answer(reply, held);
        }
        if !running {
            self.blobs
                .fetches
                .start(now_ms(), conversation, message, att, outline, have);
        }
        self.pump_blobs();
        if let Some(r) = reply {
            if self.node.blob_sources(&conversation).is_empty() {
                // Kept: it goes on when a device that may hold it connects.
                let _ = r.send(Err(NO_SOURCE.into()));
            } else {
                self.blobs.waiters.entry(key).or_default().push(r);
            }
        }
    }

    /// A message from a peer with attachments: the small ones are fetched
    /// at once (the team policy's `auto_fetch`).
    pub(super) fn auto_fetch(&mut self, ev: &Event) {
        let Event::MessageAdded {
            conversation,
            message,
            local: false,
            ..
        } = *ev
        else {
            return;
        };
        let auto = self.node.auto_fetch_bytes();
        let small: Vec<BlobHash> = self
            .node
            .attachments_of(&conversation, &message)
            .into_iter()
            .filter(|a| a.size <= auto)
            .map(|a| a.hash)
            .collect();
        for hash in small {
            if self.blobs.fetches.len() < MAX_FETCHES {
                self.fetch_blob(conversation, message, hash, None);
            }
        }
    }

    /// Sends what the fetches want now, and looks again soon while any
    /// fetch is under way.
    pub(super) fn pump_blobs(&mut self) {
        if !self.blobs.resumed {
            self.blobs.resumed = true;
            match self.blobs.store.unfinished() {
                Ok(mut list) => {
                    list.truncate(MAX_FETCHES);
                    tracing::debug!(blobs = list.len(), "attachments fetched in part, to resume");
                    self.blobs.to_resume = list;
                }
                Err(e) => tracing::warn!("cannot list the attachments to resume: {e}"),
            }
        }
        if !self.blobs.to_resume.is_empty() {
            let node = &self.node;
            let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.blobs.to_resume)
                .into_iter()
                .partition(|(k, m)| node.attachment(&k.conversation, m, &k.hash).is_some());
            self.blobs.to_resume = waiting;
            for (key, message) in ready {
                self.fetch_blob(key.conversation, message, key.hash, None);
            }
        }
        if self.blobs.fetches.is_empty() {
            if self.blobs.to_resume.is_empty() {
                self.deadlines.cancel(Deadline::Blobs);
            } else {
                self.deadlines.set(Deadline::Blobs, Instant::now() + PUMP);
            }
            return;
        }
        let now = now_ms();
        // A fetch that made no progress for STALL_MS is given up (nothing
        // stays in a slot for ever); what it holds is kept for the next
        // try, or dropped, with its reservation, if it holds nothing.
        for key in self.blobs.fetches.stalled(now, STALL_MS) {
            if let Some(f) = self.blobs.fetches.stop(&key) {
                tracing::info!(blob = %key.hash, "no device supplied an attachment for 2 minutes; given up until it is opened again");
                if f.held() == 0 && f.outline().is_none_or(|o| o.is_empty()) {
                    let _ = self.blobs.store.remove(&key);
                }
            }
            for w in self.blobs.waiters.remove(&key).unwrap_or_default() {
                let _ = w.send(Err(GIVEN_UP.into()));
            }
        }
        // Whoever gave up waiting is forgotten; whoever waits for a blob no
        // connected device may hold is told so (the fetch goes on when one
        // connects).
        self.blobs.waiters.retain(|_, ws| {
            ws.retain(|w| !w.is_closed());
            !ws.is_empty()
        });
        let node = &self.node;
        let fetches = &self.blobs.fetches;
        let stranded: Vec<Key> = self
            .blobs
            .waiters
            .keys()
            .filter(|k| {
                fetches.get(k).is_some_and(|f| {
                    node.blob_sources(&f.conversation)
                        .iter()
                        .all(|d| fetches.is_cut(d))
                })
            })
            .copied()
            .collect();
        for k in stranded {
            for w in self.blobs.waiters.remove(&k).unwrap_or_default() {
                let _ = w.send(Err(WENT_AWAY.into()));
            }
        }
        let reqs = self.blobs.fetches.plan(now_ms(), |c| node.blob_sources(c));
        for (device, req) in reqs {
            match peer_id_of(&device) {
                Some(p) => {
                    let id = self
                        .swarm
                        .behaviour_mut()
                        .blobs
                        .send_request(&p, req.clone());
                    self.blobs.outbound.insert(id, (device, req));
                }
                None => self.blobs.fetches.on_failure(now_ms(), device, &req),
            }
        }
        self.deadlines.set(Deadline::Blobs, Instant::now() + PUMP);
    }
}
