//! The ward's screen: a web page the node serves on its loopback API
//! address, every asset inside the binary (`assets/`, plain HTML, CSS and
//! ES modules: no bundler, no download). The page reads and writes through
//! the same `/v1` API as the CLI and follows the same event stream.
//!
//! Sign-in: `huddle open` asks the running node (with the API's bearer
//! token, which only the device's user can read) for a one-time login URL;
//! opening it sets a session cookie named for this device, HttpOnly and
//! SameSite=Strict, and the page then uses the API with that cookie.
//!
//! Invariants:
//! - every request names this node's own loopback host and port in `Host`,
//!   and in `Origin` when it has one, or is refused (DNS rebinding);
//! - a write made with the cookie carries the session's CSRF token in the
//!   `x-huddle-csrf` header (a cross-site page can neither read the token
//!   nor send the header without a preflight we never grant);
//! - a session locks after `lock_after` without a sign of a person, or
//!   at the Lock button ([`session`]); its event stream ends with it, and
//!   it opens nothing until its person gives the data directory's
//!   passphrase or the device's PIN (`unlock.rs`: the only way back besides
//!   a new sign-in link); wrong secrets back off for the whole node;
//! - every response forbids inline script, framing and third-party loads
//!   (Content-Security-Policy).

pub mod session;

mod admin;
mod routes;
mod unlock;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap, HeaderValue, Method};

pub use admin::{AdmitForm, Admitted, RevokeForm};
pub use routes::{routes, LoginUrl};
pub use session::{Opened, SessionState, Sessions};
pub use unlock::{first_backoff, record, ScreenAudit, UnlockWith};

use crate::ids::DeviceId;

/// How long the page stays open without a person using it, unless
/// `huddle run --lock-after` says otherwise.
pub const DEFAULT_LOCK_AFTER: Duration = Duration::from_secs(5 * 60);

/// The header a cookie-authenticated write carries its CSRF token in.
pub const CSRF_HEADER: &str = "x-huddle-csrf";

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   media-src 'self'; \
                   connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; \
                   frame-ancestors 'none'";

/// What the screen is given beside the node.
#[derive(Clone)]
pub struct WebOptions {
    /// How long the page stays open without a person using it.
    pub lock_after: Duration,
    /// The node's data directory: when it holds the team key, the Team
    /// page admits and revokes (each confirmed with a fresh login URL).
    pub data_dir: Option<crate::datadir::DataDir>,
    /// Wrong unlock secrets in a row before each attempt waits.
    pub unlock_attempts: u32,
    /// The first wait; it doubles with each wrong secret after it.
    pub first_backoff: Duration,
}

impl Default for WebOptions {
    fn default() -> WebOptions {
        WebOptions {
            lock_after: DEFAULT_LOCK_AFTER,
            data_dir: None,
            unlock_attempts: session::DEFAULT_UNLOCK_ATTEMPTS,
            first_backoff: session::FIRST_BACKOFF,
        }
    }
}

/// The screen's state beside the API's: the sessions, and what this node's
/// own requests look like.
pub struct Web {
    sessions: Mutex<Sessions>,
    token: String,
    cookie: String,
    hosts: Vec<String>,
    origin: String,
    admin: Option<admin::Admin>,
    /// Where the screen's unlocks go into the audit trail.
    node: Option<crate::net::NodeHandle>,
    /// Where the passphrase's `key.wrap` and the PIN are read at each
    /// unlock attempt.
    dir: Option<crate::datadir::DataDir>,
    backoff: Mutex<session::Backoff>,
    /// Held while one unlock attempt is checked: attempts never run side
    /// by side (each would pass the backoff before the others failed).
    checking: std::sync::atomic::AtomicBool,
    /// Told of every lock and sign-out, so event streams end at once.
    locks: tokio::sync::watch::Sender<()>,
}

/// How a request proved who it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// The API's bearer token (the CLI, scripts).
    Token,
    /// A browser session, by its id.
    Session(String),
}

