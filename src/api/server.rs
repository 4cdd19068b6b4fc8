//! The axum router and its handlers (see the module docs of [`crate::api`]).
//!
//! Invariant: every error this server answers is `{"error": "one sentence"}`
//! JSON with its status. Handlers answer with [`Fail`]; what axum answers by
//! itself (rejected bodies, queries and paths, unknown paths, wrong
//! methods, bodies over [`BODY_LIMIT`]) is rewritten by one outer layer,
//! [`json_errors`], so no route can forget it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Extension, Path, Query, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{self, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::Stream;
use serde::Deserialize;
use thiserror::Error;
use tokio::sync::broadcast::error::RecvError;

use super::types::{
    Chat, Created, ErrorBody, EventJson, HistoryMessage, Member, MessageRef, NewConversation, Peer,
    RevokeRequest, SendRequest, Status,
};
use super::views;
use crate::datadir::ApiInfo;
use crate::ids::{ConversationId, MessageId};
use crate::net::{FoundBy, NodeHandle, ShellError};
use crate::node::{Command, CommandError, Reply};
use crate::web::{Caller, Web, WebOptions};

#[derive(Debug, Error)]
pub enum ApiError {
    #[error("the local API must listen on a loopback address such as 127.0.0.1:0, not {0}")]
    NotLoopback(SocketAddr),
    #[error("cannot listen for the local API on {addr} ({error}): choose another port with --api 127.0.0.1:PORT")]
    Bind {
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("the node stopped before its local API started: {0}")]
    NodeGone(String),
}

/// A running API server; it stops when dropped.
pub struct ApiServer {
    pub addr: SocketAddr,
    pub token: String,
    web: Arc<Web>,
    task: tokio::task::JoinHandle<()>,
}

impl ApiServer {
    /// A one-time URL that signs a browser in to this node's screen.
    pub fn login_url(&self) -> String {
        self.web.login_url()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What `api.json` records so that the CLI finds this server.
    pub fn info(&self) -> ApiInfo {
        ApiInfo {
            url: self.url(),
            token: self.token.clone(),
            pid: std::process::id(),
        }
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        // Event streams never end by themselves, so a graceful shutdown
        // would wait forever: the node is stopping anyway.
        self.task.abort();
    }
}

pub(super) struct AppState {
    pub(super) handle: NodeHandle,
    web: Arc<Web>,
    pub(super) reads: super::audit::Reads,
}

pub(super) type Shared = Arc<AppState>;

/// Binds `addr` (loopback only) and serves the API for `handle`, and the
/// screen with the default idle lock.
pub async fn start(handle: NodeHandle, addr: SocketAddr) -> Result<ApiServer, ApiError> {
    start_with(handle, addr, WebOptions::default()).await
}

/// [`start`], with the screen's options.
pub async fn start_with(
    handle: NodeHandle,
    addr: SocketAddr,
    options: WebOptions,
) -> Result<ApiServer, ApiError> {
    if !addr.ip().is_loopback() {
        return Err(ApiError::NotLoopback(addr));
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|error| ApiError::Bind { addr, error })?;
    let addr = listener
        .local_addr()
        .map_err(|error| ApiError::Bind { addr, error })?;
    let token = super::new_token();
    let device = handle
        .query(|n| n.device_id())
        .await
        .map_err(|e| ApiError::NodeGone(e.to_string()))?;
    let web = Web::new(&device, addr, token.clone(), options, Some(handle.clone()));
    let state = Arc::new(AppState {
        handle,
        web: web.clone(),
        reads: Default::default(),
    });
    let app = router(state);
    // Small writes (an event, a short answer) go out at once, never held
    // back waiting for the reader's delayed ACK (Nagle's algorithm).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("TCP_NODELAY on a local API connection: {e}");
        }
    });
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!("the local API stopped: {e}");
        }
    });
    Ok(ApiServer {
        addr,
        token,
        web,
        task,
    })
}

