//! The screen's own routes: the page and its assets, sign-in, the idle
//! lock (unlocking is `unlock.rs`), sign-out and QR codes. The `/v1` API the page uses is the CLI's
//! (`crate::api`), authorized by [`Web::caller`].

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::{Caller, SessionState, UnlockWith, Web};
use crate::api::types::ErrorBody;

const INDEX: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const VIEWS_JS: &str = include_str!("assets/views.js");
const ATTACH_JS: &str = include_str!("assets/attach.js");
const APP_CSS: &str = include_str!("assets/app.css");
const ICON: &str = include_str!("assets/icon.svg");

/// The longest text a QR code is drawn for (a device id is ~52
/// characters, an admission token a few hundred).
pub const QR_MAX: usize = 1024;

pub fn routes(web: Arc<Web>) -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/views.js",
            get(|| async { asset("text/javascript; charset=utf-8", VIEWS_JS) }),
        )
        .route(
            "/attach.js",
            get(|| async { asset("text/javascript; charset=utf-8", ATTACH_JS) }),
        )
        .route(
            "/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
        .route("/icon.svg", get(|| async { asset("image/svg+xml", ICON) }))
        .route("/login", get(login))
        .route("/web/login", post(mint_login))
        .route("/web/session", get(session))
        .route("/web/alive", post(alive))
        .route("/web/lock", post(lock))
        .route(
            "/web/unlock",
            post(super::unlock::unlock)
                .layer(DefaultBodyLimit::max(super::unlock::MAX_UNLOCK_BODY)),
        )
        .route("/web/signout", post(signout))
        .route("/web/qr", get(qr))
        .route("/web/admin/admit", post(super::admin::admit))
        .route("/web/admin/revoke", post(super::admin::revoke))
        .with_state(web)
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, kind)], body).into_response()
}

pub(super) fn refuse(status: StatusCode, why: impl Into<String>) -> Response {
    Refusal(status, why.into()).into_response()
}

/// An error answer not yet made a response (small, for `Result`s).
pub(super) struct Refusal(pub StatusCode, pub String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.0, Json(ErrorBody { error: self.1 })).into_response()
    }
}

#[derive(Deserialize)]
struct LoginQuery {
    t: Option<String>,
}

