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
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::request_response::{
    self, InboundRequestId, OutboundRequestId, ProtocolSupport, ResponseChannel,
};
use libp2p::{PeerId, StreamProtocol};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::deadlines::Deadline;
use super::shell::{now_ms, peer_id_of, Shell};
use crate::blobs::fetch::{Fetches, Outcome};
use crate::blobs::store::{BlobStore, Status};
use crate::blobs::wire::{
    BlobRequest, BlobResponse, Want, MAX_REQUEST_LEN, MAX_RESPONSE_LEN, PROTOCOL,
};
use crate::blobs::BlobHash;
use crate::ids::{ConversationId, DeviceId, MessageId};
use crate::node::Event;

/// Responses handed to libp2p and not yet sent, in all.
pub const MAX_SERVING: usize = 32;
/// Blobs being fetched at once.
pub const MAX_FETCHES: usize = 64;
/// Blob streams a peer may have open on one connection.
pub const STREAMS_PER_CONNECTION: usize = 8;
/// A request unanswered this long fails (a chunk at 64 kbit/s fits).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a fetch that waits (for a source, after a refusal) is looked at.
const PUMP: Duration = Duration::from_millis(250);

/// The codec: a 4-byte big-endian length, then the message (wire.rs).
#[derive(Clone, Default)]
pub struct BlobCodec {
    /// Bytes of responses read, counted as they arrive (for resumption's
    /// measure: what a cut costs).
    pub bytes_in: Arc<AtomicU64>,
}

async fn read_framed<T: AsyncRead + Unpin + Send>(
    io: &mut T,
    max: usize,
    counter: Option<&AtomicU64>,
) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let n = u32::from_be_bytes(len) as usize;
    if n > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a blob message of {n} bytes (at most {max})"),
        ));
    }
    let mut buf = vec![0u8; n];
    let mut at = 0;
    while at < n {
        let k = io.read(&mut buf[at..]).await?;
        if k == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if let Some(c) = counter {
            c.fetch_add(k as u64, Ordering::Relaxed);
        }
        at += k;
    }
    Ok(buf)
}

async fn write_framed<T: AsyncWrite + Unpin + Send>(io: &mut T, b: &[u8]) -> io::Result<()> {
    io.write_all(&(b.len() as u32).to_be_bytes()).await?;
    io.write_all(b).await?;
    io.flush().await
}

