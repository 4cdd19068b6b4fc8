//! The order in which frames queued for one peer are written
//! (transport.md §5.1): on a thin link a STAT or urgent change goes before
//! routine ones, and routine ones before catching up old history.
//!
//! Every frame the node sends carries a [`Prio`]: a [`Lane`] (what it
//! belongs to) and a [`Rank`] (how soon it should go). A [`SendQueue`]
//! keeps frames in order **within a lane** — a conversation's header
//! before its sync messages, a sync message's parts contiguous, the
//! session's setup in order — and between lanes writes next the lane
//! holding the highest rank, its oldest frame first. A lane's rank is the
//! highest of its queued frames, so an urgent change pulls what its lane
//! queued before it along (the change depends on it). Lanes of equal rank
//! go oldest first: with every frame of one rank the queue is a FIFO.
//!
//! Pure: the shell's writer (`net/streams.rs`) and the simulator's link
//! model use the same queue.

use std::collections::{BTreeMap, VecDeque};

/// How soon a frame should go. Higher goes first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rank {
    /// Catching up: whatever a sync round, a pull or a repair carries.
    History = 0,
    /// A routine change we just wrote, announcements, mail bookkeeping.
    Routine = 1,
    /// An urgent change we just wrote (an acknowledgement is urgent).
    Urgent = 2,
    /// A STAT change we just wrote; the team document (certificates and
    /// revocations, which the receiver checks changes against).
    Stat = 3,
    /// The session's own frames: hello, identify, catalog, refusal.
    Session = 4,
}

const RANKS: usize = 5;

/// What a frame belongs to: frames of one lane are written in the order
/// they were queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Lane {
    /// Hello, identify, catalog, revoked, refuse.
    Session,
    /// A document's header and sync frames.
    Doc([u8; 16]),
    /// Heads announcements.
    Announce,
    /// Sealed envelopes and the mailbox's ids, wants and done secrets.
    Mail,
    /// Audit trail frames.
    Trail,
}

/// A frame's lane and rank.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prio {
    pub lane: Lane,
    pub rank: Rank,
}

impl Prio {
    pub const SESSION: Prio = Prio {
        lane: Lane::Session,
        rank: Rank::Session,
    };
    pub const ANNOUNCE: Prio = Prio {
        lane: Lane::Announce,
        rank: Rank::Routine,
    };
    pub const TRAIL: Prio = Prio {
        lane: Lane::Trail,
        rank: Rank::History,
    };

    pub fn doc(doc: [u8; 16], rank: Rank) -> Prio {
        Prio {
            lane: Lane::Doc(doc),
            rank,
        }
    }

    pub fn mail(rank: Rank) -> Prio {
        Prio {
            lane: Lane::Mail,
            rank,
        }
    }
}

struct LaneQ<T> {
    frames: VecDeque<(u64, Rank, T)>,
    /// Queued frames of each rank.
    counts: [u32; RANKS],
}

impl<T> LaneQ<T> {
    fn top(&self) -> Rank {
        const ALL: [Rank; RANKS] = [
            Rank::History,
            Rank::Routine,
            Rank::Urgent,
            Rank::Stat,
            Rank::Session,
        ];
        (0..RANKS)
            .rev()
            .find(|&r| self.counts[r] > 0)
            .map_or(Rank::History, |r| ALL[r])
    }
}

/// Frames queued for one peer, written in the order of the module docs.
/// Unbounded itself: its owner bounds what it queues (the shell by frames
/// and bytes per peer, the simulator by its checker). `K` names a lane:
/// a [`Lane`], or for a link shared by several sessions, the session and
/// its lane.
pub struct SendQueue<T, K = Lane> {
    lanes: BTreeMap<K, LaneQ<T>>,
    next: u64,
    len: usize,
}

impl<T, K> Default for SendQueue<T, K> {
    fn default() -> Self {
        SendQueue {
            lanes: BTreeMap::new(),
            next: 0,
            len: 0,
        }
    }
}

impl<T> SendQueue<T> {
    pub fn push(&mut self, prio: Prio, item: T) {
        self.push_in(prio.lane, prio.rank, item);
    }
}

impl<T, K: Ord + Copy> SendQueue<T, K> {
    /// Queues `item` at the end of lane `key`, at `rank`.
    pub fn push_in(&mut self, key: K, rank: Rank, item: T) {
        let lane = self.lanes.entry(key).or_insert_with(|| LaneQ {
            frames: VecDeque::new(),
            counts: [0; RANKS],
        });
        lane.counts[rank as usize] += 1;
        lane.frames.push_back((self.next, rank, item));
        self.next += 1;
        self.len += 1;
    }

