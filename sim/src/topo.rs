//! Topology over time: discovery and dialing, connections opening, breaking
//! and closing, partitions and heals, intermittent links, and the final heal.
//!
//! Invariants:
//! - Two devices have at most one connection; a new one opens only after
//!   both sides were told the old one closed (the shell reports a peer gone
//!   only when its last connection closes).
//! - A device that refused a peer for a membership reason is redialled only
//!   in the background, so refusals cannot keep the network from quiet.

use huddle::node::Input;
use huddle::wire::Reason;
use huddle::DeviceId;
use rand::Rng;

use crate::net::{pair, Dev, Route};
use crate::queue::Ev;
use crate::scenario::LinkUp;
use crate::trace::Kind;
use crate::world::World;

/// A refused pair is retried this much later.
const REFUSED_RETRY_US: u64 = 10 * 60 * 1_000_000;
const MIN_BACKOFF_US: u64 = 1_000_000;
const MAX_BACKOFF_US: u64 = 60_000_000;
/// A connection that lived this long resets the redial backoff.
const STABLE_US: u64 = 10_000_000;
/// How long a peer takes to notice a silently dead connection.
const DETECT_US: [u64; 2] = [2_000_000, 20_000_000];

#[derive(Clone, Debug, Default)]
pub struct PairState {
    pub dial_pending: bool,
    pub backoff: u64,
    /// The last connection ended in a membership refusal.
    pub refused: bool,
}

pub fn is_membership_refusal(r: Reason) -> bool {
    matches!(
        r,
        Reason::NotAMember
            | Reason::WrongTeam
            | Reason::BadSignature
            | Reason::Expired
            | Reason::NotYetValid
            | Reason::Revoked
            | Reason::WrongDevice
    )
}

fn reachable(w: &World, a: Dev, b: Dev) -> Option<Route> {
    if a == b || !w.devs[a].up() || !w.devs[b].up() {
        return None;
    }
    w.net.route(a, b)
}

/// Schedules a dial if `a` and `b` can reach each other and are not connected.
fn ensure(w: &mut World, a: Dev, b: Dev) {
    let Some(route) = reachable(w, a, b) else {
        return;
    };
    if w.net.session_of(a, b).is_some_and(|s| s.open) {
        return;
    }
    let ps = w.pairs.entry(pair(a, b)).or_default();
    if ps.dial_pending {
        return;
    }
    ps.dial_pending = true;
    let background = ps.refused;
    let delay = if background {
        REFUSED_RETRY_US
    } else {
        match route {
            Route::Lan { segment } => {
                let site = &w.sc.site[w.net.site_of_segment(segment)];
                let [lo, hi] = site.discovery;
                w.rng.gen_range(lo.us()..=hi.us().max(lo.us()))
            }
            Route::Link { link } => {
                let [lo, hi] = w.net.links[link].redial;
                w.rng.gen_range(lo..=hi)
            }
        }
    };
    w.q.push(w.now + delay, Ev::Dial { a, b, background });
}

/// Re-evaluates every pair that involves `d`.
pub fn rewire_dev(w: &mut World, d: Dev) {
    for id in w.net.invalid_sessions() {
        break_session(w, id);
    }
    for e in 0..w.devs.len() {
        ensure(w, d, e);
    }
}

/// Re-evaluates every pair.
pub fn rewire_all(w: &mut World) {
    for id in w.net.invalid_sessions() {
        break_session(w, id);
    }
    let n = w.devs.len();
    for a in 0..n {
        if !w.devs[a].up() {
            continue;
        }
        for b in a + 1..n {
            ensure(w, a, b);
        }
    }
}

pub fn dial(w: &mut World, a: Dev, b: Dev) {
    w.pairs.entry(pair(a, b)).or_default().dial_pending = false;
    let Some(route) = reachable(w, a, b) else {
        return;
    };
    if !w.net.can_open(a, b) {
        if !w.net.session_of(a, b).is_some_and(|s| s.open) {
            // The old connection's close is still being reported.
            let ps = w.pairs.entry(pair(a, b)).or_default();
            ps.dial_pending = true;
            let background = ps.refused;
            w.q.push(w.now + 200_000, Ev::Dial { a, b, background });
        }
        return;
    }
    let id = w.net.open(a, b, route, w.now);
    w.counters.sessions += 1;
    w.trace.log(w.now, Kind::Connect, Some(a), Some(b), 0, id);
    let (ida, idb) = (w.devs[a].id, w.devs[b].id);
    w.step(a, Input::PeerConnected { peer: idb });
    if w.devs[b].up() && w.net.sessions.contains_key(&id) {
        w.step(b, Input::PeerConnected { peer: ida });
    }
}

/// Breaks a connection: in-flight frames are lost, both sides notice later.
pub fn break_session(w: &mut World, id: u64) {
    let Some(opened) = w.net.sessions.get(&id).map(|s| s.opened_at) else {
        return;
    };
    let Some((a, b)) = w.net.break_session(id) else {
        return;
    };
    w.counters.breaks += 1;
    w.trace.log(w.now, Kind::Close, Some(a), Some(b), 0, id);
    w.acct.session_closed(id);
    for (d, p) in [(a, b), (b, a)] {
        let delay = if w.devs[d].up() {
            w.rng.gen_range(DETECT_US[0]..=DETECT_US[1])
        } else {
            0
        };
        let inc = w.devs[d].inc;
        w.q.push(
            w.now + delay,
            Ev::Notify {
                session: id,
                dev: d,
                peer: p,
                inc,
            },
        );
    }
    after_close(w, a, b, opened);
}

