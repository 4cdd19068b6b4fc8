//! The frame streams' tests: framing, the writer's order, how readers end.

use super::*;
use futures::io::Cursor;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Gives its bytes, then never anything more (a peer that stalls).
struct Stall(Cursor<Vec<u8>>);

impl AsyncRead for Stall {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.0).poll_read(cx, buf) {
            Poll::Ready(Ok(0)) => Poll::Pending,
            other => other,
        }
    }
}

fn stall_after(bytes: &[u8]) -> Stall {
    Stall(Cursor::new(bytes.to_vec()))
}

fn claim(len: usize, then: &[u8]) -> Vec<u8> {
    let mut b = (len as u32).to_be_bytes().to_vec();
    b.extend_from_slice(then);
    b
}

fn framed(frames: &[&[u8]]) -> Vec<u8> {
    let mut buf = Vec::new();
    for f in frames {
        encode_frame(&mut buf, f).unwrap();
    }
    buf
}

/// Hole 3 (issue 18): a prefix claiming the largest frame, and ten
/// bytes, cost those ten bytes and room for one more read, not a
/// megabyte, and the charge is gone once the read is dropped.
#[tokio::test]
async fn a_claimed_length_is_not_allocated_before_its_bytes_arrive() {
    let held = AtomicUsize::new(0);
    let mut peer = stall_after(&claim(MAX_FRAME_LEN, &[7; 10]));
    let mut read = Box::pin(read_frame(&mut peer, &held));
    assert!(futures::poll!(&mut read).is_pending());
    let charged = held.load(Ordering::SeqCst);
    assert!(
        (10..=10 + READ_CHUNK).contains(&charged),
        "{charged} bytes held for a frame of which 10 arrived"
    );
    drop(read);
    assert_eq!(held.load(Ordering::SeqCst), 0);

    // Whole frames are read exactly, in chunks, and nothing stays held.
    let body: Vec<u8> = (0..MAX_FRAME_LEN).map(|i| i as u8).collect();
    let mut r = Cursor::new(claim(body.len(), &body));
    assert_eq!(read_frame(&mut r, &held).await.unwrap(), Some(body));
    assert_eq!(held.load(Ordering::SeqCst), 0);
}

/// A frame that has begun must end in time; waiting for one to begin
/// has no deadline.
#[tokio::test]
async fn a_stalled_frame_is_a_violation_after_its_deadline() {
    let held = AtomicUsize::new(0);
    let short = Duration::from_millis(50);
    for begun in [vec![0, 0], claim(100, &[1; 20])] {
        let e = read_frame_within(&mut stall_after(&begun), &held, short)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
        assert_eq!(held.load(Ordering::SeqCst), 0);
    }
    let mut idle = stall_after(&[]);
    let mut read = Box::pin(read_frame_within(&mut idle, &held, Duration::ZERO));
    assert!(futures::poll!(&mut read).is_pending());
    assert!(futures::poll!(&mut read).is_pending());
}

#[tokio::test]
async fn frames_round_trip_and_limits_hold() {
    let held = AtomicUsize::new(0);
    let bytes = framed(&[b"hello", b"", b"again"]);
    assert_eq!(bytes[..4], [0, 0, 0, 5]);
    let mut r = Cursor::new(bytes);
    for want in [&b"hello"[..], b"", b"again"] {
        assert_eq!(read_frame(&mut r, &held).await.unwrap().unwrap(), want);
    }
    assert_eq!(read_frame(&mut r, &held).await.unwrap(), None);

    let over = (MAX_FRAME_LEN as u32 + 1).to_be_bytes();
    let e = read_frame(&mut Cursor::new(over.to_vec()), &held)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    assert!(encode_frame(&mut Vec::new(), &vec![0; MAX_FRAME_LEN + 1]).is_err());

    for cut in [vec![0, 0], vec![0, 0, 0, 9, 1]] {
        let e = read_frame(&mut Cursor::new(cut), &held).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }
    assert_eq!(held.load(Ordering::SeqCst), 0);
}

/// A writer's run to its end over `queued` (queued before it starts, the
/// session closing), and what it leaves.
struct Written {
    peer: PeerId,
    out: Vec<u8>,
    queue: Arc<Queue>,
    counters: Arc<Counters>,
    to_loop: mpsc::Sender<StreamMsg>,
    from_tasks: mpsc::Receiver<StreamMsg>,
}

