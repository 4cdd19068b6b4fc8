//! Who may use the screen: one-time login tokens and the sessions they
//! open, with the idle lock. Pure: every method is given the time, so the
//! rules are tested without waiting.
//!
//! Invariants: a login token opens at most one session and only within
//! [`LOGIN_TTL`]; a session ends when it has seen no sign of a person for
//! `lock_after` (only [`Sessions::alive`] counts as one: the page's own
//! refreshes and its event stream do not keep a walked-away screen open);
//! both tables are bounded, the oldest entry giving way.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long a one-time login URL stays usable.
pub const LOGIN_TTL: Duration = Duration::from_secs(5 * 60);
/// The most one-time logins waiting to be used.
pub const MAX_LOGINS: usize = 16;
/// The most open sessions (browsers signed in to this node at once).
pub const MAX_SESSIONS: usize = 16;

/// A session's secrets: its id (the cookie's value) and the token each
/// write must carry in a header (CSRF).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Opened {
    pub id: String,
    pub csrf: String,
}

struct Session {
    csrf: String,
    alive: Instant,
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
        self.expire(now);
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

    /// The session's CSRF token, if `id` names a session still open.
    pub fn check(&mut self, id: &str, now: Instant) -> Option<&str> {
        self.expire(now);
        self.open.get(id).map(|s| s.csrf.as_str())
    }

    /// When the session locks unless a person shows themselves first.
    pub fn locks_at(&self, id: &str) -> Option<Instant> {
        self.open.get(id).map(|s| s.alive + self.lock_after)
    }

    /// A person used the page: the idle time starts again.
    pub fn alive(&mut self, id: &str, now: Instant) -> bool {
        self.expire(now);
        match self.open.get_mut(id) {
            Some(s) => {
                s.alive = now;
                true
            }
            None => false,
        }
    }

    /// Ends the session (the page locked, or the person signed out).
    pub fn end(&mut self, id: &str) {
        self.open.remove(id);
    }

    fn expire(&mut self, now: Instant) {
        let lock_after = self.lock_after;
        self.open
            .retain(|_, s| now.duration_since(s.alive) < lock_after);
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
        let token = s.mint_login(t0);
        let a = s.redeem(&token, t0).unwrap();
        let t1 = t0 + LOCK - Duration::from_secs(1);
        assert!(s.check(&a.id, t1).is_some());
        assert!(s.alive(&a.id, t1));
        assert!(s.check(&a.id, t1 + LOCK - Duration::from_secs(1)).is_some());
        assert_eq!(s.check(&a.id, t1 + LOCK), None, "idle for the lock time");
        assert!(!s.alive(&a.id, t1 + LOCK), "a locked session stays locked");
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
    fn ending_a_session_locks_it() {
        let mut s = Sessions::new(LOCK);
        let t0 = Instant::now();
        let token = s.mint_login(t0);
        let a = s.redeem(&token, t0).unwrap();
        s.end(&a.id);
        assert_eq!(s.check(&a.id, t0), None);
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
            let token = s.mint_login(t);
            s.redeem(&token, t).unwrap();
        }
        assert_eq!(s.open.len(), MAX_SESSIONS);
    }
}
