//! The network model: segments (LANs) and inter-site links, connections
//! with session ids, and per-direction in-order delivery with latency,
//! bandwidth and loss.
//!
//! Loss, duplication and reordering are modelled the way they show on a
//! real TCP/QUIC connection (see sim/README.md): a lost segment is extra
//! latency (a retransmission); too many losses in a row break the
//! connection; a duplicate is suppressed by the transport; and a frame that
//! surfaces after its connection died (a "ghost") is dropped because its
//! session id is stale.
//!
//! A sender commits at most [`COMMIT_BYTES`] to a pipe ahead of the wire
//! (Yamux's window); what it sends past that is **held**
//! in a [`SendQueue`] per pipe and goes to the wire as the pipe frees, in
//! `huddle::sendq`'s order (transport.md §5.1): STAT and urgent before
//! routine, routine before history, each lane of a session in order. On a
//! link shared by several sessions, the queue orders them all, as a
//! priority-queueing router would.
//!
//! Invariant: inside one session each direction delivers frames exactly
//! once and, within a lane, in the order they were sent; a frame is never
//! delivered into any session but the one it was sent on.

use std::collections::{BTreeMap, BTreeSet};

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use huddle::sendq::{Lane, Prio, SendQueue};

use crate::scenario::{Latency, Scenario};

/// A device's index in the simulation.
pub type Dev = usize;

/// Consecutive losses of one frame after which the connection breaks.
pub const BREAK_AFTER_LOSSES: u32 = 6;
/// The smallest retransmission timeout.
const MIN_RTO_US: u64 = 200_000;
/// Bytes a sender commits to a pipe ahead of the wire: Yamux's stream
/// window (256 KiB, its initial credit; it grows only when a link carries
/// more than that per round trip, never on a thin one): the node's writer
/// blocks once the window is full, and what it queues meanwhile goes in
/// order of rank.
pub const COMMIT_BYTES: f64 = 262_144.0;

/// A sender's pipe: a session's direction on a LAN, or a link's direction
/// (shared by the sessions over it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PipeKey {
    Lan { session: u64, dir: usize },
    Link { link: usize, dir: usize },
}

/// A frame held back while its pipe is busy.
pub struct Held {
    pub session: u64,
    pub from: Dev,
    pub to: Dev,
    pub frame: Vec<u8>,
}

#[derive(Clone, Copy, Debug)]
pub struct Profile {
    pub latency: Latency,
    /// Bits per microsecond (= Mbit/s).
    pub bits_per_us: f64,
    pub loss: f64,
}

impl Profile {
    pub fn sample_latency(&self, rng: &mut ChaCha8Rng) -> u64 {
        let (lo, hi) = (self.latency.min.us(), self.latency.max.us().max(1));
        let mut l = rng.gen_range(lo..=hi);
        if self.latency.tail > 0.0 && rng.gen_bool(self.latency.tail.min(1.0)) {
            l += rng.gen_range(0..=10 * hi);
        }
        l
    }

    fn rto(&self) -> u64 {
        MIN_RTO_US.max(3 * self.latency.max.us())
    }
}

/// The path a session runs over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    Lan { segment: u32 },
    Link { link: usize },
}

#[derive(Clone, Copy, Debug, Default)]
struct Pipe {
    busy_until: u64,
}

#[derive(Clone, Debug)]
pub struct Direction {
    enqueued: u64,
    delivered: u64,
    /// Highest sequence number that may still be delivered.
    accept_upto: u64,
    last_arrival: u64,
    pipe: Pipe,
    pub in_flight: usize,
    /// Frames held back for a busy pipe.
    pub held: usize,
}

impl Direction {
    fn new() -> Direction {
        Direction {
            enqueued: 0,
            delivered: 0,
            accept_upto: u64::MAX,
            last_arrival: 0,
            pipe: Pipe::default(),
            in_flight: 0,
            held: 0,
        }
    }

    fn open(&self) -> bool {
        self.accept_upto == u64::MAX
    }
}

#[derive(Clone, Debug)]
pub struct Session {
    pub id: u64,
    /// `a < b`; direction 0 is a → b.
    pub a: Dev,
    pub b: Dev,
    pub route: Route,
    pub opened_at: u64,
    pub dirs: [Direction; 2],
    pub open: bool,
    /// PeerDisconnected notifications not yet delivered.
    pub notifies: u8,
}

impl Session {
    pub fn dir_from(&self, from: Dev) -> usize {
        usize::from(from != self.a)
    }

    pub fn peer_of(&self, d: Dev) -> Dev {
        if d == self.a {
            self.b
        } else {
            self.a
        }
    }

    fn finished(&self) -> bool {
        !self.open && self.notifies == 0 && self.dirs.iter().all(|d| d.in_flight == 0)
    }
}

