//! Unlocking a locked screen (`POST /web/unlock`): the person gives the
//! data directory's passphrase or the device's PIN (`huddle pin set`),
//! checked against the files as they are now, off the async threads
//! (Argon2id costs a fraction of a second). Wrong secrets back off for the
//! whole node ([`super::session::Backoff`]).
//!
//! Invariants: the secret is never logged, echoed or kept after the check
//! (its buffers are zeroed); one attempt is checked at a time; during a
//! backoff an attempt is refused unchecked; every success and failure
//! passes through [`record`], the screen's one audit hook.

use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::routes::{any_session_writer, refuse, Refusal};
use super::Web;
use crate::atrest::wrap::MAX_PASSPHRASE;

/// The largest unlock request body (a passphrase is at most 1 KiB; JSON
/// escapes can make it up to six times longer).
pub const MAX_UNLOCK_BODY: usize = 8 * 1024;

/// What unlocks this device's screen, as the page shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct UnlockWith {
    /// The data directory is encrypted: its passphrase.
    pub passphrase: bool,
    /// `huddle pin set` set a PIN.
    pub pin: bool,
}

/// What the screen tells the audit trail. A session is named by a tag (a
/// hash of its id), never by the id: the id is the cookie.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScreenAudit {
    Unlocked {
        session_tag: String,
    },
    UnlockFailed {
        session_tag: String,
        /// Refused unchecked: during a backoff, or while another attempt
        /// was being checked.
        backed_off: bool,
    },
}

/// The screen's one audit hook: every unlock, and every secret checked and
/// found wrong, goes into the audit trail (sync.md §8) as the screen's,
/// durably before the attempt's answer (and before an unlocked session
/// reads anything); an attempt refused unchecked during a backoff is only
/// logged, so a locked page that keeps trying cannot flood the trail.
///
/// A checked attempt is recorded from the blocking thread that checked it
/// (it waits for the node there); the async handlers only ever record
/// attempts refused unchecked.
pub fn record(web: &Web, event: ScreenAudit) {
    use crate::trail::{Action, Via};
    let action = match event {
        ScreenAudit::Unlocked { session_tag } => {
            tracing::info!(session = %session_tag, "screen unlocked");
            Action::Unlocked { via: Via::Screen }
        }
        ScreenAudit::UnlockFailed {
            session_tag,
            backed_off,
        } => {
            tracing::info!(session = %session_tag, backed_off, "screen unlock failed");
            if backed_off {
                return;
            }
            Action::UnlockFailed {
                via: Via::Screen,
                count: 1,
            }
        }
    };
    let (Some(node), Ok(rt)) = (&web.node, tokio::runtime::Handle::try_current()) else {
        return;
    };
    if let Err(e) = rt.block_on(node.command(crate::node::Command::Audit(action))) {
        tracing::warn!("could not record a screen unlock in the audit trail: {e}");
    }
}

/// The short tag the audit trail names a session by.
fn session_tag(id: &str) -> String {
    let hash = blake3::hash(id.as_bytes());
    data_encoding::HEXLOWER.encode(&hash.as_bytes()[..4])
}

/// The first backoff: 30 s, or in a debug build the milliseconds in
/// `HUDDLE_TEST_UNLOCK_BACKOFF_MS` (the tests do not wait 30 s; a release
/// build ignores it).
pub fn first_backoff() -> Duration {
    let test = cfg!(debug_assertions)
        .then(|| std::env::var("HUDDLE_TEST_UNLOCK_BACKOFF_MS").ok())
        .flatten()
        .and_then(|v| v.parse().ok());
    test.map_or(super::session::FIRST_BACKOFF, Duration::from_millis)
}

impl Web {
    /// What can unlock this device's screen now.
    pub fn unlock_with(&self) -> UnlockWith {
        self.dir.as_ref().map_or(
            UnlockWith {
                passphrase: false,
                pin: false,
            },
            |d| UnlockWith {
                passphrase: d.is_encrypted(),
                pin: d.has_pin(),
            },
        )
    }

    fn backoff(&self) -> std::sync::MutexGuard<'_, super::session::Backoff> {
        self.backoff.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Deserialize)]
struct UnlockBody {
    secret: String,
}

/// `429` with how long to wait.
/// An attempt refused without checking its secret (logged, not in the
/// trail: `record`), told how long to wait.
fn unchecked(web: &Web, session_tag: String, why: &str, wait: Duration) -> Response {
    let backed_off = true;
    record(
        web,
        ScreenAudit::UnlockFailed {
            session_tag,
            backed_off,
        },
    );
    too_many(why, wait)
}

fn too_many(why: &str, wait: Duration) -> Response {
    let ms = wait.as_millis().max(1) as u64;
    let mut res = (
        StatusCode::TOO_MANY_REQUESTS,
        Json(serde_json::json!({ "error": why, "retry_after_ms": ms })),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&ms.div_ceil(1000).to_string()) {
        res.headers_mut().insert(header::RETRY_AFTER, v);
    }
    res
}

