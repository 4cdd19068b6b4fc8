//! The audit trail through the API (protocol/sync.md §8): reads of a
//! conversation recorded as they are served, what the CLI did without the
//! node (`POST /v1/audit`), and the trails this node holds
//! (`GET /v1/audit`, for `huddle audit`).
//!
//! Invariant: a conversation read by a screen session, the CLI or a program
//! is recorded before its messages are answered; the same reader reading
//! the same conversation again within [`READ_WINDOW`] is not recorded
//! again (the screen reads a page at each new message), and the table that
//! remembers it is bounded.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{Extension, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::server::{bad_request, Answer, Fail, Shared};
use crate::ids::{ConversationId, DeviceId, MemberId};
use crate::node::Command;
use crate::trail::{Action, Via};
use crate::web::Caller;

/// A reader's reads of one conversation within this long count once.
pub const READ_WINDOW: Duration = Duration::from_secs(5 * 60);
/// The most (reader, conversation) pairs remembered.
const MAX_READS: usize = 4096;
/// The header the CLI's client sends, so its reads are told from a program's.
pub const CLIENT_HEADER: &str = "x-huddle-client";

#[derive(Default)]
pub(super) struct Reads(Mutex<HashMap<(String, ConversationId), Instant>>);

impl Reads {
    /// Is this read one to record (and, if so, remembered from now)?
    fn first(&self, who: String, conversation: ConversationId, now: Instant) -> bool {
        let mut reads = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if reads
            .get(&(who.clone(), conversation))
            .is_some_and(|at| now.duration_since(*at) < READ_WINDOW)
        {
            return false;
        }
        if reads.len() >= MAX_READS {
            reads.retain(|_, at| now.duration_since(*at) < READ_WINDOW);
            if reads.len() >= MAX_READS {
                reads.clear();
            }
        }
        reads.insert((who, conversation), now);
        true
    }
}

/// Who is reading, as the trail names it.
fn reader(caller: &Caller, headers: &HeaderMap) -> (String, Via) {
    match caller {
        Caller::Session(id) => (format!("session {id}"), Via::Screen),
        Caller::Token if headers.get(CLIENT_HEADER).is_some_and(|v| v == "cli") => {
            ("cli".into(), Via::Cli)
        }
        Caller::Token => ("api".into(), Via::Api),
    }
}

/// Records that `caller` read `conversation`, unless it did just before.
pub(super) async fn record_read(
    s: &Shared,
    caller: &Caller,
    headers: &HeaderMap,
    conversation: ConversationId,
) -> Result<(), Fail> {
    let (who, via) = reader(caller, headers);
    if s.reads.first(who, conversation, Instant::now()) {
        let action = Action::Opened { conversation, via };
        s.handle.command(Command::Audit(action)).await?;
    }
    Ok(())
}

/// What the CLI records through a running node: what it did without one.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum AuditRecord {
    PassphraseChanged { first: bool },
    PinChanged { cleared: bool },
    Admitted { member: MemberId, device: DeviceId },
}

impl From<AuditRecord> for Action {
    fn from(r: AuditRecord) -> Action {
        match r {
            AuditRecord::PassphraseChanged { first } => Action::PassphraseChanged { first },
            AuditRecord::PinChanged { cleared } => Action::PinChanged { cleared },
            AuditRecord::Admitted { member, device } => Action::Admitted { member, device },
        }
    }
}

/// `POST /v1/audit` (the bearer token only: a screen records by acting).
pub(super) async fn record(
    State(s): State<Shared>,
    Extension(caller): Extension<Caller>,
    Json(r): Json<AuditRecord>,
) -> Answer<serde_json::Value> {
    if !matches!(caller, Caller::Token) {
        return Err(bad_request("only the CLI records audit entries this way"));
    }
    s.handle.command(Command::Audit(r.into())).await?;
    Ok(Json(serde_json::json!({})))
}

/// Every trail this node holds, as stored (hex), and its findings.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct AuditDump {
    /// This device.
    pub device: Option<DeviceId>,
    /// Whether it holds the team key (and so others' trails).
    pub admin: bool,
    pub trails: Vec<TrailDump>,
    /// `trail::Finding`s, hex.
    pub findings: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrailDump {
    pub device: DeviceId,
    /// (place stored at, entry in hex), in place order.
    pub entries: Vec<(u64, String)>,
}

impl AuditDump {
    /// What a node holds, read from its store with `reader`.
    pub fn read(
        device: DeviceId,
        admin: bool,
        reader: &crate::node::TrailReader,
    ) -> Result<AuditDump, crate::store::StoreError> {
        let hex = |b: &[u8]| data_encoding::HEXLOWER.encode(b);
        Ok(AuditDump {
            device: Some(device),
            admin,
            trails: reader
                .trails()?
                .into_iter()
                .map(|(device, entries)| TrailDump {
                    device,
                    entries: entries.iter().map(|(p, e)| (*p, hex(e))).collect(),
                })
                .collect(),
            findings: reader.findings.iter().map(|f| hex(f)).collect(),
        })
    }
}

/// `GET /v1/audit`: read off the node's loop, which goes on syncing.
pub(super) async fn dump(State(s): State<Shared>) -> Answer<AuditDump> {
    let (device, admin, reader) = s
        .handle
        .query(|n| (n.device_id(), n.is_trail_admin(), n.trail_reader()))
        .await?;
    let fail = |why: String| {
        Fail(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            format!("the audit trail could not be read: {why}"),
        )
    };
    tokio::task::spawn_blocking(move || AuditDump::read(device, admin, &reader))
        .await
        .map_err(|e| fail(e.to_string()))?
        .map(Json)
        .map_err(|e| fail(e.to_string()))
}