fn invalid(e: crate::codec::DecodeError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

impl request_response::Codec for BlobCodec {
    type Protocol = StreamProtocol;
    type Request = BlobRequest;
    type Response = BlobResponse;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<BlobRequest>
    where
        T: AsyncRead + Unpin + Send,
    {
        let b = read_framed(io, MAX_REQUEST_LEN, None).await?;
        BlobRequest::decode(&b).map_err(invalid)
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<BlobResponse>
    where
        T: AsyncRead + Unpin + Send,
    {
        let b = read_framed(io, MAX_RESPONSE_LEN, Some(&self.bytes_in)).await?;
        BlobResponse::decode(&b).map_err(invalid)
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: BlobRequest,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_framed(io, &req.encode()).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        resp: BlobResponse,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_framed(io, &resp.encode()).await
    }
}

pub type Behaviour = request_response::Behaviour<BlobCodec>;

pub fn behaviour(codec: BlobCodec) -> Behaviour {
    request_response::Behaviour::with_codec(
        codec,
        [(StreamProtocol::new(PROTOCOL), ProtocolSupport::Full)],
        request_response::Config::default()
            .with_request_timeout(REQUEST_TIMEOUT)
            .with_max_concurrent_streams(STREAMS_PER_CONNECTION),
    )
}

/// Counters of blob traffic since start (`GET /v1/status`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BlobStats {
    /// Bytes of blob responses read, whole or cut off.
    pub bytes_in: u64,
    pub chunks_in: u64,
    pub chunks_served: u64,
    /// Requests answered `Unavailable`.
    pub refused: u64,
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
    /// Responses not yet sent, and for our own blobs' chunks which one.
    responding: HashMap<InboundRequestId, Option<(BlobHash, u32)>>,
    /// Chunks of our own blobs not yet known to have reached anyone, sent.
    served: HashMap<BlobHash, HashSet<u32>>,
    waiters: HashMap<BlobHash, Vec<oneshot::Sender<Result<Status, String>>>>,
    bytes_in: Arc<AtomicU64>,
    stats: BlobStats,
    fault: Fault,
    /// Chunk responses sent (for `Fault::ExitAfter`).
    sent: u64,
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
                if let Some(Some((hash, index))) = self.blobs.responding.remove(&request_id) {
                    self.chunk_left(hash, index);
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
        let mut own_chunk = None;
        let resp = if admitted.is_none() {
            self.blobs.stats.refused += 1;
            BlobResponse::Unavailable
        } else if self.blobs.responding.len() >= MAX_SERVING {
            BlobResponse::Busy
        } else {
            let store = &self.blobs.store;
            match req.want {
                Want::Outline => match store.outline_of(&req.hash) {
                    Ok(Some(o)) => BlobResponse::Outline(o),
                    _ => BlobResponse::NotHeld,
                },
                Want::Chunk(i) => match store.chunk(&req.hash, i) {
                    Ok(Some(mut bytes)) => {
                        if self.blobs.fault == Fault::Corrupt {
                            bytes[0] ^= 1;
                        }
                        self.blobs.stats.chunks_served += 1;
                        if let Ok(Some(s)) = store.status(&req.hash) {
                            if s.own && !s.reached {
                                own_chunk = Some((req.hash, i));
                            }
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
        };
        if self
            .swarm
            .behaviour_mut()
            .blobs
            .send_response(channel, resp)
            .is_ok()
        {
            self.blobs.responding.insert(request_id, own_chunk);
        }
    }

    /// A chunk of our own blob was sent: once every chunk has been, the
    /// blob has reached another device, shown in the history.
    fn chunk_left(&mut self, hash: BlobHash, index: u32) {
        let Ok(Some(s)) = self.blobs.store.status(&hash) else {
            return;
        };
        let sent = self.blobs.served.entry(hash).or_default();
        sent.insert(index);
        if sent.len() as u64 >= s.chunks {
            self.blobs.served.remove(&hash);
            if let Err(e) = self.blobs.store.mark_reached(&hash) {
                tracing::warn!("recording that an attachment reached another device: {e}");
            }
        }
    }

    fn blob_response(&mut self, device: DeviceId, req: &BlobRequest, resp: BlobResponse) {
        let store = self.blobs.store.clone();
        match self.blobs.fetches.on_response(now_ms(), device, req, resp) {
            Outcome::Nothing => {}
            Outcome::Outline(hash, cvs) => {
                if let Err(e) = store.put_outline(&hash, &cvs) {
                    self.fetch_failed(&hash, e.to_string());
                }
            }
            Outcome::Chunk {
                hash,
                index,
                bytes,
                done,
            } => {
                self.blobs.stats.chunks_in += 1;
                if let Err(e) = store.put_chunk(&hash, index, &bytes) {
                    self.fetch_failed(&hash, e.to_string());
                } else if done {
                    self.fetch_done(&hash);
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

    fn fetch_done(&mut self, hash: &BlobHash) {
        let Some(f) = self.blobs.fetches.stop(hash) else {
            return;
        };
        let status = self.blobs.store.status(hash).ok().flatten();
        for w in self.blobs.waiters.remove(hash).unwrap_or_default() {
            let _ = w.send(
                status
                    .clone()
                    .ok_or_else(|| "the attachment is gone".into()),
            );
        }
        let _ = self.events.send(Event::AttachmentHeld {
            conversation: f.conversation,
            message: f.message,
            hash: *hash,
        });
    }

    fn fetch_failed(&mut self, hash: &BlobHash, why: String) {
        tracing::warn!("fetching an attachment failed: {why}");
        self.blobs.fetches.stop(hash);
        for w in self.blobs.waiters.remove(hash).unwrap_or_default() {
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
            if let Some(reply) = reply {
                let _ = reply.send(r);
            }
        };
        let Some(att) = self.node.attachment(&conversation, &message, &hash) else {
            return answer(reply, Err("that message has no such attachment".into()));
        };
        let limit = self.blob_limit();
        if att.size > limit {
            return answer(
                reply,
                Err(format!(
                "the attachment is {} bytes, over the team's limit of {limit}; it is not fetched",
                att.size
            )),
            );
        }
        let (outline, have) = match self
            .blobs
            .store
            .begin(&hash, att.size, (conversation, message))
        {
            Ok(x) => x,
            Err(e) => return answer(reply, Err(e.to_string())),
        };
        if outline.is_some() && have.iter().all(|h| *h) {
            return answer(
                reply,
                match self.blobs.store.status(&hash) {
                    Ok(Some(s)) => Ok(s),
                    Ok(None) => Err("the attachment is gone".into()),
                    Err(e) => Err(e.to_string()),
                },
            );
        }
        if self.blobs.fetches.get(&hash).is_none() {
            if self.blobs.fetches.len() >= MAX_FETCHES {
                return answer(
                    reply,
                    Err("too many attachments are being fetched; try again shortly".into()),
                );
            }
            self.blobs
                .fetches
                .start(conversation, message, att, outline, have);
        }
        self.pump_blobs();
        if let Some(r) = reply {
            if self.node.blob_sources(&conversation).is_empty() {
                // Kept: it goes on when a device that may hold it connects.
                let _ = r.send(Err(
                    "no device that holds this conversation is connected now; the attachment will be fetched as soon as one is"
                        .into(),
                ));
            } else {
                self.blobs.waiters.entry(hash).or_default().push(r);
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

    /// Goes on with the fetches a stop or a crash cut (their chunks on disk
    /// are verified again first: `BlobStore::unfinished`).
    pub(super) fn resume_fetches(&mut self) {
        match self.blobs.store.unfinished() {
            Ok(list) => {
                for (hash, (conversation, message)) in list.into_iter().take(MAX_FETCHES) {
                    self.fetch_blob(conversation, message, hash, None);
                }
            }
            Err(e) => tracing::warn!("cannot list the attachments to resume: {e}"),
        }
    }

    /// Sends what the fetches want now, and looks again soon while any
    /// fetch is under way.
    pub(super) fn pump_blobs(&mut self) {
        if self.blobs.fetches.is_empty() {
            self.deadlines.cancel(Deadline::Blobs);
            return;
        }
        let node = &self.node;
        // Whoever waits for a blob no connected device may hold is told
        // so; the fetch itself goes on when one connects.
        let stranded: Vec<BlobHash> = self
            .blobs
            .waiters
            .keys()
            .filter(|h| {
                self.blobs
                    .fetches
                    .get(h)
                    .is_some_and(|f| node.blob_sources(&f.conversation).is_empty())
            })
            .copied()
            .collect();
        for h in stranded {
            for w in self.blobs.waiters.remove(&h).unwrap_or_default() {
                let _ = w.send(Err(
                    "the devices that hold this conversation went away; the attachment will be fetched when one is back"
                        .into(),
                ));
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