async fn write_all(queued: Vec<(Prio, Vec<u8>)>, epoch: u64) -> Written {
    let peer = PeerId::random();
    let (to_loop, from_tasks) = mpsc::channel(64);
    let queue = Arc::new(Queue::default());
    let (tx, rx) = mpsc::unbounded_channel();
    for (prio, f) in queued {
        queue.frames.fetch_add(1, Ordering::SeqCst);
        queue.bytes.fetch_add(f.len(), Ordering::SeqCst);
        tx.send((prio, f)).unwrap();
    }
    queue.closing.store(true, Ordering::SeqCst);
    let mut out = Cursor::new(Vec::new());
    let counters = Arc::new(Counters::default());
    let (q, c, l) = (queue.clone(), counters.clone(), to_loop.clone());
    write_loop(&mut out, rx, q, peer, epoch, l, c).await;
    Written {
        peer,
        out: out.into_inner(),
        queue,
        counters,
        to_loop,
        from_tasks,
    }
}

/// transport.md §5.1: what waits for the writer goes session frames
/// first, then STAT, urgent, routine, history; each lane in order.
#[tokio::test]
async fn a_writer_writes_what_waits_by_rank_and_each_lane_in_order() {
    use crate::sendq::Rank;
    let queued = [
        (Prio::doc([1; 16], Rank::History), b"history 1".to_vec()),
        (Prio::doc([1; 16], Rank::History), b"history 2".to_vec()),
        (Prio::ANNOUNCE, b"heads".to_vec()),
        (Prio::doc([2; 16], Rank::Routine), b"routine".to_vec()),
        (Prio::doc([3; 16], Rank::Stat), b"stat".to_vec()),
        (Prio::mail(Rank::Urgent), b"urgent envelope".to_vec()),
        (Prio::SESSION, b"catalog".to_vec()),
    ];
    let w = write_all(queued.to_vec(), 1).await;
    assert!(w.queue.is_empty());
    let (peer, to_loop, mut from_tasks) = (w.peer, w.to_loop, w.from_tasks);
    read_loop(Cursor::new(w.out), peer, 2, to_loop, w.counters).await;
    let mut written = Vec::new();
    while let Ok(m) = from_tasks.try_recv() {
        if let StreamMsg::Frame { frame, .. } = m {
            written.push(String::from_utf8(frame).unwrap());
        }
    }
    assert_eq!(
        written,
        [
            "catalog",
            "stat",
            "urgent envelope",
            "heads",
            "routine",
            "history 1",
            "history 2"
        ]
    );
}

#[tokio::test]
async fn a_writer_batches_in_order_and_a_reader_reports_how_it_ended() {
    let frames: Vec<Vec<u8>> = (0..50u8).map(|i| vec![i; i as usize * 100]).collect();
    let queued = frames.iter().map(|f| (Prio::SESSION, f.clone())).collect();
    let w = write_all(queued, 7).await;
    let (peer, to_loop, mut from_tasks) = (w.peer, w.to_loop, w.from_tasks);
    let (queue, counters) = (w.queue, w.counters);
    assert!(matches!(
        from_tasks.try_recv(),
        Ok(StreamMsg::Drained { epoch: 7, .. })
    ));
    assert!(queue.is_empty());
    assert_eq!(queue.bytes.load(Ordering::SeqCst), 0);

    let mut written = w.out;
    written.extend_from_slice(&[0, 0]); // a torn prefix after the frames
    read_loop(Cursor::new(written), peer, 9, to_loop, counters.clone()).await;
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
    assert_eq!(counters.readers.load(Ordering::SeqCst), 0);
    assert_eq!(counters.writers.load(Ordering::SeqCst), 0);
}

/// Hole 3 (issue 18): a reader waiting on a stream that is never woken
/// again (Yamux after its connection closed) ends when its session's
/// `Tasks` are dropped, and with it the buffer it held.
#[tokio::test]
async fn a_stuck_reader_ends_with_its_session() {
    let counters = Arc::new(Counters::default());
    let (to_loop, _from_tasks) = mpsc::channel(4);
    let mut tasks = Tasks::default();
    let stuck = stall_after(&claim(MAX_FRAME_LEN, &[1; 1000]));
    spawn_reader(
        &mut tasks,
        stuck,
        PeerId::random(),
        1,
        to_loop,
        counters.clone(),
    );
    let held = |c: &Counters| {
        (
            c.readers.load(Ordering::SeqCst),
            c.frame_bytes.load(Ordering::SeqCst),
        )
    };
    while held(&counters).1 == 0 {
        tokio::task::yield_now().await;
    }
    assert_eq!(held(&counters).0, 1);
    drop(tasks);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while held(&counters) != (0, 0) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?} still held",
            held(&counters)
        );
        tokio::task::yield_now().await;
    }
}
