//! Hole 3 of issue 18, against a real node: a wave of strangers (valid
//! Noise, no certificate), each of which opens its frame stream, sends a
//! prefix claiming a 1 MiB frame and [`SENT`] bytes of it (less than the
//! claim), then stalls until the node cuts it.
//!
//! Invariant: every stranger ends within [`CUT_DEADLINE`], cut or not,
//! and the wave reports which; nothing of a stranger outlives its wave.
//!
//! The node bounds the handshakes under way per source address (4 at a
//! time, `limits::PENDING_PER_ADDRESS`), and every stranger here dials
//! from 127.0.0.1 (libp2p's TCP transport binds a dial socket to the
//! unspecified address, so a listener on 127.0.0.N does not change the
//! source): strangers connect four at a time, each batch waiting until
//! its connections are established. They then all stall together.

use std::sync::Arc;
use std::time::{Duration, Instant};

use huddle::wire::{Reason, MAX_FRAME_LEN};
use libp2p::identity::Keypair;
use libp2p::Multiaddr;
use tokio::sync::Semaphore;

use super::peer;

/// Bytes of the claimed frame a stranger sends (~1 MB, under the 1 MiB claim).
pub(crate) const SENT: usize = 1_000_000;
/// Handshakes a wave keeps under way at once (the node's bound per address).
const AT_ONCE: usize = 4;
/// How long a stranger waits to be cut: the node's hello timeout (10 s)
/// with a wide margin for a loaded machine.
const CUT_DEADLINE: Duration = Duration::from_secs(60);
const CONNECT_DEADLINE: Duration = Duration::from_secs(30);

/// What one wave did.
#[derive(Debug, Default)]
pub(crate) struct Wave {
    /// Strangers whose frame stream opened and who sent their bytes.
    pub(crate) stalled: usize,
    /// Of those, how many the node cut, and with which reasons.
    pub(crate) cut: usize,
    pub(crate) hello_timeouts: usize,
    /// From the wave's first dial to its last stranger cut.
    pub(crate) secs: f64,
    pub(crate) errors: Vec<String>,
}

/// Runs one wave of `n` strangers against `to`.
pub(crate) async fn wave(to: &Multiaddr, n: usize) -> Wave {
    let t = Instant::now();
    let gate = Arc::new(Semaphore::new(AT_ONCE));
    let mut tasks = Vec::new();
    for _ in 0..n {
        let (to, gate) = (to.clone(), gate.clone());
        tasks.push(tokio::spawn(async move { stranger(to, gate).await }));
    }
    let mut w = Wave::default();
    for task in tasks {
        match task.await {
            Ok(Ok(reason)) => {
                w.stalled += 1;
                w.cut += 1;
                w.hello_timeouts += usize::from(reason == Some(Reason::HelloTimeout));
            }
            Ok(Err((stalled, e))) => {
                w.stalled += usize::from(stalled);
                w.errors.push(e);
            }
            Err(e) => w.errors.push(format!("stranger task: {e}")),
        }
    }
    w.secs = t.elapsed().as_secs_f64();
    w
}

/// One stranger: the reason it was cut with, or whether it got as far as
/// stalling and what went wrong.
async fn stranger(to: Multiaddr, gate: Arc<Semaphore>) -> Result<Option<Reason>, (bool, String)> {
    let permit = gate
        .acquire_owned()
        .await
        .map_err(|e| (false, e.to_string()))?;
    let mut conn = peer::connect(to, Keypair::generate_ed25519(), CONNECT_DEADLINE)
        .await
        .map_err(|e| (false, e))?;
    drop(permit);
    let mut bytes = (MAX_FRAME_LEN as u32).to_be_bytes().to_vec();
    bytes.resize(4 + SENT, 0x55);
    conn.write(&bytes).await.map_err(|e| (false, e))?;
    conn.cut(CUT_DEADLINE).await.map_err(|e| (true, e))
}