/// `by` asked to disconnect `peer` (a refusal, or a peer it gave up on).
pub fn disconnect(w: &mut World, by: Dev, peer: DeviceId, reason: Reason) {
    let Some(&to) = w.by_id.get(&peer) else {
        return;
    };
    let Some((id, opened)) = w
        .net
        .session_of(by, to)
        .filter(|s| s.open)
        .map(|s| (s.id, s.opened_at))
    else {
        return;
    };
    w.flush_held(id);
    let Some(drained) = w.net.close_by(id, by, w.now) else {
        return;
    };
    let code = u64::from(reason.code()) + 1;
    w.trace
        .log(w.now, Kind::Close, Some(by), Some(to), code, id);
    w.acct.session_closed(id);
    // A refusal for membership, or for breaking the protocol (a forger's
    // change that breaks the append-only rules), will be refused again:
    // the pair retries slowly in the background, as a dialer backs off.
    if is_membership_refusal(reason) || reason == Reason::ProtocolViolation {
        w.pairs.entry(pair(by, to)).or_default().refused = true;
    }
    for (d, p, at) in [(by, to, w.now), (to, by, drained)] {
        let inc = w.devs[d].inc;
        w.q.push(
            at,
            Ev::Notify {
                session: id,
                dev: d,
                peer: p,
                inc,
            },
        );
    }
    after_close(w, by, to, opened);
}

/// Redial policy after a connection ended: exponential backoff for
/// connections that die young, a slow background retry after a refusal.
fn after_close(w: &mut World, a: Dev, b: Dev, opened: u64) {
    let now = w.now;
    let ps = w.pairs.entry(pair(a, b)).or_default();
    ps.backoff = if now - opened < STABLE_US {
        (ps.backoff * 2).clamp(MIN_BACKOFF_US, MAX_BACKOFF_US)
    } else {
        MIN_BACKOFF_US
    };
    if ps.dial_pending {
        return;
    }
    ps.dial_pending = true;
    let background = ps.refused;
    let delay = if background {
        REFUSED_RETRY_US
    } else {
        ps.backoff + w.rng.gen_range(0..ps.backoff / 2 + 1)
    };
    w.q.push(now + delay, Ev::Dial { a, b, background });
}

/// Marks a heal: convergence time and post-heal traffic count from here.
pub fn mark_heal(w: &mut World) {
    w.counters.heal_at = Some(w.now);
    w.acct.heal();
    w.watch.start(&w.devs, &w.ledger, w.now);
}

pub fn set_segment(w: &mut World, d: Dev, seg: u32) {
    if w.net.segment[d] != seg {
        w.net.segment[d] = seg;
        w.trace
            .log(w.now, Kind::Move, Some(d), None, u64::from(seg), 0);
    }
}

pub fn heal(w: &mut World) {
    for d in 0..w.devs.len() {
        let home = w.net.home[d];
        set_segment(w, d, home);
    }
    rewire_all(w);
    mark_heal(w);
}

pub fn unsplit(w: &mut World, devices: Vec<Dev>) {
    if w.final_heal {
        return;
    }
    for d in devices {
        let home = w.net.home[d];
        set_segment(w, d, home);
    }
    rewire_all(w);
    mark_heal(w);
}

pub fn schedule_flip(w: &mut World, l: usize) {
    let LinkUp::Intermittent { fraction, mean_up } = w.sc.link[l].up.clone() else {
        return;
    };
    let f = fraction.clamp(0.001, 0.999);
    let mean = if w.net.links[l].up {
        mean_up.us() as f64
    } else {
        mean_up.us() as f64 * (1.0 - f) / f
    };
    let u: f64 = w.rng.gen_range(f64::EPSILON..1.0);
    let after = (-u.ln() * mean) as u64;
    w.q.push(w.now + after.max(1), Ev::LinkFlip(l));
}

pub fn link_flip(w: &mut World, l: usize) {
    if w.final_heal {
        return;
    }
    let up = !w.net.links[l].up;
    w.net.links[l].up = up;
    w.trace
        .log(w.now, Kind::Link, None, None, l as u64, u64::from(up));
    rewire_all(w);
    schedule_flip(w, l);
}

/// Everything heals: partitions end, every link comes up for good, every
/// device is up (late joiners join). The invariants are checked once the
/// network is quiet after this.
pub fn final_heal(w: &mut World) {
    w.final_heal = true;
    w.trace.log(w.now, Kind::Heal, None, None, 0, 0);
    let mut changed = false;
    for d in 0..w.devs.len() {
        w.devs[d].crash_mid_step = false;
        let home = w.net.home[d];
        if w.net.segment[d] != home {
            changed = true;
            set_segment(w, d, home);
        }
    }
    for l in &mut w.net.links {
        changed |= !l.up;
        l.up = true;
    }
    for d in 0..w.devs.len() {
        if !w.devs[d].up() {
            changed = true;
            w.boot(d);
        }
    }
    rewire_all(w);
    if changed || w.counters.heal_at.is_none() {
        mark_heal(w);
    }
}
