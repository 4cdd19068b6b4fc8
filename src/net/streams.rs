//! Reading and writing the long-lived frame streams (`/huddle/sync/2`):
//! the framing, one reader task per inbound stream and one writer task per
//! peer. `protocol/transport.md` §4–§6 is the normative description.
//!
//! On a stream: `u32` big-endian length ‖ frame bytes, again and again, in
//! one direction, for the whole session.
//!
//! Invariants:
//! - nothing is allocated for a frame before its length prefix has been
//!   checked against [`MAX_FRAME_LEN`], and then only as its bytes arrive
//!   ([`READ_CHUNK`] at a time): a prefix that claims 1 MiB costs what the
//!   peer really sent. A larger prefix, a stream that ends inside a frame,
//!   or a frame not whole [`FRAME_READ_TIMEOUT`] after its first byte is a
//!   framing violation, and nothing of it reaches the core;
//! - the loop owns every task (it holds their abort handles, `links.rs`)
//!   and ends them with the session: no task, and no buffer, waits on a
//!   stream that Yamux may never wake (rust-yamux #216);
//! - [`Counters`] counts the live tasks and the bytes of partly read frames,
//!   updated by guards that are dropped however a task ends, aborts included;
//! - a reader hands frames to the loop through one bounded channel and
//!   waits when it is full, so a fast peer is slowed by Yamux flow control
//!   instead of filling our memory;
//! - a writer's queue is bounded by the loop ([`Queue`] counts what has not
//!   been written yet; the loop checks it before queueing more), and each
//!   write must finish within [`WRITE_TIMEOUT`];
//! - every task reports how it ended, tagged with the session (`epoch`) it
//!   belongs to, so a late report never touches a newer session.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::{PeerId, Stream};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use crate::sendq::{Prio, SendQueue};
use crate::wire::MAX_FRAME_LEN;

/// A write to a peer's stream (a batch of frames) must finish within this.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Once a frame's first byte has arrived, the whole frame must arrive
/// within this: a peer cannot hold a partly read buffer open-ended.
pub const FRAME_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// A frame's buffer grows by at most this much per read, as bytes arrive.
pub const READ_CHUNK: usize = 64 * 1024;
/// Frames a writer gathers into one write, at most this many bytes (a
/// single larger frame is written alone).
const WRITE_BATCH: usize = 64 * 1024;

/// What the stream tasks tell the loop.
#[derive(Debug)]
pub enum StreamMsg {
    Frame {
        peer: PeerId,
        epoch: u64,
        frame: Vec<u8>,
    },
    /// A task ended on its own (not because the loop dropped it).
    Ended {
        peer: PeerId,
        epoch: u64,
        why: Ended,
    },
    /// A closing writer has written everything and closed its stream.
    Drained { peer: PeerId, epoch: u64 },
}

#[derive(Debug)]
pub enum Ended {
    /// The peer broke the framing rules.
    Violation(String),
    /// The peer closed its stream between frames.
    Closed,
    /// Reading or writing failed (the connection broke, a write timed out).
    Failed(String),
}

/// What a writer has not written yet, shared with the loop.
#[derive(Debug, Default)]
pub struct Queue {
    pub frames: AtomicUsize,
    pub bytes: AtomicUsize,
    /// The session is ending: once everything is written, close the stream
    /// and report [`StreamMsg::Drained`].
    pub closing: AtomicBool,
}

impl Queue {
    pub fn is_empty(&self) -> bool {
        self.frames.load(Ordering::SeqCst) == 0
    }
}

fn invalid(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

/// What the stream tasks hold, shared with the loop (for `Resources`).
#[derive(Debug, Default)]
pub struct Counters {
    pub readers: AtomicUsize,
    pub writers: AtomicUsize,
    /// Bytes allocated for frames being read and not yet whole.
    pub frame_bytes: AtomicUsize,
    /// Times a peer over its read rate was slowed (pace.rs), since start.
    pub slowed: std::sync::atomic::AtomicU64,
}

/// Counts one live task while it exists.
struct Live<'a>(&'a AtomicUsize);

impl<'a> Live<'a> {
    fn new(n: &'a AtomicUsize) -> Self {
        n.fetch_add(1, Ordering::SeqCst);
        Live(n)
    }
}

impl Drop for Live<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Charges a partly read frame's allocation to a counter until dropped.
struct Held<'a> {
    counter: &'a AtomicUsize,
    bytes: usize,
}