impl Web {
    /// `token` is the API's bearer token.
    pub fn new(
        device: &DeviceId,
        addr: SocketAddr,
        token: String,
        options: WebOptions,
        handle: Option<crate::net::NodeHandle>,
    ) -> Arc<Web> {
        let port = addr.port();
        let mut hosts = vec![format!("{addr}")];
        if addr.ip().is_loopback() {
            hosts.push(format!("localhost:{port}"));
        }
        Arc::new(Web {
            sessions: Mutex::new(Sessions::new(options.lock_after)),
            backoff: Mutex::new(session::Backoff::new(
                options.unlock_attempts,
                options.first_backoff,
            )),
            checking: std::sync::atomic::AtomicBool::new(false),
            locks: tokio::sync::watch::Sender::new(()),
            dir: options.data_dir.clone(),
            token,
            node: handle.clone(),
            admin: options
                .data_dir
                .zip(handle)
                .map(|(dir, handle)| admin::Admin { dir, handle }),
            cookie: format!("huddle-{}", device.short()),
            origin: format!("http://{addr}"),
            hosts,
        })
    }

    /// The session cookie's name: one per device, since cookies ignore
    /// ports and several nodes may serve on 127.0.0.1.
    pub fn cookie_name(&self) -> &str {
        &self.cookie
    }