pub struct LinkState {
    pub name: String,
    pub up: bool,
    a_site: usize,
    b_site: usize,
    pairs: BTreeSet<(Dev, Dev)>,
    pub profile: Profile,
    pub redial: [u64; 2],
    pipes: [Pipe; 2],
}

/// A frame accepted for transmission.
pub struct Sent {
    pub session: u64,
    pub dir: usize,
    pub seq: u64,
    pub arrival: u64,
    /// When a late ghost copy of it surfaces, if one does.
    pub ghost: Option<u64>,
}

/// Why a frame was not accepted.
#[derive(Debug, PartialEq, Eq)]
pub enum SendError {
    /// No open connection to that peer (the node does not know yet).
    NotConnected,
    /// The frame was lost too many times: the connection breaks.
    Broken(u64),
}

pub struct Net {
    pub segment: Vec<u32>,
    pub home: Vec<u32>,
    /// Segment → the site whose profile it has.
    seg_site: Vec<usize>,
    site_profiles: Vec<Profile>,
    pub links: Vec<LinkState>,
    pub sessions: BTreeMap<u64, Session>,
    by_pair: BTreeMap<(Dev, Dev), u64>,
    next_session: u64,
    stale_dup: f64,
    held: BTreeMap<PipeKey, SendQueue<Held, (u64, Lane)>>,
}

pub fn pair(a: Dev, b: Dev) -> (Dev, Dev) {
    (a.min(b), a.max(b))
}

impl Net {
    /// `homes[d]` is the site index of device `d` (outsiders included).
    pub fn new(s: &Scenario, homes: &[usize]) -> Net {
        let site_profiles: Vec<Profile> = s
            .site
            .iter()
            .map(|site| Profile {
                latency: site.latency,
                bits_per_us: site.bandwidth_mbps,
                loss: site.loss,
            })
            .collect();
        let links = s
            .link
            .iter()
            .map(|l| LinkState {
                name: l.name.clone(),
                up: false,
                a_site: s.site_index(&l.a).expect("validated"),
                b_site: s.site_index(&l.b).expect("validated"),
                pairs: l.pairs.iter().map(|[x, y]| pair(*x, *y)).collect(),
                profile: Profile {
                    latency: l.latency,
                    bits_per_us: l.bandwidth_kbps / 1000.0,
                    loss: l.loss,
                },
                redial: [l.redial[0].us(), l.redial[1].us().max(l.redial[0].us())],
                pipes: [Pipe::default(); 2],
            })
            .collect();
        let home: Vec<u32> = homes.iter().map(|h| *h as u32).collect();
        Net {
            segment: home.clone(),
            home,
            seg_site: (0..s.site.len()).collect(),
            site_profiles,
            links,
            sessions: BTreeMap::new(),
            by_pair: BTreeMap::new(),
            next_session: 1,
            stale_dup: s.faults.stale_dup,
            held: BTreeMap::new(),
        }
    }

    /// A fresh segment with the profile of `site` (a partition's half).
    pub fn new_segment(&mut self, site: usize) -> u32 {
        self.seg_site.push(site);
        (self.seg_site.len() - 1) as u32
    }

    pub fn site_of_segment(&self, seg: u32) -> usize {
        self.seg_site[seg as usize]
    }

    fn link_connects(&self, l: usize, a: Dev, b: Dev) -> bool {
        let link = &self.links[l];
        if !link.up {
            return false;
        }
        if !link.pairs.is_empty() {
            return link.pairs.contains(&pair(a, b));
        }
        let base = |d: Dev, site: usize| self.segment[d] == site as u32;
        (base(a, link.a_site) && base(b, link.b_site))
            || (base(a, link.b_site) && base(b, link.a_site))
    }

    /// The path `a` and `b` would connect over now, if any.
    pub fn route(&self, a: Dev, b: Dev) -> Option<Route> {
        if self.segment[a] == self.segment[b] {
            return Some(Route::Lan {
                segment: self.segment[a],
            });
        }
        (0..self.links.len())
            .find(|l| self.link_connects(*l, a, b))
            .map(|link| Route::Link { link })
    }

    pub fn route_valid(&self, r: Route, a: Dev, b: Dev) -> bool {
        match r {
            // Devices that stay together on one switch keep their connection
            // whatever the segment is called after a partition.
            Route::Lan { .. } => self.segment[a] == self.segment[b],
            Route::Link { link } => self.link_connects(link, a, b),
        }
    }

    pub fn profile(&self, r: Route) -> Profile {
        match r {
            Route::Lan { segment } => self.site_profiles[self.site_of_segment(segment)],
            Route::Link { link } => self.links[link].profile,
        }
    }

