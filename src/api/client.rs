//! A small blocking client for the local API, used by the CLI (which has no
//! async runtime for its one-shot commands).
//!
//! Invariant: every failure becomes one sentence: the server's own
//! `{"error": …}` when it answered, otherwise why it could not be reached.

use std::io::{BufRead, BufReader, Read};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;

use super::types::{AttachmentView, Uploaded};
use super::types::{
    Chat, Created, ErrorBody, EventJson, HistoryMessage, Member, MessageRef, NewConversation,
    OnCallRequest, Peer, PolicyView, ReminderAction, RevokeRequest, SendRequest, SignedRequest,
    Status,
};
use crate::datadir::ApiInfo;
use crate::ids::{ConversationId, MessageId};
use crate::membership::Revocation;

#[derive(Debug, Error)]
pub enum ClientError {
    /// The node answered with an error sentence.
    #[error("{0}")]
    Api(String),
    #[error("the running node at {url} did not answer ({why}): check that `huddle run` is still running")]
    Unreachable { url: String, why: String },
}

/// A connection to one node's API.
pub struct ApiClient {
    info: ApiInfo,
    agent: ureq::Agent,
}

fn agent(timeout: Option<Duration>) -> ureq::Agent {
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(2)))
        .timeout_global(timeout)
        // The API is on loopback: never go through a proxy from the environment.
        .proxy(None)
        .build();
    ureq::Agent::new_with_config(config)
}

impl ApiClient {
    pub fn new(info: ApiInfo) -> ApiClient {
        ApiClient {
            info,
            agent: agent(Some(Duration::from_secs(60))),
        }
    }

    /// Connects if the node recorded in `info` answers within a moment.
    pub fn probe(info: ApiInfo) -> Option<(ApiClient, Status)> {
        let c = ApiClient {
            info,
            agent: agent(Some(Duration::from_secs(3))),
        };
        let status = c.status().ok()?;
        Some((ApiClient::new(c.info), status))
    }

    pub fn url(&self) -> &str {
        &self.info.url
    }

    fn unreachable(&self, e: impl std::fmt::Display) -> ClientError {
        ClientError::Unreachable {
            url: self.info.url.clone(),
            why: e.to_string(),
        }
    }

    fn finish<T: DeserializeOwned>(
        &self,
        r: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<T, ClientError> {
        let mut resp = r.map_err(|e| self.unreachable(e))?;
        let ok = resp.status().is_success();
        let body = resp
            .body_mut()
            .with_config()
            .limit(256 * 1024 * 1024)
            .read_to_string()
            .map_err(|e| self.unreachable(e))?;
        if ok {
            serde_json::from_str(&body).map_err(|e| self.unreachable(e))
        } else {
            let msg = serde_json::from_str::<ErrorBody>(&body)
                .map(|b| b.error)
                .unwrap_or_else(|_| format!("the node answered {}", resp.status()));
            Err(ClientError::Api(msg))
        }
    }

    fn auth(&self) -> String {
        format!("Bearer {}", self.info.token)
    }

    fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let r = self
            .agent
            .get(format!("{}{path}", self.info.url))
            .header("Authorization", self.auth())
            .header(super::audit::CLIENT_HEADER, "cli")
            .call();
        self.finish(r)
    }

    fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let r = self
            .agent
            .post(format!("{}{path}", self.info.url))
            .header("Authorization", self.auth())
            .header(super::audit::CLIENT_HEADER, "cli")
            .send_json(body);
        self.finish(r)
    }

    /// A one-time URL signing a browser in to the node's screen.
    pub fn login_url(&self) -> Result<String, ClientError> {
        let r: crate::web::LoginUrl = self.post("/web/login", &serde_json::json!({}))?;
        Ok(r.url)
    }

    pub fn status(&self) -> Result<Status, ClientError> {
        self.get("/v1/status")
    }

    pub fn chats(&self) -> Result<Vec<Chat>, ClientError> {
        self.get("/v1/conversations")
    }

    pub fn history(
        &self,
        id: &ConversationId,
        limit: Option<usize>,
    ) -> Result<Vec<HistoryMessage>, ClientError> {
        let q = limit.map(|l| format!("?limit={l}")).unwrap_or_default();
        self.get(&format!("/v1/conversations/{id}/messages{q}"))
    }

    /// What an export of the conversation needs, from `since` (ms) on.
    pub fn export_input(
        &self,
        id: &ConversationId,
        since: Option<u64>,
        fhir: bool,
    ) -> Result<crate::export::ExportInput, ClientError> {
        let format = if fhir { "fhir" } else { "json" };
        let since = since.map(|s| format!("&since={s}")).unwrap_or_default();
        self.get(&format!(
            "/v1/conversations/{id}/export?format={format}{since}"
        ))
    }

    /// Every audit trail the node holds, and its findings.
    pub fn audit(&self) -> Result<super::audit::AuditDump, ClientError> {
        self.get("/v1/audit")
    }

    /// Records what the CLI did without the node.
    pub fn record(&self, r: &super::audit::AuditRecord) -> Result<(), ClientError> {
        let _: serde_json::Value = self.post("/v1/audit", r)?;
        Ok(())
    }

    pub fn directory(&self) -> Result<Vec<Member>, ClientError> {
        self.get("/v1/directory")
    }

    pub fn peers(&self) -> Result<Vec<Peer>, ClientError> {
        self.get("/v1/peers")
    }

    pub fn find_messages(&self, prefix: &str) -> Result<Vec<MessageRef>, ClientError> {
        self.get(&format!("/v1/messages?prefix={prefix}"))
    }

    pub fn create(&self, req: &NewConversation) -> Result<ConversationId, ClientError> {
        self.post::<_, Created<ConversationId>>("/v1/conversations", req)
            .map(|c| c.id)
    }

    pub fn send(&self, id: &ConversationId, req: &SendRequest) -> Result<MessageId, ClientError> {
        self.post::<_, Created<MessageId>>(&format!("/v1/conversations/{id}/messages"), req)
            .map(|c| c.id)
    }

    /// Uploads a file to attach (`POST /v1/blobs`).
    pub fn upload(
        &self,
        bytes: &[u8],
        name: &str,
        media_type: &str,
    ) -> Result<Uploaded, ClientError> {
        let q = format!(
            "?name={}&type={}",
            super::blobs::query_escape(name),
            super::blobs::query_escape(media_type)
        );
        let r = self
            .agent
            .post(format!("{}/v1/blobs{q}", self.info.url))
            .header("Authorization", self.auth())
            .content_type("application/octet-stream")
            .send(bytes);
        self.finish(r)
    }

    fn attachment_path(c: &ConversationId, m: &MessageId, index: usize) -> String {
        format!("/v1/conversations/{c}/messages/{m}/attachments/{index}")
    }

    /// Fetches an attachment from peers; returns once it is held here
    /// (no time limit: a large file on a slow link takes what it takes).
    pub fn fetch_attachment(
        &self,
        c: &ConversationId,
        m: &MessageId,
        index: usize,
    ) -> Result<AttachmentView, ClientError> {
        let r = self
            .agent
            .post(format!(
                "{}{}/fetch",
                self.info.url,
                Self::attachment_path(c, m, index)
            ))
            .config()
            .timeout_global(None)
            .build()
            .header("Authorization", self.auth())
            .send_empty();
        self.finish(r)
    }

    /// A message's attachments, with what this device holds of each.
    pub fn attachments(
        &self,
        c: &ConversationId,
        m: &MessageId,
    ) -> Result<Vec<AttachmentView>, ClientError> {
        self.get(&format!("/v1/conversations/{c}/messages/{m}/attachments"))
    }

    /// A held attachment's bytes.
    pub fn download_attachment(
        &self,
        c: &ConversationId,
        m: &MessageId,
        index: usize,
    ) -> Result<Vec<u8>, ClientError> {
        let mut resp = self
            .agent
            .get(format!(
                "{}{}",
                self.info.url,
                Self::attachment_path(c, m, index)
            ))
            .header("Authorization", self.auth())
            .call()
            .map_err(|e| self.unreachable(e))?;
        if !resp.status().is_success() {
            return self.finish(Ok(resp));
        }
        resp.body_mut()
            .with_config()
            .limit(crate::blobs::MAX_BLOB_LEN)
            .read_to_vec()
            .map_err(|e| self.unreachable(e))
    }

    pub fn mark_read(&self, id: &ConversationId) -> Result<(), ClientError> {
        self.post::<_, serde_json::Value>(&format!("/v1/conversations/{id}/read"), &())
            .map(drop)
    }

    pub fn ack(&self, id: &ConversationId, message: &MessageId) -> Result<(), ClientError> {
        self.post::<_, serde_json::Value>(
            &format!("/v1/conversations/{id}/messages/{message}/ack"),
            &(),
        )
        .map(drop)
    }

    pub fn revoke(&self, rev: &Revocation) -> Result<(), ClientError> {
        let req = RevokeRequest {
            revocation: data_encoding::HEXLOWER.encode(&rev.encode()),
        };
        self.post::<_, serde_json::Value>("/v1/revocations", &req)
            .map(drop)
    }

    pub fn alerts(&self) -> Result<Vec<crate::node::Alert>, ClientError> {
        self.get("/v1/alerts")
    }

    pub fn policy(&self) -> Result<PolicyView, ClientError> {
        self.get("/v1/team/policy")
    }

    pub fn set_policy(&self, p: &crate::clinical::SignedPolicy) -> Result<PolicyView, ClientError> {
        let req = SignedRequest {
            hex: data_encoding::HEXLOWER.encode(&p.encode()),
        };
        self.post("/v1/team/policy", &req)
    }

    pub fn oncall(&self) -> Result<Vec<crate::node::OnCallView>, ClientError> {
        self.get("/v1/oncall")
    }

    /// The ids of the assignments for `role` overlapping `[from, to)`.
    pub fn overlapping(
        &self,
        role: &str,
        from: u64,
        to: u64,
    ) -> Result<Vec<[u8; 16]>, ClientError> {
        let ids: Vec<String> = self.get(&format!(
            "/v1/oncall/overlapping?role={role}&from_ms={from}&to_ms={to}"
        ))?;
        Ok(ids
            .iter()
            .filter_map(|h| data_encoding::HEXLOWER.decode(h.as_bytes()).ok())
            .filter_map(|b| b.try_into().ok())
            .collect())
    }

    pub fn set_oncall(
        &self,
        req: &OnCallRequest,
    ) -> Result<Vec<crate::node::OnCallView>, ClientError> {
        self.post("/v1/oncall", req)
    }

    pub fn add_assignment(
        &self,
        a: &crate::clinical::Assignment,
    ) -> Result<Vec<crate::node::OnCallView>, ClientError> {
        let req = SignedRequest {
            hex: data_encoding::HEXLOWER.encode(&a.encode()),
        };
        self.post("/v1/oncall/signed", &req)
    }

    /// Marks a reminder's occurrence done, or snoozes it until `until`.
    pub fn reminder(
        &self,
        r: &MessageRef,
        occurrence: u16,
        until: Option<u64>,
    ) -> Result<(), ClientError> {
        let what = if until.is_some() { "snooze" } else { "done" };
        let req = ReminderAction {
            occurrence,
            until_ms: until,
        };
        self.post::<_, serde_json::Value>(
            &format!(
                "/v1/conversations/{}/messages/{}/{what}",
                r.conversation, r.message
            ),
            &req,
        )
        .map(drop)
    }

    /// Opens the live event stream.
    pub fn events(&self) -> Result<Events, ClientError> {
        let r = agent(None)
            .get(format!("{}/v1/events", self.info.url))
            .header("Authorization", self.auth())
            .call();
        let resp = r.map_err(|e| self.unreachable(e))?;
        if !resp.status().is_success() {
            return Err(ClientError::Api(format!(
                "the node refused the event stream ({})",
                resp.status()
            )));
        }
        Ok(Events {
            lines: BufReader::new(Box::new(resp.into_body().into_reader())),
        })
    }
}

/// The events of `GET /v1/events`, in order; ends when the node stops.
pub struct Events {
    lines: BufReader<Box<dyn Read + Send>>,
}

impl Iterator for Events {
    type Item = EventJson;

    fn next(&mut self) -> Option<EventJson> {
        let mut line = String::new();
        loop {
            line.clear();
            if self.lines.read_line(&mut line).ok()? == 0 {
                return None;
            }
            if let Some(data) = line.trim_end().strip_prefix("data:") {
                if let Ok(e) = serde_json::from_str(data.trim_start()) {
                    return Some(e);
                }
            }
        }
    }
}