fn router(state: Shared) -> Router {
    let api = Router::new()
        .route("/v1/status", get(status))
        .route("/v1/conversations", get(chats).post(create))
        .route("/v1/conversations/{id}/messages", get(history).post(send))
        .route("/v1/conversations/{id}/read", post(mark_read))
        .route("/v1/conversations/{id}/export", get(export))
        .route("/v1/conversations/{id}/messages/{message}/ack", post(ack))
        .route("/v1/messages", get(find_messages))
        .route("/v1/directory", get(directory))
        .route("/v1/peers", get(peers))
        .route("/v1/revocations", post(revoke))
        .route("/v1/events", get(events))
        .route(
            "/v1/audit",
            get(super::audit::dump).post(super::audit::record),
        )
        .merge(super::clinical::routes())
        .merge(super::blobs::routes())
        // Unknown paths too answer only with the token (then 404).
        .fallback(|| async { StatusCode::NOT_FOUND })
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .with_state(state.clone());
    api.merge(crate::web::routes(state.web.clone()))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn(json_errors))
        .layer(middleware::from_fn_with_state(state, guard))
}

/// Outermost: refuses requests not addressed to this node (DNS
/// rebinding, cross-site pages) and hardens every response.
async fn guard(State(s): State<Shared>, req: Request, next: Next) -> Response {
    let mut res = match s.web.check_host(req.headers()) {
        Ok(()) => next.run(req).await,
        Err(why) => Fail(StatusCode::FORBIDDEN, why).into_response(),
    };
    crate::web::harden(res.headers_mut());
    res
}

/// The largest request body read: a 16 KiB message is at most ~100 KiB of
/// JSON even written entirely in `\u` escapes.
pub const BODY_LIMIT: usize = 256 * 1024;

/// Rewrites every error response that is not JSON yet — axum's own
/// rejections and its empty 404 and 405 — as [`Fail`] does, keeping the
/// status (and `Allow`). Success responses (JSON, SSE) pass untouched.
async fn json_errors(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    // Echoed in the sentence, so bounded: the URI's own bound is hyper's.
    let path: String = req.uri().path().chars().take(200).collect();
    let res = next.run(req).await;
    let status = res.status();
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return res;
    }
    let allow = res.headers().get(header::ALLOW).cloned();
    // axum's rejection texts are short; a longer one is cut, not read whole.
    let said = axum::body::to_bytes(res.into_body(), 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let mut out = Fail(
        status,
        sentence(status, &method, &path, &said, allow.as_ref()),
    )
    .into_response();
    if let Some(allow) = allow {
        out.headers_mut().insert(header::ALLOW, allow);
    }
    out
}

/// One sentence for an error axum answered: ours where axum's says too
/// little, axum's (which names the field or position) otherwise.
fn sentence(
    status: StatusCode,
    method: &Method,
    path: &str,
    said: &str,
    allow: Option<&header::HeaderValue>,
) -> String {
    match status {
        StatusCode::NOT_FOUND => {
            format!("no such API path: {method} {path} (the README lists the API's paths)")
        }
        StatusCode::METHOD_NOT_ALLOWED => match allow.and_then(|a| a.to_str().ok()) {
            Some(allowed) => format!("{method} is not allowed on {path}; use {allowed}"),
            None => {
                format!("{method} is not allowed on {path} (the README lists each path's method)")
            }
        },
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            "send the request body as JSON, with the header Content-Type: application/json".into()
        }
        StatusCode::PAYLOAD_TOO_LARGE => {
            format!(
                "the request body is too large (the limit is {} KiB)",
                BODY_LIMIT / 1024
            )
        }
        _ if said.is_empty() => status
            .canonical_reason()
            .unwrap_or("the request failed")
            .to_owned(),
        _ => said.to_owned(),
    }
}

/// An error response: a status and one sentence.
pub(super) struct Fail(pub(super) StatusCode, pub(super) String);

impl IntoResponse for Fail {
    fn into_response(self) -> Response {
        (self.0, Json(ErrorBody { error: self.1 })).into_response()
    }
}

impl From<ShellError> for Fail {
    fn from(e: ShellError) -> Fail {
        match e {
            ShellError::Command(c) => c.into(),
            other => Fail(StatusCode::SERVICE_UNAVAILABLE, other.to_string()),
        }
    }
}