impl Held<'_> {
    fn set(&mut self, bytes: usize) {
        if bytes > self.bytes {
            self.counter.fetch_add(bytes - self.bytes, Ordering::SeqCst);
        } else {
            self.counter.fetch_sub(self.bytes - bytes, Ordering::SeqCst);
        }
        self.bytes = bytes;
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.counter.fetch_sub(self.bytes, Ordering::SeqCst);
    }
}

/// Reads one length-prefixed frame; `None` if the stream ended cleanly
/// before a prefix. Waits as long as it takes for a frame to begin; once
/// it has, the rest must come within [`FRAME_READ_TIMEOUT`]. The frame's
/// allocation is charged to `held` while it is being read.
pub async fn read_frame<T: AsyncRead + Unpin>(
    io: &mut T,
    held: &AtomicUsize,
) -> io::Result<Option<Vec<u8>>> {
    read_frame_within(io, held, FRAME_READ_TIMEOUT).await
}

/// [`read_frame`] with the deadline given.
async fn read_frame_within<T: AsyncRead + Unpin>(
    io: &mut T,
    held: &AtomicUsize,
    deadline: Duration,
) -> io::Result<Option<Vec<u8>>> {
    let mut first = [0u8; 1];
    if io.read(&mut first).await? == 0 {
        return Ok(None);
    }
    tokio::time::timeout(deadline, read_rest(io, first[0], held))
        .await
        .unwrap_or_else(|_| {
            Err(invalid(format!(
                "a frame was not whole {deadline:?} after it began"
            )))
        })
        .map(Some)
}

/// The frame after its first byte.
async fn read_rest<T: AsyncRead + Unpin>(
    io: &mut T,
    first: u8,
    held: &AtomicUsize,
) -> io::Result<Vec<u8>> {
    let mut prefix = [first, 0, 0, 0];
    let mut got = 1;
    while got < prefix.len() {
        match io.read(&mut prefix[got..]).await? {
            0 => return Err(invalid("the stream ended inside a length prefix".into())),
            n => got += n,
        }
    }
    let len = u32::from_be_bytes(prefix) as usize;
    if len > MAX_FRAME_LEN {
        return Err(invalid(format!(
            "frame of {len} bytes exceeds the limit of {MAX_FRAME_LEN}"
        )));
    }
    let mut held = Held {
        counter: held,
        bytes: 0,
    };
    let mut frame = Vec::new();
    while frame.len() < len {
        let filled = frame.len();
        // The claimed length is only a bound: the buffer grows by what
        // could arrive in one read, never by what was claimed.
        let step = (len - filled).min(READ_CHUNK);
        frame.reserve_exact(step);
        frame.resize(filled + step, 0);
        held.set(frame.capacity());
        match io.read(&mut frame[filled..]).await? {
            0 => {
                return Err(invalid(format!(
                    "the stream ended inside a frame of {len} bytes"
                )))
            }
            n => frame.truncate(filled + n),
        }
    }
    Ok(frame)
}

/// Appends `frame` with its length prefix to `buf`.
pub fn encode_frame(buf: &mut Vec<u8>, frame: &[u8]) -> io::Result<()> {
    if frame.len() > MAX_FRAME_LEN {
        return Err(invalid(format!(
            "refusing to send a frame of {} bytes (limit {MAX_FRAME_LEN})",
            frame.len()
        )));
    }
    buf.extend_from_slice(&(frame.len() as u32).to_be_bytes());
    buf.extend_from_slice(frame);
    Ok(())
}

/// Reads frames from one inbound stream and hands them to the loop, until
/// the stream ends or the loop goes away.
pub async fn read_loop<T: AsyncRead + Unpin>(
    mut stream: T,
    peer: PeerId,
    epoch: u64,
    to_loop: mpsc::Sender<StreamMsg>,
    counters: Arc<Counters>,
) {
    let _live = Live::new(&counters.readers);
    let mut pace = super::pace::Pace::new(tokio::time::Instant::now());
    let why = loop {
        match read_frame(&mut stream, &counters.frame_bytes).await {
            Ok(Some(frame)) => {
                let wait = pace.take(frame.len(), tokio::time::Instant::now());
                let msg = StreamMsg::Frame { peer, epoch, frame };
                if to_loop.send(msg).await.is_err() {
                    return;
                }
                if !wait.is_zero() {
                    // Over its rate: its next frame is read later (pace.rs).
                    counters.slowed.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(wait).await;
                }
            }
            Ok(None) => break Ended::Closed,
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                break Ended::Violation(e.to_string())
            }
            Err(e) => break Ended::Failed(e.to_string()),
        }
    };
    let _ = to_loop.send(StreamMsg::Ended { peer, epoch, why }).await;
}