    /// The session between `a` and `b`, open or still draining.
    pub fn session_of(&self, a: Dev, b: Dev) -> Option<&Session> {
        self.by_pair
            .get(&pair(a, b))
            .and_then(|id| self.sessions.get(id))
    }

    pub fn open(&mut self, a: Dev, b: Dev, route: Route, now: u64) -> u64 {
        let id = self.next_session;
        self.next_session += 1;
        let (a, b) = pair(a, b);
        self.sessions.insert(
            id,
            Session {
                id,
                a,
                b,
                route,
                opened_at: now,
                dirs: [Direction::new(), Direction::new()],
                open: true,
                notifies: 0,
            },
        );
        self.by_pair.insert((a, b), id);
        id
    }

    /// The open session a frame from `from` to `to` goes on, and its pipe.
    pub fn pipe_for(&self, from: Dev, to: Dev) -> Result<(u64, PipeKey), SendError> {
        let Some(&id) = self.by_pair.get(&pair(from, to)) else {
            return Err(SendError::NotConnected);
        };
        let s = &self.sessions[&id];
        let dir = s.dir_from(from);
        if !s.open || !s.dirs[dir].open() {
            return Err(SendError::NotConnected);
        }
        let key = match s.route {
            Route::Lan { .. } => PipeKey::Lan { session: id, dir },
            Route::Link { link } => {
                let forward = self.home[from] == self.links[link].a_site as u32;
                PipeKey::Link {
                    link,
                    dir: usize::from(!forward),
                }
            }
        };
        Ok((id, key))
    }

    /// When the pipe takes its next frame: once no more than
    /// [`COMMIT_BYTES`] wait ahead of the wire.
    pub fn free_at(&self, key: PipeKey) -> u64 {
        let (pipe, profile) = match key {
            PipeKey::Lan { session, dir } => match self.sessions.get(&session) {
                Some(s) => (s.dirs[dir].pipe, self.profile(s.route)),
                None => return 0,
            },
            PipeKey::Link { link, dir } => (self.links[link].pipes[dir], self.links[link].profile),
        };
        let window = (COMMIT_BYTES * 8.0 / profile.bits_per_us) as u64;
        pipe.busy_until.saturating_sub(window)
    }

    /// Must a frame for `key` be held (the pipe is busy, or frames wait)?
    pub fn must_hold(&self, key: PipeKey, now: u64) -> bool {
        self.held.contains_key(&key) || self.free_at(key) > now
    }

    /// Holds a frame for `key`; true if it is the first (the caller
    /// schedules the pipe's release).
    pub fn hold(&mut self, key: PipeKey, prio: Prio, h: Held) -> bool {
        if let Some(s) = self.sessions.get_mut(&h.session) {
            s.dirs[s.dir_from(h.from)].held += 1;
        }
        let q = self.held.entry(key).or_default();
        q.push_in((h.session, prio.lane), prio.rank, h);
        q.len() == 1
    }

    /// The next frame held for `key`, in `sendq`'s order.
    pub fn release(&mut self, key: PipeKey) -> Option<Held> {
        let q = self.held.get_mut(&key)?;
        let h = q.pop();
        if q.is_empty() {
            self.held.remove(&key);
        }
        let h = h?;
        self.unheld(&h);
        Some(h)
    }

    /// Everything held of session `id`, in order: a graceful close sends
    /// what was queued before it.
    pub fn release_session(&mut self, id: u64) -> Vec<Held> {
        let mut out = Vec::new();
        let keys: Vec<PipeKey> = self.held.keys().copied().collect();
        for key in keys {
            let q = self.held.get_mut(&key).expect("listed");
            let mut mine = q.take_lanes(|k| k.0 == id);
            if q.is_empty() {
                self.held.remove(&key);
            }
            out.extend(std::iter::from_fn(|| mine.pop()));
        }
        for h in &out {
            self.unheld(h);
        }
        out
    }

    fn unheld(&mut self, h: &Held) {
        if let Some(s) = self.sessions.get_mut(&h.session) {
            let d = s.dir_from(h.from);
            s.dirs[d].held -= 1;
        }
    }

