//! The screen's own routes: the page and its assets, sign-in, the idle
//! lock and QR codes. The `/v1` API the page uses is the CLI's
//! (`crate::api`), authorized by [`Web::caller`].

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::{Caller, Web};
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
}

fn signed_out() -> Response {
    signed_out_refusal().into_response()
}

fn signed_out_refusal() -> Refusal {
    Refusal(
        StatusCode::UNAUTHORIZED,
        "this screen is locked or signed out: run `huddle open` for a new sign-in link".into(),
    )
}

/// `GET /web/session`: the page's CSRF token and idle time.
async fn session(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    match web.session(&headers) {
        Some((_, csrf)) => Json(SessionInfo {
            csrf,
            lock_after_ms: web.lock_after().as_millis() as u64,
            admin: web.admin.as_ref().is_some_and(|a| a.holds_key()),
        })
        .into_response(),
        None => signed_out(),
    }
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

/// `POST /web/lock`: ends the session.
async fn lock(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    let id = match session_writer(&web, &headers) {
        Ok(id) => id,
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