/// Opens a session from a one-time URL and sends the browser to the page;
/// a used or stale link sends it to the page's "sign in again" screen.
async fn login(State(web): State<Arc<Web>>, Query(q): Query<LoginQuery>) -> Response {
    let Some(opened) = q.t.as_deref().and_then(|t| web.redeem(t)) else {
        return Redirect::to("/#link-used").into_response();
    };
    let cookie = format!(
        "{}={}; HttpOnly; SameSite=Strict; Path=/",
        web.cookie_name(),
        opened.id
    );
    let mut res = Redirect::to("/").into_response();
    if let Ok(v) = cookie.parse() {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    res
}

#[derive(Serialize, Deserialize)]
pub struct LoginUrl {
    pub url: String,
}

/// `POST /web/login`, with the API's bearer token only: a one-time URL.
async fn mint_login(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    match web.caller(&axum::http::Method::POST, &headers) {
        Ok(Caller::Token) => Json(LoginUrl {
            url: web.login_url(),
        })
        .into_response(),
        _ => refuse(
            StatusCode::UNAUTHORIZED,
            "a login URL is given only for the API's bearer token (run `huddle open`)",
        ),
    }
}

#[derive(Serialize)]
struct SessionInfo {
    csrf: String,
    lock_after_ms: u64,
    /// This device holds the team key: the Team page admits and revokes.
    admin: bool,
    /// The session is locked: only `/web/unlock` (or a new link) opens it.
    locked: bool,
    /// What unlocks it on this device.
    unlock_with: UnlockWith,
}

pub(super) fn signed_out() -> Response {
    signed_out_refusal().into_response()
}

fn signed_out_refusal() -> Refusal {
    Refusal(
        StatusCode::UNAUTHORIZED,
        "this screen is locked or signed out: unlock it, or run `huddle open` for a new sign-in link".into(),
    )
}

/// `GET /web/session`: the page's CSRF token and idle time, and whether
/// it is locked (a locked session learns nothing else).
async fn session(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    match web.session_state(&headers) {
        Some((_, state)) => Json(SessionInfo {
            admin: !state.locked && web.admin.as_ref().is_some_and(|a| a.holds_key()),
            csrf: state.csrf,
            lock_after_ms: web.lock_after().as_millis() as u64,
            locked: state.locked,
            unlock_with: web.unlock_with(),
        })
        .into_response(),
        None => signed_out(),
    }
}

/// A write from a session's page, open or locked (its CSRF header
/// checked): locking, unlocking, signing out.
pub(super) fn any_session_writer(
    web: &Web,
    headers: &HeaderMap,
) -> Result<(String, SessionState), Refusal> {
    if headers.contains_key(header::AUTHORIZATION) {
        return Err(Refusal(
            StatusCode::BAD_REQUEST,
            "this is for the screen's session".into(),
        ));
    }
    let (id, state) = web.session_state(headers).ok_or_else(signed_out_refusal)?;
    let given = headers.get(super::CSRF_HEADER).map(|v| v.as_bytes());
    if !given.is_some_and(|g| super::constant_time_eq(g, state.csrf.as_bytes())) {
        return Err(Refusal(
            StatusCode::FORBIDDEN,
            format!(
                "a write from the screen must carry the {} header",
                super::CSRF_HEADER
            ),
        ));
    }
    Ok((id, state))
}

pub(super) fn session_writer(web: &Web, headers: &HeaderMap) -> Result<String, Refusal> {
    match web.caller(&axum::http::Method::POST, headers) {
        Ok(Caller::Session(id)) => Ok(id),
        Ok(Caller::Token) => Err(Refusal(
            StatusCode::BAD_REQUEST,
            "this is for the screen's session".into(),
        )),
        Err(_) => Err(signed_out_refusal()),
    }
}

#[derive(Serialize)]
struct Alive {
    locks_in_ms: u64,
}

/// `POST /web/alive`: a person used the page.
async fn alive(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    let id = match session_writer(&web, &headers) {
        Ok(id) => id,
        Err(r) => return r.into_response(),
    };
    match web.alive(&id) {
        Some(at) => Json(Alive {
            locks_in_ms: at
                .saturating_duration_since(std::time::Instant::now())
                .as_millis() as u64,
        })
        .into_response(),
        None => signed_out(),
    }
}

/// `POST /web/lock`: locks the session (the Lock button, or the page's
/// own idle timer); it keeps its cookie, to be unlocked.
async fn lock(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    match any_session_writer(&web, &headers) {
        Ok((id, _)) if web.lock(&id) => Json(serde_json::json!({})).into_response(),
        Ok(_) => signed_out(),
        Err(r) => r.into_response(),
    }
}

/// `POST /web/signout`: ends the session, open or locked, and its cookie.
async fn signout(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    let id = match any_session_writer(&web, &headers) {
        Ok((id, _)) => id,
        Err(r) => return r.into_response(),
    };
    web.end(&id);
    let gone = format!(
        "{}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0",
        web.cookie_name()
    );
    let mut res = Json(serde_json::json!({})).into_response();
    if let Ok(v) = gone.parse() {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    res
}

#[derive(Deserialize)]
struct QrQuery {
    text: String,
}

/// `GET /web/qr?text=…`: the text as a QR code (SVG), for a signed-in page.
async fn qr(State(web): State<Arc<Web>>, headers: HeaderMap, Query(q): Query<QrQuery>) -> Response {
    if web.session(&headers).is_none() {
        return signed_out();
    }
    if q.text.is_empty() || q.text.len() > QR_MAX {
        return refuse(
            StatusCode::BAD_REQUEST,
            format!("a QR code is drawn for 1 to {QR_MAX} bytes of text"),
        );
    }
    match qrcode::QrCode::new(q.text.as_bytes()) {
        Ok(code) => {
            let svg = code
                .render::<qrcode::render::svg::Color<'_>>()
                .min_dimensions(240, 240)
                .quiet_zone(true)
                .build();
            ([(header::CONTENT_TYPE, "image/svg+xml")], svg).into_response()
        }
        Err(e) => refuse(
            StatusCode::BAD_REQUEST,
            format!("no QR code for this text: {e}"),
        ),
    }
}