    /// Queues a frame from `from` to `to` on the wire.
    pub fn send(
        &mut self,
        rng: &mut ChaCha8Rng,
        now: u64,
        from: Dev,
        to: Dev,
        len: usize,
    ) -> Result<Sent, SendError> {
        let (id, _) = self.pipe_for(from, to)?;
        let s = &self.sessions[&id];
        let dir = s.dir_from(from);
        let route = s.route;
        let profile = self.profile(route);
        let tx = ((len as f64 * 8.0) / profile.bits_per_us).ceil() as u64;
        let lat = profile.sample_latency(rng);
        let mut extra = 0;
        let mut rto = profile.rto();
        let mut losses = 0;
        while profile.loss > 0.0 && rng.gen_bool(profile.loss.min(0.99)) {
            losses += 1;
            if losses >= BREAK_AFTER_LOSSES {
                return Err(SendError::Broken(id));
            }
            extra += rto;
            rto *= 2;
        }
        let ghost = (self.stale_dup > 0.0 && rng.gen_bool(self.stale_dup.min(1.0)))
            .then(|| rng.gen_range(1_000_000..300_000_000));
        let pipe = match route {
            Route::Lan { .. } => &mut self.sessions.get_mut(&id).expect("exists").dirs[dir].pipe,
            Route::Link { link } => {
                let l = &mut self.links[link];
                let forward = self.home[from] == l.a_site as u32;
                &mut l.pipes[usize::from(!forward)]
            }
        };
        let start = pipe.busy_until.max(now);
        pipe.busy_until = start + tx;
        let done = pipe.busy_until;
        let d = &mut self.sessions.get_mut(&id).expect("exists").dirs[dir];
        let arrival = (done + lat + extra).max(d.last_arrival);
        d.last_arrival = arrival;
        d.enqueued += 1;
        d.in_flight += 1;
        Ok(Sent {
            session: id,
            dir,
            seq: d.enqueued,
            arrival,
            ghost: ghost.map(|g| arrival + g),
        })
    }

    /// A frame reached the end of its session's direction: may it be
    /// delivered? (Accounts for it either way.)
    pub fn arrive(&mut self, session: u64, dir: usize, seq: u64) -> bool {
        let Some(s) = self.sessions.get_mut(&session) else {
            return false;
        };
        let d = &mut s.dirs[dir];
        d.in_flight -= 1;
        let ok = seq <= d.accept_upto && seq == d.delivered + 1;
        if ok {
            d.delivered = seq;
        }
        self.reap(session);
        ok
    }

    /// Is a ghost of a frame of `session` trying to enter a newer session
    /// between the same two devices? (It is dropped either way.)
    pub fn ghost_is_stale(&self, session: u64, from: Dev, to: Dev) -> bool {
        self.by_pair
            .get(&pair(from, to))
            .is_some_and(|cur| *cur != session)
    }

    /// Breaks a session at once: nothing more is delivered either way.
    /// Returns the two endpoints if it was open.
    pub fn break_session(&mut self, id: u64) -> Option<(Dev, Dev)> {
        let s = self.sessions.get_mut(&id)?;
        if !s.open {
            return None;
        }
        s.open = false;
        for d in &mut s.dirs {
            d.accept_upto = d.delivered;
        }
        s.notifies = 2;
        Some((s.a, s.b))
    }

    /// `by` closes the session gracefully: what it already sent is still
    /// delivered; nothing more comes back to it. Returns the arrival time
    /// of its last frame (when the peer learns of the close).
    pub fn close_by(&mut self, id: u64, by: Dev, now: u64) -> Option<u64> {
        let s = self.sessions.get_mut(&id)?;
        if !s.open {
            return None;
        }
        s.open = false;
        let out = s.dir_from(by);
        let back = 1 - out;
        s.dirs[back].accept_upto = s.dirs[back].delivered;
        s.dirs[out].accept_upto = s.dirs[out].enqueued;
        s.notifies = 2;
        Some(s.dirs[out].last_arrival.max(now) + 1)
    }

    /// One close notification was delivered (or is moot).
    pub fn notified(&mut self, id: u64) {
        if let Some(s) = self.sessions.get_mut(&id) {
            s.notifies = s.notifies.saturating_sub(1);
        }
        self.reap(id);
    }

    fn reap(&mut self, id: u64) {
        if self.sessions.get(&id).is_some_and(Session::finished) {
            let s = self.sessions.remove(&id).expect("exists");
            if self.by_pair.get(&(s.a, s.b)) == Some(&id) {
                self.by_pair.remove(&(s.a, s.b));
            }
        }
    }

    /// Open sessions that involve `d`.
    pub fn sessions_of(&self, d: Dev) -> Vec<u64> {
        self.sessions
            .values()
            .filter(|s| s.open && (s.a == d || s.b == d))
            .map(|s| s.id)
            .collect()
    }

    /// Open sessions whose route is no longer valid.
    pub fn invalid_sessions(&self) -> Vec<u64> {
        self.sessions
            .values()
            .filter(|s| s.open && !self.route_valid(s.route, s.a, s.b))
            .map(|s| s.id)
            .collect()
    }

    /// May a new session between `a` and `b` start? Not while an old one
    /// still has notifications pending: the shell reports a peer gone only
    /// when its last connection closes.
    pub fn can_open(&self, a: Dev, b: Dev) -> bool {
        self.session_of(a, b).is_none()
    }

    pub fn open_sessions(&self) -> impl Iterator<Item = &Session> {
        self.sessions.values().filter(|s| s.open)
    }
}
