//! The event trace: a running SHA-256 digest of everything that happened
//! (the determinism tests compare it) and a ring of recent entries, printed
//! when an invariant fails.
//!
//! Invariant: an entry is a few plain numbers; nothing is formatted until a
//! failure is reported, so tracing costs little on a 10,000-seed sweep.

use std::collections::VecDeque;
use std::fmt::Write as _;

use sha2::{Digest, Sha256};

/// How many recent entries are kept.
const RING: usize = 1 << 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A frame left `a` for `b`; `x` = frame tag, `y` = length.
    Send,
    /// A frame from `a` was delivered to `b`.
    Deliver,
    /// A frame from `a` to `b` was dropped; `x` = why (see [`drop_reason`]).
    Drop,
    /// Session `y` opened between `a` and `b`.
    Connect,
    /// Session `y` between `a` and `b` closed; `x` = 0 broken, else reason code + 1.
    Close,
    /// `a` crashed; `x` = outputs carried out of its last step (`u64::MAX`: between steps).
    Crash,
    /// `a` booted; `x` = incarnation.
    Boot,
    /// `a` confirmed (Event::Sent) message `y` (first 8 bytes).
    Confirmed,
    /// `a` refused `b` (or `b` refused `a` if `x` = 0); `y` = reason code.
    Refused,
    /// Scripted event number `x` ran.
    Script,
    /// Link `x` went up (`y` = 1) or down.
    Link,
    /// `a` clock jumped by `y` ms (as i64).
    Jump,
    /// `a` moved to segment `x`.
    Move,
    /// The final heal.
    Heal,
    /// `a` left (powered off) or returned (`x` = 1).
    Away,
}

pub const DROP_NOT_CONNECTED: u64 = 1;
pub const DROP_STALE_SESSION: u64 = 2;
pub const DROP_GHOST_STALE: u64 = 3;
pub const DROP_GHOST_DUP: u64 = 4;
pub const DROP_DEAD: u64 = 5;

fn drop_reason(x: u64) -> &'static str {
    match x {
        DROP_NOT_CONNECTED => "no open connection",
        DROP_STALE_SESSION => "its connection had closed",
        DROP_GHOST_STALE => "late duplicate from a dead connection, kept out of the new one",
        DROP_GHOST_DUP => "duplicate suppressed by the transport",
        DROP_DEAD => "receiver is down",
        _ => "?",
    }
}

fn frame_name(tag: u64) -> &'static str {
    match tag {
        1 => "Hello",
        2 => "Refuse",
        3 => "Catalog",
        4 => "Header",
        5 => "Sync",
        6 => "Heads",
        _ => "frame",
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Entry {
    pub at: u64,
    pub kind: Kind,
    pub a: u32,
    pub b: u32,
    pub x: u64,
    pub y: u64,
}

const NONE: u32 = u32::MAX;

pub struct Trace {
    ring: VecDeque<Entry>,
    hash: Sha256,
    pub events: u64,
}

impl Default for Trace {
    fn default() -> Self {
        Trace {
            ring: VecDeque::with_capacity(RING),
            hash: Sha256::new(),
            events: 0,
        }
    }
}

impl Trace {
    pub fn log(&mut self, at: u64, kind: Kind, a: Option<usize>, b: Option<usize>, x: u64, y: u64) {
        let e = Entry {
            at,
            kind,
            a: a.map_or(NONE, |v| v as u32),
            b: b.map_or(NONE, |v| v as u32),
            x,
            y,
        };
        self.hash.update(at.to_le_bytes());
        self.hash.update([kind as u8]);
        self.hash.update(e.a.to_le_bytes());
        self.hash.update(e.b.to_le_bytes());
        self.hash.update(x.to_le_bytes());
        self.hash.update(y.to_le_bytes());
        self.events += 1;
        if self.ring.len() == RING {
            self.ring.pop_front();
        }
        self.ring.push_back(e);
    }

    /// Mixes raw bytes (a frame) into the digest.
    pub fn mix(&mut self, bytes: &[u8]) {
        self.hash.update(bytes);
    }

    /// The digest of everything so far.
    pub fn digest(&self) -> [u8; 32] {
        self.hash.clone().finalize().into()
    }

    /// The last `n` entries that involve any of `devices` (all if empty),
    /// leaving out sync frames if `sync` is false.
    pub fn tail(&self, devices: &[usize], n: usize, sync: bool) -> String {
        let is_sync = |e: &Entry| {
            matches!(e.kind, Kind::Send | Kind::Deliver) && e.x == 5 || e.kind == Kind::Drop
        };
        let involved = |e: &Entry| {
            devices.is_empty()
                || devices.iter().any(|d| e.a == *d as u32 || e.b == *d as u32)
                || e.a == NONE
        };
        let wanted = |e: &Entry| (sync || !is_sync(e)) && involved(e);
        let picked: Vec<&Entry> = self
            .ring
            .iter()
            .rev()
            .filter(|e| wanted(e))
            .take(n)
            .collect();
        let mut out = String::new();
        for e in picked.into_iter().rev() {
            let _ = writeln!(out, "  {}", render(e));
        }
        out
    }
}

/// `12:34.567` style simulated time.
pub fn fmt_time(us: u64) -> String {
    let ms = us / 1000;
    let (h, m, s, milli) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}.{milli:03}")
    } else {
        format!("{m:02}:{s:02}.{milli:03}")
    }
}

fn render(e: &Entry) -> String {
    let t = fmt_time(e.at);
    let (a, b) = (e.a, e.b);
    match e.kind {
        Kind::Send => format!("{t} d{a} -> d{b} {} ({} B)", frame_name(e.x), e.y),
        Kind::Deliver => format!("{t} d{a} => d{b} {} delivered", frame_name(e.x)),
        Kind::Drop => format!("{t} d{a} -> d{b} frame dropped: {}", drop_reason(e.x)),
        Kind::Connect => format!("{t} d{a} <-> d{b} connected (session {})", e.y),
        Kind::Close if e.x == 0 => format!("{t} d{a} <-> d{b} connection broke (session {})", e.y),
        Kind::Close => format!(
            "{t} d{a} <-> d{b} connection closed, reason code {} (session {})",
            e.x - 1,
            e.y
        ),
        Kind::Crash if e.x == u64::MAX => format!("{t} d{a} CRASH (between steps)"),
        Kind::Crash => format!("{t} d{a} CRASH after {} outputs of a step", e.x),
        Kind::Boot => format!("{t} d{a} boots (incarnation {})", e.x),
        Kind::Confirmed => format!("{t} d{a} confirms message {:016x}", e.y),
        Kind::Refused if e.x == 1 => format!("{t} d{a} refuses d{b} (reason code {})", e.y),
        Kind::Refused => format!("{t} d{a} was refused by d{b} (reason code {})", e.y),
        Kind::Script => format!("{t} scripted event #{}", e.x),
        Kind::Link => format!("{t} link #{} {}", e.x, if e.y == 1 { "up" } else { "down" }),
        Kind::Jump => format!("{t} d{a} clock jumps {} ms", e.y as i64),
        Kind::Move => format!("{t} d{a} moves to segment {}", e.x),
        Kind::Heal => format!("{t} FINAL HEAL: partitions healed, links up, everyone online"),
        Kind::Away if e.x == 1 => format!("{t} d{a} returns"),
        Kind::Away => format!("{t} d{a} leaves (powered off)"),
    }
}