    /// The next frame to write: the oldest of the lane with the highest
    /// rank, the lane whose oldest frame is oldest among equals.
    pub fn pop(&mut self) -> Option<T> {
        let (&key, _) = self.lanes.iter().max_by(|(_, a), (_, b)| {
            let head = |l: &LaneQ<T>| l.frames.front().map_or(u64::MAX, |f| f.0);
            a.top().cmp(&b.top()).then_with(|| head(b).cmp(&head(a)))
        })?;
        let lane = self.lanes.get_mut(&key).expect("just found");
        let (_, rank, item) = lane.frames.pop_front().expect("lanes are never empty");
        lane.counts[rank as usize] -= 1;
        if lane.frames.is_empty() {
            self.lanes.remove(&key);
        }
        self.len -= 1;
        Some(item)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Takes out the lanes `pred` picks, as a queue of their own (their
    /// frames keep their order).
    pub fn take_lanes(&mut self, pred: impl Fn(&K) -> bool) -> SendQueue<T, K> {
        let keys: Vec<K> = self.lanes.keys().filter(|k| pred(k)).copied().collect();
        let mut out = SendQueue {
            lanes: BTreeMap::new(),
            next: self.next,
            len: 0,
        };
        for k in keys {
            let lane = self.lanes.remove(&k).expect("listed");
            self.len -= lane.frames.len();
            out.len += lane.frames.len();
            out.lanes.insert(k, lane);
        }
        out
    }

    /// Everything queued, in no particular order (a session that ended).
    pub fn drain(&mut self) -> impl Iterator<Item = T> + '_ {
        self.len = 0;
        std::mem::take(&mut self.lanes)
            .into_values()
            .flat_map(|l| l.frames.into_iter().map(|(_, _, t)| t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(q: &mut SendQueue<&'static str>) -> Vec<&'static str> {
        std::iter::from_fn(|| q.pop()).collect()
    }

    #[test]
    fn one_rank_is_a_fifo_across_lanes() {
        let mut q = SendQueue::default();
        q.push(Prio::doc([1; 16], Rank::Routine), "a");
        q.push(Prio::ANNOUNCE, "b");
        q.push(Prio::doc([2; 16], Rank::Routine), "c");
        q.push(Prio::doc([1; 16], Rank::Routine), "d");
        q.push(Prio::mail(Rank::Routine), "e");
        assert_eq!(all(&mut q), ["a", "b", "c", "d", "e"]);
        assert!(q.is_empty());
    }

    #[test]
    fn stat_goes_before_routine_and_routine_before_history() {
        let mut q = SendQueue::default();
        q.push(Prio::doc([1; 16], Rank::History), "old 1");
        q.push(Prio::doc([2; 16], Rank::History), "old 2");
        q.push(Prio::doc([3; 16], Rank::Routine), "routine");
        q.push(Prio::doc([4; 16], Rank::Stat), "stat");
        q.push(Prio::SESSION, "catalog");
        assert_eq!(
            all(&mut q),
            ["catalog", "stat", "routine", "old 1", "old 2"]
        );
    }

    #[test]
    fn an_urgent_frame_takes_its_lane_along_in_order() {
        let mut q = SendQueue::default();
        q.push(Prio::doc([9; 16], Rank::History), "other history");
        q.push(Prio::doc([1; 16], Rank::History), "header");
        q.push(Prio::doc([1; 16], Rank::History), "part 1");
        q.push(Prio::doc([1; 16], Rank::Urgent), "urgent");
        q.push(Prio::doc([1; 16], Rank::History), "after");
        assert_eq!(q.len(), 5);
        // The lane of doc 1 is urgent until its urgent frame is written;
        // then what follows it in the lane is history again, older than
        // nothing else queued but doc 9's.
        assert_eq!(
            all(&mut q),
            ["header", "part 1", "urgent", "other history", "after"]
        );
    }

    #[test]
    fn lanes_taken_out_keep_their_order_and_leave_the_rest() {
        let mut q: SendQueue<&str, (u8, Lane)> = SendQueue::default();
        q.push_in((1, Lane::Session), Rank::History, "1a");
        q.push_in((2, Lane::Session), Rank::Stat, "2a");
        q.push_in((1, Lane::Mail), Rank::Urgent, "1b");
        q.push_in((1, Lane::Session), Rank::History, "1c");
        let mut one = q.take_lanes(|k| k.0 == 1);
        assert_eq!((one.len(), q.len()), (3, 1));
        let order: Vec<_> = std::iter::from_fn(|| one.pop()).collect();
        assert_eq!(order, ["1b", "1a", "1c"]);
        assert_eq!(q.pop(), Some("2a"));
    }

    #[test]
    fn drain_returns_everything() {
        let mut q = SendQueue::default();
        q.push(Prio::SESSION, 1);
        q.push(Prio::TRAIL, 2);
        q.push(Prio::doc([1; 16], Rank::Stat), 3);
        let mut got: Vec<i32> = q.drain().collect();
        got.sort();
        assert_eq!(got, [1, 2, 3]);
        assert!(q.is_empty() && q.pop().is_none());
    }
}