impl From<CommandError> for Fail {
    fn from(e: CommandError) -> Fail {
        let code = match e {
            CommandError::UnknownConversation(_) | CommandError::UnknownMessage(_) => {
                StatusCode::NOT_FOUND
            }
            CommandError::Document(_) | CommandError::Unreadable(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            _ => StatusCode::BAD_REQUEST,
        };
        Fail(code, e.to_string())
    }
}

pub(super) type Answer<T> = Result<Json<T>, Fail>;

pub(super) fn bad_request(msg: impl Into<String>) -> Fail {
    Fail(StatusCode::BAD_REQUEST, msg.into())
}

/// The bearer token (the CLI) or a signed-in screen, whose writes carry
/// its CSRF token ([`Web::caller`]).
async fn authorize(State(s): State<Shared>, mut req: Request, next: Next) -> Response {
    match s.web.caller(req.method(), req.headers()) {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(why) => Fail(StatusCode::UNAUTHORIZED, why).into_response(),
    }
}

pub(super) fn conversation_id(s: &str) -> Result<ConversationId, Fail> {
    s.parse()
        .map_err(|_| bad_request(format!("\"{s}\" is not a conversation id (32 hex digits)")))
}

pub(super) fn message_id(s: &str) -> Result<MessageId, Fail> {
    s.parse()
        .map_err(|_| bad_request(format!("\"{s}\" is not a message id (32 hex digits)")))
}

async fn status(State(s): State<Shared>) -> Answer<Status> {
    let mut st = s.handle.query(views::status).await?;
    st.listen = s
        .handle
        .listen_addrs()
        .await?
        .iter()
        .map(|a| a.to_string())
        .collect();
    let stats = s.handle.stats().await?;
    st.resources = stats.resources;
    let (stored, quota) = s.handle.blobs().usage();
    st.blobs = super::types::BlobUse {
        traffic: stats.blobs,
        stored,
        quota,
    };
    let reach = s.handle.reach().await?;
    st.mdns = reach.mdns;
    st.dialling = reach.dialling.iter().map(|a| a.to_string()).collect();
    Ok(Json(st))
}

async fn chats(State(s): State<Shared>) -> Answer<Vec<Chat>> {
    Ok(Json(s.handle.query(views::chats).await?))
}

async fn create(
    State(s): State<Shared>,
    Json(req): Json<NewConversation>,
) -> Answer<Created<ConversationId>> {
    let cmd = s
        .handle
        .query(move |n| views::create_command(n, req))
        .await??;
    match s.handle.command(cmd).await? {
        Reply::Conversation(id) => Ok(Json(Created { id })),
        other => Err(unexpected(other)),
    }
}

pub(super) fn unexpected(r: Reply) -> Fail {
    Fail(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("the node gave an unexpected reply ({r:?}); please report this"),
    )
}

#[derive(Deserialize)]
struct Page {
    limit: Option<usize>,
    /// A message id: the page ends just before it (a cursor to read
    /// further back).
    before: Option<String>,
}

async fn history(
    State(s): State<Shared>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<Page>,
) -> Answer<Vec<HistoryMessage>> {
    let id = conversation_id(&id)?;
    let before = q.before.as_deref().map(message_id).transpose()?;
    super::audit::record_read(&s, &caller, &headers, id).await?;
    s.handle
        .query(move |n| {
            views::history_page(n, &id, before.as_ref(), q.limit.unwrap_or(usize::MAX))
                .ok_or_else(|| n.missing(id))?
        })
        .await?
        .map(|mut page| {
            super::blobs::enrich(s.handle.blobs(), id, &mut page);
            Json(page)
        })
        .map_err(Fail::from)
}

#[derive(Deserialize)]
struct Since {
    /// Only messages the author sent at or after this time (ms since the
    /// epoch).
    since: Option<u64>,
    /// `fhir` when the export is for the patient record (for the trail).
    format: Option<String>,
}

/// What an export of the conversation needs (`api::views::export_input`):
/// the CLI turns it into FHIR or huddle's plain form.
async fn export(
    State(s): State<Shared>,
    Path(id): Path<String>,
    Query(q): Query<Since>,
) -> Answer<crate::export::ExportInput> {
    let id = conversation_id(&id)?;
    let now = crate::net::now_ms();
    let input = s
        .handle
        .query(move |n| views::export_input(n, &id, q.since, now).ok_or_else(|| n.missing(id)))
        .await??;
    let action = crate::trail::Action::Exported {
        conversation: id,
        fhir: q.format.as_deref() == Some("fhir"),
        since: q.since.unwrap_or(0),
    };
    s.handle.command(Command::Audit(action)).await?;
    Ok(Json(input))
}

async fn send(
    State(s): State<Shared>,
    Path(id): Path<String>,
    Json(req): Json<SendRequest>,
) -> Answer<Created<MessageId>> {
    let conversation = conversation_id(&id)?;
    let fields = req
        .fields(s.handle.blobs(), conversation)
        .map_err(bad_request)?;
    let cmd = Command::Send {
        conversation,
        body: req.body,
        priority: req.priority,
        reply_to: req.reply_to,
        fields,
    };
    match s.handle.command(cmd).await? {
        Reply::Message(id) => Ok(Json(Created { id })),
        other => Err(unexpected(other)),
    }
}

async fn mark_read(State(s): State<Shared>, Path(id): Path<String>) -> Answer<serde_json::Value> {
    let conversation = conversation_id(&id)?;
    s.handle.command(Command::MarkRead { conversation }).await?;
    Ok(Json(serde_json::json!({})))
}

async fn ack(
    State(s): State<Shared>,
    Path((id, message)): Path<(String, String)>,
) -> Answer<serde_json::Value> {
    let conversation = conversation_id(&id)?;
    let message = message_id(&message)?;
    s.handle
        .command(Command::Ack {
            conversation,
            message,
        })
        .await?;
    Ok(Json(serde_json::json!({})))
}

#[derive(Deserialize)]
struct Prefix {
    prefix: String,
}

async fn find_messages(
    State(s): State<Shared>,
    Query(q): Query<Prefix>,
) -> Answer<Vec<MessageRef>> {
    if q.prefix.is_empty() || !q.prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad_request("a message id prefix is one or more hex digits"));
    }
    Ok(Json(
        s.handle
            .query(move |n| views::find_messages(n, &q.prefix))
            .await?,
    ))
}

