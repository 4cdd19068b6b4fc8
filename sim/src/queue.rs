//! The discrete-event queue: every delivery, timer, fault and user action
//! is an [`Ev`] due at a virtual time in microseconds.
//!
//! Invariant: events pop in (time, insertion order), so a run depends only
//! on the seed; nothing here reads a clock.

use std::collections::BTreeMap;

use huddle::node::Timer;
use huddle::{ConversationId, MessageId};

use crate::net::Dev;

/// A user action that follows something the user saw.
#[derive(Clone, Debug)]
pub enum UserCmd {
    MarkRead(ConversationId),
    Ack(ConversationId, MessageId),
}

/// A random fault or churn process firing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    Crash,
    Jump,
    Break,
    Leave,
    Partition,
}

#[derive(Clone, Debug)]
pub enum Ev {
    /// A frame reaches the end of its session's direction.
    Deliver {
        session: u64,
        dir: usize,
        seq: u64,
        from: Dev,
        to: Dev,
        frame: Vec<u8>,
    },
    /// A busy pipe may take the frames it held (`net.rs`).
    PipeFree {
        key: crate::net::PipeKey,
    },
    /// A late duplicate of a frame surfaces.
    Ghost {
        session: u64,
        from: Dev,
        to: Dev,
    },
    /// Discovery (or a redial) found `b` from `a`. Background dials (retries
    /// after a refusal) do not keep the network from being quiet.
    Dial {
        a: Dev,
        b: Dev,
        background: bool,
    },
    /// A closed session is reported to `dev` (if it is the same incarnation).
    Notify {
        session: u64,
        dev: Dev,
        peer: Dev,
        inc: u32,
    },
    Timer {
        dev: Dev,
        inc: u32,
        timer: Timer,
        token: u64,
    },
    /// A device boots (first start, join, restart or return).
    Boot {
        dev: Dev,
    },
    /// Conversation spec `conv` is created on `dev`.
    Create {
        conv: usize,
        dev: Dev,
    },
    /// The next message of the workload.
    Traffic,
    User {
        dev: Dev,
        inc: u32,
        cmd: UserCmd,
    },
    Script(usize),
    LinkFlip(usize),
    Fault(FaultKind),
    /// A churn partition of segment-sets ends.
    Unsplit {
        devices: Vec<Dev>,
    },
    FinalHeal,
    /// Device 0 sets the scenario's clinical policy.
    Policy,
    /// Re-notification `n` of `msg` should have come on `dev` by now
    /// (`clinical.rs`, checker a).
    AlertDue {
        dev: Dev,
        inc: u32,
        conv: huddle::ConversationId,
        msg: huddle::MessageId,
        n: u16,
    },
    /// Occurrence `k` of reminder `msg` was due on `dev` at `sim_ms`
    /// (checker c).
    ReminderDue {
        dev: Dev,
        inc: u32,
        msg: huddle::MessageId,
        k: u16,
        sim_ms: u64,
    },
}

impl Ev {
    fn blocks_quiet(&self) -> bool {
        match self {
            Ev::Deliver { .. } | Ev::PipeFree { .. } | Ev::Notify { .. } | Ev::Boot { .. } => true,
            Ev::Dial { background, .. } => !background,
            _ => false,
        }
    }
}

#[derive(Default)]
pub struct Queue {
    map: BTreeMap<(u64, u64), Ev>,
    seq: u64,
    blocking: usize,
    pub peak: usize,
}

impl Queue {
    pub fn push(&mut self, at: u64, ev: Ev) {
        if ev.blocks_quiet() {
            self.blocking += 1;
        }
        self.seq += 1;
        self.map.insert((at, self.seq), ev);
        self.peak = self.peak.max(self.map.len());
    }

    pub fn pop(&mut self) -> Option<(u64, Ev)> {
        let ((at, _), ev) = self.map.pop_first()?;
        if ev.blocks_quiet() {
            self.blocking -= 1;
        }
        Some((at, ev))
    }

    /// Frames in flight, connection events or boots still pending.
    pub fn busy(&self) -> bool {
        self.blocking > 0
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}
