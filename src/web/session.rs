//! Who may use the screen: one-time login tokens and the sessions they
//! open, the idle lock, and the backoff on wrong unlock secrets. Pure:
//! every method is given the time, so the rules are tested without waiting.
//!
//! Invariants: a login token opens at most one session and only within
//! [`LOGIN_TTL`]; a session locks when it has seen no sign of a person for
//! `lock_after` (only [`Sessions::alive`] counts as one: the page's own
//! refreshes and its event stream do not keep a walked-away screen open);
//! a locked session keeps its id but opens nothing until
//! [`Sessions::unlock`], and ends [`LOCKED_TTL`] after it locked; both
//! tables are bounded, the oldest entry giving way. After `attempts` wrong
//! secrets in a row (for the whole node, whichever session tried), every
//! attempt is refused unchecked until a delay passes that doubles from the
//! first up to [`MAX_BACKOFF`]; a right secret clears the count.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long a one-time login URL stays usable.
pub const LOGIN_TTL: Duration = Duration::from_secs(5 * 60);
/// The most one-time logins waiting to be used.
pub const MAX_LOGINS: usize = 16;
/// The most sessions, open or locked (browsers signed in to this node).
pub const MAX_SESSIONS: usize = 16;
/// How long a locked session can still be unlocked before it ends.
pub const LOCKED_TTL: Duration = Duration::from_secs(12 * 3600);
/// Wrong unlock secrets in a row before the backoff starts, unless
/// `huddle run --unlock-attempts` says otherwise.
pub const DEFAULT_UNLOCK_ATTEMPTS: u32 = 5;
/// The backoff's first delay; each wrong secret after it doubles it.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(30);
/// The longest delay.
pub const MAX_BACKOFF: Duration = Duration::from_secs(15 * 60);

/// A session's secrets: its id (the cookie's value) and the token each
/// write must carry in a header (CSRF).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Opened {
    pub id: String,
    pub csrf: String,
}

/// What a session is now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionState {
    pub csrf: String,
    pub locked: bool,
}

struct Session {
    csrf: String,
    alive: Instant,
    /// When it locked; `None` while it is open.
    locked: Option<Instant>,
}

pub struct Sessions {
    lock_after: Duration,
    logins: HashMap<String, Instant>,
    open: HashMap<String, Session>,
}

impl Sessions {
    pub fn new(lock_after: Duration) -> Sessions {
        Sessions {
            lock_after,
            logins: HashMap::new(),
            open: HashMap::new(),
        }
    }

    pub fn lock_after(&self) -> Duration {
        self.lock_after
    }

    /// A fresh one-time login token.
    pub fn mint_login(&mut self, now: Instant) -> String {
        self.logins
            .retain(|_, at| now.duration_since(*at) < LOGIN_TTL);
        evict_oldest(&mut self.logins, MAX_LOGINS, |at| *at);
        let token = crate::api::new_token();
        self.logins.insert(token.clone(), now);
        token
    }

    /// Uses up a login token and opens a session, if the token is one we
    /// minted, unused and fresh.
    pub fn redeem(&mut self, token: &str, now: Instant) -> Option<Opened> {
        let minted = self.logins.remove(token)?;
        if now.duration_since(minted) >= LOGIN_TTL {
            return None;
        }
        self.refresh(now);
        evict_oldest(&mut self.open, MAX_SESSIONS, |s| s.alive);
        let opened = Opened {
            id: crate::api::new_token(),
            csrf: crate::api::new_token(),
        };
        self.open.insert(
            opened.id.clone(),
            Session {
                csrf: opened.csrf.clone(),
                alive: now,
                locked: None,
            },
        );
        Some(opened)
    }

    /// Uses up a login token without opening a session: the proof, for an
    /// action that mints or withdraws membership, that the person can run
    /// `huddle open` on this computer now.
    pub fn consume_login(&mut self, token: &str, now: Instant) -> bool {
        self.logins
            .remove(token)
            .is_some_and(|minted| now.duration_since(minted) < LOGIN_TTL)
    }