    pub fn lock_after(&self) -> Duration {
        self.sessions().lock_after()
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, Sessions> {
        // The table holds no invariant a panic could break half-way.
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A one-time login URL for this node's screen.
    pub fn login_url(&self) -> String {
        let token = self.sessions().mint_login(Instant::now());
        format!("{}/login?t={token}", self.origin)
    }

    /// Uses up the login token in `text` (a login URL or the token alone).
    pub fn confirm(&self, text: &str) -> bool {
        let text = text.trim();
        let token = text
            .split_once("t=")
            .map_or(text, |(_, t)| t.split('&').next().unwrap_or(""));
        !token.is_empty() && self.sessions().consume_login(token, Instant::now())
    }

    pub fn redeem(&self, token: &str) -> Option<Opened> {
        self.sessions().redeem(token, Instant::now())
    }

    /// The open session this request's cookie names, and its CSRF token.
    pub fn session(&self, headers: &HeaderMap) -> Option<(String, String)> {
        let id = cookie(headers, &self.cookie)?;
        let csrf = self.sessions().check(id, Instant::now())?.to_owned();
        Some((id.to_owned(), csrf))
    }

    /// The session this request's cookie names, open or locked.
    pub fn session_state(&self, headers: &HeaderMap) -> Option<(String, SessionState)> {
        let id = cookie(headers, &self.cookie)?;
        let state = self.sessions().state(id, Instant::now())?;
        Some((id.to_owned(), state))
    }

    /// Locks the session now; its event streams end.
    pub fn lock(&self, id: &str) -> bool {
        let locked = self.sessions().lock(id, Instant::now());
        self.locks.send_replace(());
        locked
    }

    /// Told of every lock and sign-out (an event stream checks its session).
    pub fn lock_changes(&self) -> tokio::sync::watch::Receiver<()> {
        self.locks.subscribe()
    }

    pub fn alive(&self, id: &str) -> Option<Instant> {
        let mut s = self.sessions();
        s.alive(id, Instant::now())
            .then(|| s.locks_at(id))
            .flatten()
    }

    /// When the session locks, if it is open.
    pub fn locks_at(&self, id: &str) -> Option<Instant> {
        let mut s = self.sessions();
        s.check(id, Instant::now())?;
        s.locks_at(id)
    }

    pub fn end(&self, id: &str) {
        self.sessions().end(id);
        self.locks.send_replace(());
    }

    /// Refuses a request that does not name this node in `Host` (and in
    /// `Origin`, when present): a page on another site reaching us by
    /// DNS rebinding or a cross-site form.
    pub fn check_host(&self, headers: &HeaderMap) -> Result<(), String> {
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
        match host {
            Some(h) if self.hosts.iter().any(|ours| ours.eq_ignore_ascii_case(h)) => {}
            Some(h) => {
                return Err(format!(
                    "this request is addressed to \"{}\", not to this node ({}): refused",
                    h.chars().take(100).collect::<String>(),
                    self.hosts[0]
                ))
            }
            None => return Err("this request names no Host: refused".into()),
        }
        if let Some(origin) = headers.get(header::ORIGIN) {
            let ok = origin.to_str().is_ok_and(|o| {
                self.hosts
                    .iter()
                    .any(|h| o.eq_ignore_ascii_case(&format!("http://{h}")))
            });
            if !ok {
                return Err("this request comes from a page of another site: refused".into());
            }
        }
        Ok(())
    }

    /// Who is calling, if anyone: the bearer token or an open session (a
    /// session's writes must carry its CSRF token).
    pub fn caller(&self, method: &Method, headers: &HeaderMap) -> Result<Caller, String> {
        let token = &self.token;
        if let Some(given) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        {
            return if constant_time_eq(given.as_bytes(), token.as_bytes()) {
                Ok(Caller::Token)
            } else {
                Err("wrong bearer token: use the token from api.json in the data directory".into())
            };
        }
        let Some((id, csrf)) = self.session(headers) else {
            return Err(
                "missing bearer token or session: use the token from api.json in the data directory, or sign in with a `huddle open` link"
                    .into(),
            );
        };
        if !(method == Method::GET || method == Method::HEAD) {
            let given = headers.get(CSRF_HEADER).map(HeaderValue::as_bytes);
            if !given.is_some_and(|g| constant_time_eq(g, csrf.as_bytes())) {
                return Err(format!(
                    "a write from the screen must carry the {CSRF_HEADER} header"
                ));
            }
        }
        Ok(Caller::Session(id))
    }
}

/// The headers every response carries.
pub fn harden(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
}

/// The value of cookie `name`, if the request has exactly one `Cookie`
/// header entry for it.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn web() -> Arc<Web> {
        let device = crate::crypto::DeviceKey::generate(&mut rand_core::OsRng).device_id();
        Web::new(
            &device,
            "127.0.0.1:4835".parse().unwrap(),
            "api".into(),
            WebOptions::default(),
            None,
        )
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn only_this_nodes_host_and_origin_pass() {
        let w = web();
        assert!(w
            .check_host(&headers(&[("host", "127.0.0.1:4835")]))
            .is_ok());
        assert!(w
            .check_host(&headers(&[("host", "localhost:4835")]))
            .is_ok());
        assert!(w
            .check_host(&headers(&[
                ("host", "127.0.0.1:4835"),
                ("origin", "http://localhost:4835")
            ]))
            .is_ok());
        for bad in [
            vec![("host", "evil.example:4835")],
            vec![("host", "127.0.0.1:4836")],
            vec![],
            vec![
                ("host", "127.0.0.1:4835"),
                ("origin", "http://evil.example"),
            ],
            vec![("host", "127.0.0.1:4835"), ("origin", "null")],
        ] {
            assert!(w.check_host(&headers(&bad)).is_err(), "{bad:?} passed");
        }
    }

    #[test]
    fn a_session_write_needs_its_csrf_token() {
        let w = web();
        let t = w.login_url();
        let token = t.rsplit('=').next().unwrap();
        let s = w.redeem(token).unwrap();
        let c = format!("other=1; {}={}", w.cookie_name(), s.id);
        let get = headers(&[("cookie", &c)]);
        assert_eq!(
            w.caller(&Method::GET, &get),
            Ok(Caller::Session(s.id.clone()))
        );
        assert!(w.caller(&Method::POST, &get).is_err());
        let post = headers(&[("cookie", &c), (CSRF_HEADER, &s.csrf)]);
        assert_eq!(
            w.caller(&Method::POST, &post),
            Ok(Caller::Session(s.id.clone()))
        );
        let wrong = headers(&[("cookie", &c), (CSRF_HEADER, "0")]);
        assert!(w.caller(&Method::POST, &wrong).is_err());
        w.end(&s.id);
        assert!(w.caller(&Method::GET, &get).is_err());
    }

    #[test]
    fn the_bearer_token_still_works_and_a_wrong_one_fails() {
        let w = web();
        let ok = headers(&[("authorization", "Bearer api")]);
        assert_eq!(w.caller(&Method::POST, &ok), Ok(Caller::Token));
        let bad = headers(&[("authorization", "Bearer apj")]);
        assert!(w.caller(&Method::GET, &bad).is_err());
    }
}