async fn directory(State(s): State<Shared>) -> Answer<Vec<Member>> {
    Ok(Json(s.handle.query(views::directory).await?))
}

async fn peers(State(s): State<Shared>) -> Answer<Vec<Peer>> {
    let known = s.handle.query(|n| n.peers()).await?;
    let conns = s.handle.connections().await?;
    let mut out: Vec<Peer> = conns
        .iter()
        .map(|c| {
            let info = known.iter().find(|p| p.device == c.device);
            Peer {
                device: c.device,
                member: info.and_then(|p| p.member),
                name: info.and_then(|p| p.name.clone()),
                verified: info.is_some_and(|p| p.verified),
                address: Some(c.addr.to_string()),
                found_by: Some(found_by(&c.found_by).to_owned()),
                since_ms: Some(c.since_ms),
            }
        })
        .collect();
    for p in known {
        if !out.iter().any(|o| o.device == p.device) {
            out.push(Peer {
                device: p.device,
                member: p.member,
                name: p.name,
                verified: p.verified,
                address: None,
                found_by: None,
                since_ms: None,
            });
        }
    }
    Ok(Json(out))
}

fn found_by(f: &FoundBy) -> &'static str {
    match f {
        FoundBy::Mdns => "mdns",
        FoundBy::Static => "static",
        FoundBy::Inbound => "inbound",
        FoundBy::Dialed => "dialed",
    }
}

async fn revoke(
    State(s): State<Shared>,
    Json(req): Json<RevokeRequest>,
) -> Answer<serde_json::Value> {
    let rev = req
        .decode()
        .ok_or_else(|| bad_request("the revocation is not a hex-encoded huddle revocation"))?;
    s.handle.command(Command::Revoke(rev)).await?;
    Ok(Json(serde_json::json!({})))
}

/// The live events; a screen's stream ends when its session locks.
async fn events(
    State(s): State<Shared>,
    Extension(caller): Extension<Caller>,
) -> Sse<impl Stream<Item = Result<sse::Event, Infallible>>> {
    let rx = s.handle.subscribe();
    let session = match caller {
        Caller::Session(id) => Some((s.web.clone(), id, s.web.lock_changes())),
        Caller::Token => None,
    };
    let stream = futures::stream::unfold((rx, session), |(mut rx, mut session)| async move {
        let next = loop {
            let Some((web, id, locks)) = &mut session else {
                break rx.recv().await;
            };
            let locks_at = web.locks_at(id)?;
            tokio::select! {
                // Nothing reaches a session that locked while it waited.
                e = rx.recv() => { web.locks_at(id)?; break e }
                () = tokio::time::sleep_until(locks_at.into()) => {}
                _ = locks.changed() => {}
            }
        };
        let json = match next {
            Ok(e) => EventJson::from(&e),
            Err(RecvError::Lagged(missed)) => EventJson::Lagged { missed },
            Err(RecvError::Closed) => return None,
        };
        let data = serde_json::to_string(&json).expect("events serialize");
        Some((
            Ok(sse::Event::default().event(json.name()).data(data)),
            (rx, session),
        ))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