    /// The session's CSRF token, if `id` names a session open (not locked).
    pub fn check(&mut self, id: &str, now: Instant) -> Option<&str> {
        self.refresh(now);
        self.open
            .get(id)
            .filter(|s| s.locked.is_none())
            .map(|s| s.csrf.as_str())
    }

    /// The session `id` names, open or locked.
    pub fn state(&mut self, id: &str, now: Instant) -> Option<SessionState> {
        self.refresh(now);
        self.open.get(id).map(|s| SessionState {
            csrf: s.csrf.clone(),
            locked: s.locked.is_some(),
        })
    }

    /// When the session locks unless a person shows themselves first
    /// (`None` if it is locked or gone).
    pub fn locks_at(&self, id: &str) -> Option<Instant> {
        self.open
            .get(id)
            .filter(|s| s.locked.is_none())
            .map(|s| s.alive + self.lock_after)
    }

    /// A person used the page: the idle time starts again (an open
    /// session only: a locked one is opened by [`Sessions::unlock`]).
    pub fn alive(&mut self, id: &str, now: Instant) -> bool {
        self.refresh(now);
        match self.open.get_mut(id) {
            Some(s) if s.locked.is_none() => {
                s.alive = now;
                true
            }
            _ => false,
        }
    }

    /// Locks the session now (the Lock button); it keeps its id.
    pub fn lock(&mut self, id: &str, now: Instant) -> bool {
        self.refresh(now);
        match self.open.get_mut(id) {
            Some(s) => {
                s.locked.get_or_insert(now);
                true
            }
            None => false,
        }
    }

    /// Opens a locked session again (its person proved the secret): the
    /// idle time starts now. False if the session is gone.
    pub fn unlock(&mut self, id: &str, now: Instant) -> bool {
        self.refresh(now);
        match self.open.get_mut(id) {
            Some(s) => {
                s.locked = None;
                s.alive = now;
                true
            }
            None => false,
        }
    }

    /// Ends the session (the person signed out).
    pub fn end(&mut self, id: &str) {
        self.open.remove(id);
    }

    /// Locks every session idle for `lock_after`, and ends every one
    /// locked for [`LOCKED_TTL`].
    fn refresh(&mut self, now: Instant) {
        let lock_after = self.lock_after;
        for s in self.open.values_mut() {
            if s.locked.is_none() && now.duration_since(s.alive) >= lock_after {
                s.locked = Some(s.alive + lock_after);
            }
        }
        self.open.retain(|_, s| {
            s.locked
                .is_none_or(|at| now.duration_since(at) < LOCKED_TTL)
        });
    }
}

/// The node's count of wrong unlock secrets and the delay it imposes.
#[derive(Debug)]
pub struct Backoff {
    attempts: u32,
    first: Duration,
    failures: u32,
    until: Option<Instant>,
}

impl Backoff {
    /// `attempts` wrong secrets in a row (at least 1) before the first
    /// delay, `first`.
    pub fn new(attempts: u32, first: Duration) -> Backoff {
        Backoff {
            attempts: attempts.max(1),
            first: first.min(MAX_BACKOFF),
            failures: 0,
            until: None,
        }
    }

    /// `Err(wait)` while a delay runs: the attempt is refused unchecked.
    pub fn check(&self, now: Instant) -> Result<(), Duration> {
        match self.until {
            Some(until) if until > now => Err(until - now),
            _ => Ok(()),
        }
    }

    /// A wrong secret: the delay it starts, if the count is reached.
    pub fn failed(&mut self, now: Instant) -> Option<Duration> {
        self.failures = self.failures.saturating_add(1);
        let over = self.failures.checked_sub(self.attempts)?;
        let delay = self
            .first
            .saturating_mul(1 << over.min(20))
            .min(MAX_BACKOFF);
        self.until = Some(now + delay);
        Some(delay)
    }