/// A frame for the writer, with its place in the order (`sendq.rs`).
pub type Queued = (Prio, Vec<u8>);

/// Writes the frames the loop queues for one peer, gathering what is
/// waiting into one write, highest rank first (transport.md §5.1: what
/// waits while a thin link is busy is written STAT and urgent first).
/// Ends (closing the stream) when the loop drops its sender, or once
/// drained after [`Queue::closing`] was set.
pub async fn write_loop<T: AsyncWrite + Unpin>(
    mut stream: T,
    mut frames: mpsc::UnboundedReceiver<Queued>,
    queue: Arc<Queue>,
    peer: PeerId,
    epoch: u64,
    to_loop: mpsc::Sender<StreamMsg>,
    counters: Arc<Counters>,
) {
    let _live = Live::new(&counters.writers);
    let mut buf = Vec::new();
    // Unbounded itself; the loop bounds what it queues for the peer
    // (`Queue`, counted until written).
    let mut pending: SendQueue<Vec<u8>> = SendQueue::default();
    loop {
        if pending.is_empty() {
            let Some((prio, f)) = frames.recv().await else {
                break;
            };
            pending.push(prio, f);
        }
        while let Ok((prio, f)) = frames.try_recv() {
            pending.push(prio, f);
        }
        buf.clear();
        let (mut n, mut bytes) = (0, 0);
        let mut result = Ok(());
        while result.is_ok() && buf.len() < WRITE_BATCH {
            let Some(f) = pending.pop() else { break };
            n += 1;
            bytes += f.len();
            result = encode_frame(&mut buf, &f);
        }
        let written = match result {
            Ok(()) => tokio::time::timeout(WRITE_TIMEOUT, async {
                stream.write_all(&buf).await?;
                stream.flush().await
            })
            .await
            .unwrap_or_else(|_| {
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the peer took frames too slowly",
                ))
            }),
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            let why = Ended::Failed(e.to_string());
            let _ = to_loop.send(StreamMsg::Ended { peer, epoch, why }).await;
            return;
        }
        queue.bytes.fetch_sub(bytes, Ordering::SeqCst);
        queue.frames.fetch_sub(n, Ordering::SeqCst);
        // The loop sets `closing` and then reads the count; we lower the
        // count and then read `closing`: one of the two sees the other.
        if queue.closing.load(Ordering::SeqCst) && queue.is_empty() {
            let _ = tokio::time::timeout(WRITE_TIMEOUT, stream.close()).await;
            let _ = to_loop.send(StreamMsg::Drained { peer, epoch }).await;
            return;
        }
    }
    let _ = tokio::time::timeout(WRITE_TIMEOUT, stream.close()).await;
}

/// The tasks of one session, ended when it is dropped: the loop drops it
/// when the session ends, whatever Yamux does with the streams.
#[derive(Debug, Default)]
pub struct Tasks {
    reader: Option<AbortHandle>,
    writer: Option<AbortHandle>,
}

impl Tasks {
    /// Ends the reader now: nothing it could still read would be used.
    pub fn end_reader(&mut self) {
        if let Some(t) = self.reader.take() {
            t.abort();
        }
    }

    /// Ends both tasks now.
    pub fn end(&mut self) {
        self.end_reader();
        if let Some(t) = self.writer.take() {
            t.abort();
        }
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        self.end();
    }
}

/// Starts the reader of an inbound stream; it lives as long as `tasks`.
pub fn spawn_reader<T: AsyncRead + Unpin + Send + 'static>(
    tasks: &mut Tasks,
    stream: T,
    peer: PeerId,
    epoch: u64,
    to_loop: mpsc::Sender<StreamMsg>,
    counters: Arc<Counters>,
) {
    let task = tokio::spawn(read_loop(stream, peer, epoch, to_loop, counters));
    // The loop starts one reader per session (a second stream is cut).
    if let Some(old) = tasks.reader.replace(task.abort_handle()) {
        old.abort();
    }
}

/// Starts the writer of our stream to a peer; it lives as long as `tasks`.
/// Returns where to queue frames.
pub fn spawn_writer(
    tasks: &mut Tasks,
    stream: Stream,
    queue: Arc<Queue>,
    peer: PeerId,
    epoch: u64,
    to_loop: mpsc::Sender<StreamMsg>,
    counters: Arc<Counters>,
) -> mpsc::UnboundedSender<Queued> {
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(write_loop(
        stream, rx, queue, peer, epoch, to_loop, counters,
    ));
    if let Some(old) = tasks.writer.replace(task.abort_handle()) {
        old.abort();
    }
    tx
}

#[cfg(test)]
mod tests;
