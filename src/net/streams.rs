//! Reading and writing the long-lived frame streams (`/huddle/sync/2`):
//! the framing, one reader task per inbound stream and one writer task per
//! peer. `protocol/transport.md` §4–§6 is the normative description.
//!
//! On a stream: `u32` big-endian length ‖ frame bytes, again and again, in
//! one direction, for the whole session.
//!
//! Invariants:
//! - nothing is allocated for a frame before its length prefix has been
//!   checked against [`MAX_FRAME_LEN`]; a larger prefix or a stream that
//!   ends inside a frame is a framing violation, and nothing of it reaches
//!   the core;
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

use crate::wire::MAX_FRAME_LEN;

/// A write to a peer's stream (a batch of frames) must finish within this.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
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

/// Reads one length-prefixed frame; `None` if the stream ended cleanly
/// before a prefix.
pub async fn read_frame<T: AsyncRead + Unpin>(io: &mut T) -> io::Result<Option<Vec<u8>>> {
    let mut prefix = [0u8; 4];
    let mut got = 0;
    while got < prefix.len() {
        match io.read(&mut prefix[got..]).await? {
            0 if got == 0 => return Ok(None),
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
    let mut frame = vec![0u8; len];
    io.read_exact(&mut frame).await.map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            invalid(format!("the stream ended inside a frame of {len} bytes"))
        } else {
            e
        }
    })?;
    Ok(Some(frame))
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
) {
    let why = loop {
        match read_frame(&mut stream).await {
            Ok(Some(frame)) => {
                let msg = StreamMsg::Frame { peer, epoch, frame };
                if to_loop.send(msg).await.is_err() {
                    return;
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

/// Writes the frames the loop queues for one peer, gathering what is
/// waiting into one write. Ends (closing the stream) when the loop drops
/// its sender, or once drained after [`Queue::closing`] was set.
pub async fn write_loop<T: AsyncWrite + Unpin>(
    mut stream: T,
    mut frames: mpsc::UnboundedReceiver<Vec<u8>>,
    queue: Arc<Queue>,
    peer: PeerId,
    epoch: u64,
    to_loop: mpsc::Sender<StreamMsg>,
) {
    let mut buf = Vec::new();
    while let Some(first) = frames.recv().await {
        buf.clear();
        let (mut n, mut bytes) = (1, first.len());
        let mut result = encode_frame(&mut buf, &first);
        while result.is_ok() && buf.len() < WRITE_BATCH {
            let Ok(f) = frames.try_recv() else { break };
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

/// Starts the reader of an inbound stream.
pub fn spawn_reader(stream: Stream, peer: PeerId, epoch: u64, to_loop: mpsc::Sender<StreamMsg>) {
    tokio::spawn(read_loop(stream, peer, epoch, to_loop));
}

/// Starts the writer of our stream to a peer; returns where to queue frames.
pub fn spawn_writer(
    stream: Stream,
    queue: Arc<Queue>,
    peer: PeerId,
    epoch: u64,
    to_loop: mpsc::Sender<StreamMsg>,
) -> mpsc::UnboundedSender<Vec<u8>> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(write_loop(stream, rx, queue, peer, epoch, to_loop));
    tx
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;
    use futures::io::Cursor;

    fn framed(frames: &[&[u8]]) -> Vec<u8> {
        let mut buf = Vec::new();
        for f in frames {
            encode_frame(&mut buf, f).unwrap();
        }
        buf
    }

    #[test]
    fn frames_round_trip_and_limits_hold() {
        let bytes = framed(&[b"hello", b"", b"again"]);
        assert_eq!(bytes[..4], [0, 0, 0, 5]);
        let mut r = Cursor::new(bytes);
        assert_eq!(block_on(read_frame(&mut r)).unwrap().unwrap(), b"hello");
        assert_eq!(block_on(read_frame(&mut r)).unwrap().unwrap(), b"");
        assert_eq!(block_on(read_frame(&mut r)).unwrap().unwrap(), b"again");
        assert_eq!(block_on(read_frame(&mut r)).unwrap(), None);

        let over = (MAX_FRAME_LEN as u32 + 1).to_be_bytes();
        let e = block_on(read_frame(&mut Cursor::new(over.to_vec()))).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(encode_frame(&mut Vec::new(), &vec![0; MAX_FRAME_LEN + 1]).is_err());

        for cut in [vec![0, 0], vec![0, 0, 0, 9, 1]] {
            let e = block_on(read_frame(&mut Cursor::new(cut))).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        }
    }

    #[tokio::test]
    async fn a_writer_batches_in_order_and_a_reader_reports_how_it_ended() {
        let peer = PeerId::random();
        let (to_loop, mut from_tasks) = mpsc::channel(64);
        let queue = Arc::new(Queue::default());
        let (tx, rx) = mpsc::unbounded_channel();
        let frames: Vec<Vec<u8>> = (0..50u8).map(|i| vec![i; i as usize * 100]).collect();
        for f in &frames {
            queue.frames.fetch_add(1, Ordering::SeqCst);
            queue.bytes.fetch_add(f.len(), Ordering::SeqCst);
            tx.send(f.clone()).unwrap();
        }
        queue.closing.store(true, Ordering::SeqCst);
        let mut out = Cursor::new(Vec::new());
        write_loop(&mut out, rx, queue.clone(), peer, 7, to_loop.clone()).await;
        assert!(matches!(
            from_tasks.try_recv(),
            Ok(StreamMsg::Drained { epoch: 7, .. })
        ));
        assert!(queue.is_empty());
        assert_eq!(queue.bytes.load(Ordering::SeqCst), 0);

        let mut written = out.into_inner();
        written.extend_from_slice(&[0, 0]); // a torn prefix after the frames
        read_loop(Cursor::new(written), peer, 9, to_loop).await;
        for f in &frames {
            match from_tasks.recv().await {
                Some(StreamMsg::Frame {
                    frame, epoch: 9, ..
                }) => assert_eq!(&frame, f),
                other => panic!("expected a frame, got {other:?}"),
            }
        }
        assert!(matches!(
            from_tasks.recv().await,
            Some(StreamMsg::Ended {
                why: Ended::Violation(_),
                ..
            })
        ));
    }
}