    /// A right secret: the count starts again.
    pub fn succeeded(&mut self) {
        self.failures = 0;
        self.until = None;
    }
}

fn evict_oldest<V>(map: &mut HashMap<String, V>, max: usize, at: impl Fn(&V) -> Instant) {
    while map.len() >= max {
        let Some(oldest) = map
            .iter()
            .min_by_key(|(_, v)| at(v))
            .map(|(k, _)| k.clone())
        else {
            return;
        };
        map.remove(&oldest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCK: Duration = Duration::from_secs(300);

    fn signed_in(s: &mut Sessions, t: Instant) -> Opened {
        let token = s.mint_login(t);
        s.redeem(&token, t).expect("a fresh token opens a session")
    }

    #[test]
    fn a_login_token_opens_one_session_once() {
        let mut s = Sessions::new(LOCK);
        let t0 = Instant::now();
        let token = s.mint_login(t0);
        let opened = s.redeem(&token, t0).expect("a fresh token opens a session");
        assert_eq!(s.check(&opened.id, t0), Some(opened.csrf.as_str()));
        assert_eq!(s.redeem(&token, t0), None, "used twice");
        assert_eq!(s.redeem("not-a-token", t0), None);
    }

    #[test]
    fn a_stale_login_token_opens_nothing() {
        let mut s = Sessions::new(LOCK);
        let t0 = Instant::now();
        let token = s.mint_login(t0);
        assert_eq!(s.redeem(&token, t0 + LOGIN_TTL), None);
    }

    #[test]
    fn a_session_locks_after_the_idle_time_unless_a_person_is_there() {
        let mut s = Sessions::new(LOCK);
        let t0 = Instant::now();
        let a = signed_in(&mut s, t0);
        let t1 = t0 + LOCK - Duration::from_secs(1);
        assert!(s.check(&a.id, t1).is_some());
        assert!(s.alive(&a.id, t1));
        assert!(s.check(&a.id, t1 + LOCK - Duration::from_secs(1)).is_some());
        assert_eq!(s.locks_at(&a.id), Some(t1 + LOCK));
        assert_eq!(s.check(&a.id, t1 + LOCK), None, "idle for the lock time");
        assert_eq!(s.locks_at(&a.id), None, "a locked session has no lock time");
        assert!(!s.alive(&a.id, t1 + LOCK), "a locked session stays locked");
        assert_eq!(s.check(&a.id, t1 + LOCK), None);
        let state = s.state(&a.id, t1 + LOCK).expect("locked, not ended");
        assert!(state.locked);
        assert_eq!(state.csrf, a.csrf);
    }

    #[test]
    fn a_locked_session_opens_again_only_by_unlock_with_a_fresh_idle_time() {
        let mut s = Sessions::new(LOCK);
        let t0 = Instant::now();
        let a = signed_in(&mut s, t0);
        assert!(s.lock(&a.id, t0), "the Lock button");
        assert_eq!(s.check(&a.id, t0), None);
        assert!(!s.alive(&a.id, t0));
        let t1 = t0 + Duration::from_secs(3600);
        assert!(s.unlock(&a.id, t1));
        assert_eq!(s.check(&a.id, t1), Some(a.csrf.as_str()));
        assert_eq!(s.locks_at(&a.id), Some(t1 + LOCK), "idle time starts again");
        assert!(!s.state(&a.id, t1).unwrap().locked);
        assert!(!s.unlock("no-such-session", t1));
        assert!(!s.lock("no-such-session", t1));
    }

    #[test]
    fn a_locked_session_ends_after_the_long_bound() {
        let mut s = Sessions::new(LOCK);
        let t0 = Instant::now();
        let a = signed_in(&mut s, t0);
        // Locked at t0 + LOCK by idleness.
        let almost = t0 + LOCK + LOCKED_TTL - Duration::from_secs(1);
        assert!(s.state(&a.id, almost).is_some_and(|st| st.locked));
        assert_eq!(s.state(&a.id, t0 + LOCK + LOCKED_TTL), None, "ended");
        assert!(!s.unlock(&a.id, t0 + LOCK + LOCKED_TTL));
        let b = signed_in(&mut s, t0);
        s.lock(&b.id, t0 + Duration::from_secs(1));
        assert_eq!(
            s.state(&b.id, t0 + Duration::from_secs(1) + LOCKED_TTL),
            None
        );
    }

    #[test]
    fn a_confirmation_uses_up_a_fresh_login_token_once() {
        let mut s = Sessions::new(LOCK);
        let t0 = Instant::now();
        let token = s.mint_login(t0);
        assert!(s.consume_login(&token, t0));
        assert!(!s.consume_login(&token, t0), "used twice");
        assert_eq!(s.redeem(&token, t0), None, "and it signs nobody in");
        let stale = s.mint_login(t0);
        assert!(!s.consume_login(&stale, t0 + LOGIN_TTL));
    }

    #[test]
    fn ending_a_session_leaves_nothing_to_unlock() {
        let mut s = Sessions::new(LOCK);
        let t0 = Instant::now();
        let a = signed_in(&mut s, t0);
        s.end(&a.id);
        assert_eq!(s.check(&a.id, t0), None);
        assert_eq!(s.state(&a.id, t0), None);
        assert!(!s.unlock(&a.id, t0));
    }

    #[test]
    fn the_tables_stay_bounded_the_oldest_giving_way() {
        let mut s = Sessions::new(LOCK);
        let t0 = Instant::now();
        let first = s.mint_login(t0);
        for i in 1..=MAX_LOGINS as u64 {
            s.mint_login(t0 + Duration::from_millis(i));
        }
        assert_eq!(s.logins.len(), MAX_LOGINS);
        assert_eq!(s.redeem(&first, t0), None, "the oldest login gave way");
        for i in 0..2 * MAX_SESSIONS as u64 {
            let t = t0 + Duration::from_millis(100 + i);
            let a = signed_in(&mut s, t);
            s.lock(&a.id, t);
        }
        assert_eq!(s.open.len(), MAX_SESSIONS, "locked sessions count too");
    }

    #[test]
    fn wrong_secrets_back_off_doubling_to_the_cap_and_a_right_one_resets() {
        let mut b = Backoff::new(3, FIRST_BACKOFF);
        let t0 = Instant::now();
        assert_eq!(b.failed(t0), None);
        assert_eq!(b.failed(t0), None);
        assert_eq!(b.check(t0), Ok(()), "two wrong: still checked");
        assert_eq!(b.failed(t0), Some(FIRST_BACKOFF), "the third starts it");
        assert_eq!(b.check(t0), Err(FIRST_BACKOFF));
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(b.check(t1), Err(Duration::from_secs(20)), "time left");
        let t2 = t0 + FIRST_BACKOFF;
        assert_eq!(b.check(t2), Ok(()), "the delay passed");
        assert_eq!(b.failed(t2), Some(2 * FIRST_BACKOFF), "doubles");
        let mut t = t2;
        let mut last = Duration::ZERO;
        for _ in 0..40 {
            t += MAX_BACKOFF;
            last = b.failed(t).expect("still backing off");
        }
        assert_eq!(last, MAX_BACKOFF, "capped");
        assert_eq!(b.check(t), Err(MAX_BACKOFF));
        b.succeeded();
        assert_eq!(b.check(t), Ok(()));
        assert_eq!(b.failed(t), None, "the count started again");
    }

    #[test]
    fn at_least_one_attempt_is_checked() {
        let mut b = Backoff::new(0, Duration::from_millis(5));
        let t0 = Instant::now();
        assert_eq!(b.check(t0), Ok(()));
        assert_eq!(b.failed(t0), Some(Duration::from_millis(5)));
    }
}
