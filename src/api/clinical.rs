//! The clinical endpoints (sync.md §7.6): what waits for me, the team's
//! policy, who is on call, and reminders done or snoozed. Reads go through
//! `NodeHandle::query`, changes through `NodeHandle::command`, as for the
//! rest of the API.

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};

use super::server::{bad_request, conversation_id, message_id, Answer, Fail, Shared};
use super::types::{OnCallRequest, PolicyView, ReminderAction, SignedRequest};
use crate::clinical::{Assignment, SignedPolicy};
use crate::ids::{ConversationId, MessageId};
use crate::net::now_ms;
use crate::node::{Alert, Command, Node, OnCallView};

pub(super) fn routes() -> Router<Shared> {
    Router::new()
        .route("/v1/alerts", get(alerts))
        .route("/v1/team/policy", get(policy).post(set_policy))
        .route("/v1/oncall", get(oncall).post(set_oncall))
        .route("/v1/oncall/signed", post(add_assignment))
        .route("/v1/oncall/overlapping", get(overlapping))
        .route("/v1/conversations/{id}/messages/{message}/done", post(done))
        .route(
            "/v1/conversations/{id}/messages/{message}/snooze",
            post(snooze),
        )
}

/// The policy in force, as a view (also for the CLI offline).
pub fn policy_view(n: &Node) -> PolicyView {
    PolicyView {
        policy: n.clinical_policy().clone(),
        issued_ms: n.signed_policy().map(|p| p.issued),
    }
}

async fn alerts(State(s): State<Shared>) -> Answer<Vec<Alert>> {
    Ok(Json(s.handle.query(|n| n.alerts(now_ms())).await?))
}

async fn policy(State(s): State<Shared>) -> Answer<PolicyView> {
    Ok(Json(s.handle.query(policy_view).await?))
}

fn decode_hex<T>(
    req: &SignedRequest,
    what: &str,
    decode: impl Fn(&[u8]) -> Result<T, crate::codec::DecodeError>,
) -> Result<T, Fail> {
    let bytes = data_encoding::HEXLOWER_PERMISSIVE
        .decode(req.hex.trim().as_bytes())
        .map_err(|_| bad_request(format!("the {what} is not hex")))?;
    decode(&bytes).map_err(|e| bad_request(format!("the {what} does not decode: {e}")))
}

async fn set_policy(State(s): State<Shared>, Json(req): Json<SignedRequest>) -> Answer<PolicyView> {
    let p = decode_hex(&req, "policy", SignedPolicy::decode)?;
    s.handle.command(Command::SetPolicy(Box::new(p))).await?;
    Ok(Json(s.handle.query(policy_view).await?))
}

async fn oncall(State(s): State<Shared>) -> Answer<Vec<OnCallView>> {
    Ok(Json(s.handle.query(|n| n.on_call_view(now_ms())).await?))
}

#[derive(serde::Deserialize)]
struct Span {
    role: String,
    from_ms: u64,
    to_ms: u64,
}

/// The assignments for a role that overlap a time: what a new assignment
/// (signed elsewhere, with the team key) replaces.
async fn overlapping(
    State(s): State<Shared>,
    axum::extract::Query(q): axum::extract::Query<Span>,
) -> Answer<Vec<String>> {
    let ids = s
        .handle
        .query(move |n| n.roster().overlapping(&q.role, q.from_ms, q.to_ms))
        .await?;
    Ok(Json(
        ids.iter()
            .map(|id| data_encoding::HEXLOWER.encode(id))
            .collect(),
    ))
}

async fn set_oncall(
    State(s): State<Shared>,
    Json(req): Json<OnCallRequest>,
) -> Answer<Vec<OnCallView>> {
    s.handle
        .command(Command::OnCall {
            role: req.role,
            holders: req.holders,
            from_ms: req.from_ms,
            to_ms: req.to_ms,
        })
        .await?;
    Ok(Json(s.handle.query(|n| n.on_call_view(now_ms())).await?))
}

async fn add_assignment(
    State(s): State<Shared>,
    Json(req): Json<SignedRequest>,
) -> Answer<Vec<OnCallView>> {
    let a = decode_hex(&req, "on-call assignment", Assignment::decode)?;
    s.handle
        .command(Command::AddAssignment(Box::new(a)))
        .await?;
    Ok(Json(s.handle.query(|n| n.on_call_view(now_ms())).await?))
}

async fn done(
    State(s): State<Shared>,
    Path(ids): Path<(String, String)>,
    Json(req): Json<ReminderAction>,
) -> Answer<serde_json::Value> {
    reminder_command(&s, ids, |conversation, message| {
        Ok(Command::ReminderDone {
            conversation,
            message,
            occurrence: req.occurrence,
        })
    })
    .await
}

async fn snooze(
    State(s): State<Shared>,
    Path(ids): Path<(String, String)>,
    Json(req): Json<ReminderAction>,
) -> Answer<serde_json::Value> {
    reminder_command(&s, ids, |conversation, message| {
        let until = req
            .until_ms
            .ok_or_else(|| bad_request("a snooze needs until_ms: when the reminder fires again"))?;
        Ok(Command::Snooze {
            conversation,
            message,
            occurrence: req.occurrence,
            until,
        })
    })
    .await
}

/// A reminder's done or snooze, for the conversation and message in the path.
async fn reminder_command(
    s: &Shared,
    (id, message): (String, String),
    command: impl FnOnce(ConversationId, MessageId) -> Result<Command, Fail>,
) -> Answer<serde_json::Value> {
    let cmd = command(conversation_id(&id)?, message_id(&message)?)?;
    s.handle.command(cmd).await?;
    Ok(Json(serde_json::json!({})))
}