/// The secret in the body, its buffers zeroed when it goes.
fn secret(body: Bytes) -> Result<Zeroizing<String>, Refusal> {
    let raw = Zeroizing::new(Vec::from(body));
    let bad = |why: &str| Refusal(StatusCode::BAD_REQUEST, why.into());
    let parsed: UnlockBody = serde_json::from_slice(&raw)
        .map_err(|_| bad("the body must be JSON: {\"secret\": \"your passphrase or PIN\"}"))?;
    let secret = Zeroizing::new(parsed.secret);
    if secret.is_empty() {
        return Err(bad("give the passphrase or the PIN"));
    }
    if secret.len() > MAX_PASSPHRASE {
        return Err(bad("that is longer than any passphrase or PIN"));
    }
    Ok(secret)
}

/// `POST /web/unlock` `{"secret": …}`: opens this locked session again.
pub(super) async fn unlock(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (id, state) = match any_session_writer(&web, &headers) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    let secret = match secret(body) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    if !state.locked {
        return Json(serde_json::json!({ "unlocked": true })).into_response();
    }
    let Some(dir) = web.dir.clone().filter(|_| {
        web.unlock_with()
            != UnlockWith {
                passphrase: false,
                pin: false,
            }
    }) else {
        return refuse(
            StatusCode::CONFLICT,
            "this device has no passphrase and no PIN to unlock the screen with: run `huddle open` for a new sign-in link (`huddle pin set` sets a PIN)",
        );
    };
    let tag = session_tag(&id);
    let Some(turn) = Turn::take(&web) else {
        return unchecked(
            &web,
            tag,
            "another unlock attempt is being checked: try again in a moment",
            Duration::from_secs(1),
        );
    };
    if let Err(left) = web.backoff().check(Instant::now()) {
        return unchecked(
            &web,
            tag,
            &format!(
                "too many wrong passphrases or PINs: wait {} s, then try again",
                left.as_secs().max(1)
            ),
            left,
        );
    }
    // The outcome is counted in the blocking task, which runs to its end
    // even if the request is dropped: leaving early cannot hide a wrong
    // secret from the backoff, nor start a second check beside it.
    let settle = web.clone();
    let checked = tokio::task::spawn_blocking(move || {
        let _turn = turn;
        let result = dir.check_screen_secret(secret.as_bytes());
        drop(secret);
        settle.settle(&id, tag, result)
    })
    .await;
    match checked {
        Ok(Outcome::Unlocked) => Json(serde_json::json!({ "unlocked": true })).into_response(),
        Ok(Outcome::Gone) => super::routes::signed_out(),
        Ok(Outcome::Wrong(delay)) => {
            let mut body = serde_json::json!({ "error": "wrong passphrase or PIN" });
            if let Some(d) = delay {
                body["error"] = format!(
                    "wrong passphrase or PIN: wait {} s before the next try",
                    d.as_secs().max(1)
                )
                .into();
                body["retry_after_ms"] = (d.as_millis() as u64).into();
            }
            (StatusCode::FORBIDDEN, Json(body)).into_response()
        }
        Ok(Outcome::Unchecked(why)) => refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot check the secret: {why}"),
        ),
        Err(_) => refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the secret could not be checked",
        ),
    }
}

/// How an attempt ended.
enum Outcome {
    Unlocked,
    /// The session ended meanwhile.
    Gone,
    /// Wrong; the delay it started, if any.
    Wrong(Option<Duration>),
    /// A file could not be read (not counted as a wrong secret).
    Unchecked(String),
}

impl Web {
    /// Counts an attempt's result and opens the session if it was right.
    fn settle(
        &self,
        id: &str,
        tag: String,
        result: Result<bool, crate::datadir::DataDirError>,
    ) -> Outcome {
        match result {
            Ok(true) => {
                self.backoff().succeeded();
                // In the trail before the session reads anything.
                record(self, ScreenAudit::Unlocked { session_tag: tag });
                if !self.sessions().unlock(id, Instant::now()) {
                    return Outcome::Gone;
                }
                Outcome::Unlocked
            }
            Ok(false) => {
                let delay = self.backoff().failed(Instant::now());
                record(
                    self,
                    ScreenAudit::UnlockFailed {
                        session_tag: tag,
                        backed_off: false,
                    },
                );
                Outcome::Wrong(delay)
            }
            // A damaged `key.wrap` or PIN file matched nothing: counted,
            // so that damage cannot lift the backoff.
            Err(e) => {
                self.backoff().failed(Instant::now());
                record(
                    self,
                    ScreenAudit::UnlockFailed {
                        session_tag: tag,
                        backed_off: false,
                    },
                );
                Outcome::Unchecked(e.to_string())
            }
        }
    }
}

/// The one attempt being checked: taken, or refused while another runs;
/// given back when dropped.
struct Turn(Arc<Web>);

impl Turn {
    fn take(web: &Arc<Web>) -> Option<Turn> {
        web.checking
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| Turn(web.clone()))
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.0.checking.store(false, Ordering::Release);
    }
}
