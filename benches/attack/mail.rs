//! The mailbox at its quota (issue 25), against a real node: devices of
//! the team hand it sealed envelopes it cannot open (random slots and
//! bodies, so every one is tried and kept), more than its bounds allow
//! (protocol/sealed.md §4.1: 8,192 envelopes, 32 MiB, 8 MiB first handed
//! over by one neighbour), once as few large envelopes (the byte bound) and
//! once as many small ones (the count bound).
//!
//! Invariant: each member is a new device (the per-neighbour bound applies
//! to each), and the phase waits, with a deadline, until the node has
//! accounted for every envelope offered: held, dropped for a newer one, or
//! not taken.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use huddle::sealed::{Class, Envelope, Slot, DONE_LEN, SLOT_LEN};
use huddle::wire::{Frame, MAX_FRAME_LEN, MAX_SEALED_PER_FRAME};
use libp2p::Multiaddr;
use rand_chacha::rand_core::{RngCore, SeedableRng};

use super::member::{handshake, Member};
use super::node::{Probe, Sample};
use super::peer;

const DEADLINE: Duration = Duration::from_secs(120);

/// One way of filling the mailbox.
pub(crate) struct Fill {
    pub(crate) members: usize,
    pub(crate) per_member: usize,
    pub(crate) body_len: usize,
}

/// What the node showed once it had dealt with every envelope.
pub(crate) struct Filled {
    pub(crate) offered: u64,
    pub(crate) offered_bytes: u64,
    pub(crate) secs: f64,
    pub(crate) at: Sample,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

/// An envelope that decodes but that nobody can open: one slot, a body of
/// `body_len` bytes, every byte random, its own tag (so the per-tag bound
/// is not what stops it), routine, expiring in six days.
fn envelope(rng: &mut impl RngCore, body_len: usize) -> Vec<u8> {
    let mut tag = [0u8; 16];
    rng.fill_bytes(&mut tag);
    let mut done = [0u8; DONE_LEN];
    rng.fill_bytes(&mut done);
    let mut noise = vec![0u8; SLOT_LEN];
    rng.fill_bytes(&mut noise);
    let mut nonce = [0u8; 24];
    rng.fill_bytes(&mut nonce);
    let mut body = vec![0u8; body_len.max(16)];
    rng.fill_bytes(&mut body);
    Envelope {
        class: Class::Routine,
        tag,
        expires: now_ms() + 6 * 24 * 3600 * 1000,
        slots: vec![Slot { done, noise }],
        nonce,
        body,
    }
    .encode()
}

/// Everything the node counts for an offered envelope.
pub(crate) fn accounted(s: &Sample) -> u64 {
    s.r.mailbox_envelopes as u64 + s.r.mailbox_dropped.iter().sum::<u64>()
}

/// Hands the node `f.members × f.per_member` envelopes, one new member
/// device at a time (`seed` names the first), and waits until each is
/// held, dropped or refused. `already` is what the node accounted for
/// before.
pub(crate) async fn fill(
    to: &Multiaddr,
    admit: impl Fn(u64) -> Member,
    seed: u64,
    f: &Fill,
    probe: &Probe,
    already: u64,
) -> Result<Filled, String> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let t = std::time::Instant::now();
    let (mut offered, mut offered_bytes) = (0u64, 0u64);
    let mut at = Sample::default();
    for m in 0..f.members {
        let member = admit(seed + m as u64);
        let mut c = peer::connect(to.clone(), member.key.clone(), DEADLINE).await?;
        handshake(&mut c, &member.cert).await?;
        let mut frame = Vec::new();
        let mut len = 0;
        for i in 0..f.per_member {
            let e = envelope(&mut rng, f.body_len);
            offered += 1;
            offered_bytes += e.len() as u64;
            len += e.len() + 8;
            frame.push(e);
            if frame.len() == MAX_SEALED_PER_FRAME
                || len + f.body_len + 1024 > MAX_FRAME_LEN - 64
                || i + 1 == f.per_member
            {
                let envelopes = std::mem::take(&mut frame);
                c.send(&Frame::Sealed { envelopes }).await?;
                len = 0;
            }
        }
        let want = already + offered;
        let (s, seen) = probe.until(DEADLINE, move |s| accounted(s) >= want).await;
        if !seen {
            return Err(format!(
                "member {m}: the node accounted for {} of {want} envelopes within {DEADLINE:?}",
                accounted(&s)
            ));
        }
        at = s;
        // Our connection's tasks end once the runtime runs again: wait
        // until the node has seen it go.
        drop(c);
        let (s, gone) = probe.until(DEADLINE, |s| s.r.sessions == 0).await;
        if !gone {
            return Err(format!(
                "member {m}: the node still holds our session ({s:?})"
            ));
        }
    }
    Ok(Filled {
        offered,
        offered_bytes,
        secs: t.elapsed().as_secs_f64(),
        at,
    })
}
