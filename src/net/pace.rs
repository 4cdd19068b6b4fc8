//! How fast one peer's frames are read: a token bucket per frame stream.
//! A peer over the rate is slowed — its next frame is read later, and Yamux
//! flow control then holds it back at the sender — never refused, so an
//! honest device catching up on a large history only waits, and one busy
//! or hostile peer cannot take the loop from everyone else
//! (protocol/transport.md §8).
//!
//! Invariant: the bucket never holds more than [`BURST`] bytes, so a peer
//! that was quiet for a long time still gets at most that much at once.

use std::time::Duration;

use tokio::time::Instant;

/// Bytes per second a peer's frames are read at, once its burst is spent.
pub const RATE: u64 = 8 * 1024 * 1024;
/// Bytes a peer may send at once before it is slowed: more than an honest
/// catch-up of a 100k-message conversation.
pub const BURST: u64 = 64 * 1024 * 1024;

#[derive(Debug)]
pub struct Pace {
    /// Bytes that may be read now without waiting (negative: owed).
    tokens: i64,
    at: Instant,
}

impl Pace {
    pub fn new(now: Instant) -> Pace {
        Pace {
            tokens: BURST as i64,
            at: now,
        }
    }

    /// Takes `n` bytes just read; returns how long to wait before reading
    /// the next frame.
    pub fn take(&mut self, n: usize, now: Instant) -> Duration {
        let earned =
            now.saturating_duration_since(self.at).as_nanos() * u128::from(RATE) / 1_000_000_000;
        self.at = now;
        self.tokens = (self.tokens + i64::try_from(earned).unwrap_or(i64::MAX)).min(BURST as i64);
        self.tokens -= i64::try_from(n).unwrap_or(i64::MAX);
        if self.tokens >= 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(self.tokens.unsigned_abs() * 1_000_000_000 / RATE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    /// A peer that sends past its burst has its frames read later, all of
    /// them: slowed, never refused.
    #[tokio::test]
    async fn a_reader_slows_a_peer_over_its_rate_and_refuses_nothing() {
        use super::super::streams::{encode_frame, read_loop, Counters, StreamMsg};
        let frame = vec![7u8; 1_000_000];
        let n = 72;
        let mut bytes = Vec::new();
        for _ in 0..n {
            encode_frame(&mut bytes, &frame).unwrap();
        }
        let counters = Arc::new(Counters::default());
        let (to_loop, mut from) = tokio::sync::mpsc::channel(4);
        let start = Instant::now();
        let reader = tokio::spawn(read_loop(
            futures::io::Cursor::new(bytes),
            libp2p::PeerId::random(),
            1,
            to_loop,
            counters.clone(),
        ));
        let mut frames = 0;
        while let Some(msg) = from.recv().await {
            match msg {
                StreamMsg::Frame { .. } => frames += 1,
                StreamMsg::Ended { .. } => break,
                StreamMsg::Drained { .. } => {}
            }
        }
        reader.await.unwrap();
        assert_eq!(frames, n);
        assert!(counters.slowed.load(Ordering::SeqCst) > 0);
        // 72 MB against a 64 MiB burst at 8 MiB/s: about 0.6 s of waiting.
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(500), "{waited:?}");
    }

    #[test]
    fn a_burst_passes_then_the_rate_holds() {
        let t0 = Instant::now();
        let mut p = Pace::new(t0);
        let mib = 1024 * 1024;
        // The burst: 64 frames of 1 MiB at once, no wait.
        for _ in 0..64 {
            assert_eq!(p.take(mib, t0), Duration::ZERO);
        }
        // One more MiB at once: an eighth of a second at 8 MiB/s.
        assert_eq!(p.take(mib, t0), Duration::from_millis(125));
        // After waiting that long, the next MiB again costs an eighth.
        let t1 = t0 + Duration::from_millis(125);
        assert_eq!(p.take(mib, t1), Duration::from_millis(125));
        // A long quiet refills the bucket, never past the burst.
        let t2 = t1 + Duration::from_secs(3600);
        assert_eq!(p.take(mib, t2), Duration::ZERO);
        assert_eq!(p.tokens, (BURST - mib as u64) as i64);
    }
}
