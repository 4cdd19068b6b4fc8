//! Where a CLI command is carried out: through the local API of the node
//! running on the data directory, or, when none runs, on the node loaded
//! from the store. Both give the same answers (the API's JSON types).

use super::offline::Offline;
use super::{lock, CliError, Ctx, Result};
use crate::api::audit::{AuditDump, AuditRecord};
use crate::api::client::ApiClient;
use crate::api::types::{
    AttachmentView, Chat, HistoryMessage, Member, MessageRef, NewConversation, OnCallRequest, Peer,
    PolicyView, SendRequest, Status, Uploaded,
};
use crate::api::views;
use crate::clinical::{Assignment, SignedPolicy};
use crate::ids::{ConversationId, MessageId};
use crate::membership::Revocation;
use crate::node::{Alert, OnCallView};
use crate::node::{Command, Reply};
use crate::trail::Action;

pub enum Backend {
    Api(ApiClient),
    Offline(Box<Offline>),
}

/// Told after a change made without a running node.
pub const STORED_LOCALLY: &str =
    "stored locally; it will go out when `huddle run` is running on this data directory";

impl Backend {
    /// The running node if it answers, else the store (waiting a moment
    /// for another command that holds it: `lock.rs`).
    pub fn open(ctx: &Ctx) -> Result<Backend> {
        // Checked first so that a missing identity gets the `init` hint.
        ctx.dir.identity_exists()?;
        match lock::node_or_store(ctx, || Offline::open(&ctx.dir))? {
            Ok(client) => {
                tracing::debug!(url = client.url(), "using the running node");
                Ok(Backend::Api(client))
            }
            Err(offline) => Ok(Backend::Offline(Box::new(offline))),
        }
    }

    /// The running node, for what only a node can do (`what`): the store
    /// is not opened, so a node starting meanwhile is never kept from it.
    pub fn node(ctx: &Ctx, what: &str) -> Result<Backend> {
        ctx.dir.identity_exists()?;
        Ok(Backend::Api(lock::node_only(ctx, what)?))
    }

    pub fn is_offline(&self) -> bool {
        matches!(self, Backend::Offline(_))
    }

    /// Only a running node can do this.
    pub fn client(&self, ctx: &Ctx, what: &str) -> Result<&ApiClient> {
        match self {
            Backend::Api(c) => Ok(c),
            Backend::Offline(_) => Err(CliError::no_node(format!(
                "no node is running on {}: start it with `huddle run` to {what}",
                ctx.dir.path().display()
            ))),
        }
    }

    pub fn status(&self) -> Result<Status> {
        match self {
            Backend::Api(c) => Ok(c.status()?),
            Backend::Offline(o) => Ok(views::status(o.node())),
        }
    }

    pub fn chats(&self) -> Result<Vec<Chat>> {
        match self {
            Backend::Api(c) => Ok(c.chats()?),
            Backend::Offline(o) => Ok(views::chats(o.node())),
        }
    }

    pub fn history(
        &self,
        id: &ConversationId,
        limit: Option<usize>,
    ) -> Result<Vec<HistoryMessage>> {
        match self {
            Backend::Api(c) => Ok(c.history(id, limit)?),
            Backend::Offline(o) => {
                let mut page = views::history(o.node(), id, limit)
                    .ok_or_else(|| CliError::from(o.node().missing(*id)))?;
                crate::api::enrich_attachments(o.blobs(), *id, &mut page);
                Ok(page)
            }
        }
    }

    /// What an export of the conversation needs (`api::views::export_input`).
    /// Recorded in the audit trail (by the node as it answers, or here).
    pub fn export_input(
        &mut self,
        id: &ConversationId,
        since: Option<u64>,
        fhir: bool,
    ) -> Result<crate::export::ExportInput> {
        match self {
            Backend::Api(c) => Ok(c.export_input(id, since, fhir)?),
            Backend::Offline(o) => {
                let input = views::export_input(o.node(), id, since, super::now_ms())
                    .ok_or_else(|| CliError::from(o.node().missing(*id)))?;
                o.command(Command::Audit(Action::Exported {
                    conversation: *id,
                    fhir,
                    since: since.unwrap_or(0),
                }))?;
                Ok(input)
            }
        }
    }

    /// A conversation the CLI read without the node, for the audit trail
    /// (a running node records what it serves itself).
    pub fn record_read(&mut self, conversation: ConversationId) -> Result<()> {
        if let Backend::Offline(o) = self {
            let via = crate::trail::Via::Cli;
            o.command(Command::Audit(Action::Opened { conversation, via }))?;
        }
        Ok(())
    }

    /// Records in this device's audit trail what the CLI did apart from
    /// the node (a passphrase change, an admission).
    pub fn record(&mut self, r: AuditRecord) -> Result<()> {
        match self {
            Backend::Api(c) => Ok(c.record(&r)?),
            Backend::Offline(o) => o.command(Command::Audit(r.into())).map(drop),
        }
    }

    /// Every audit trail this device holds, and its findings.
    pub fn audit(&self) -> Result<AuditDump> {
        match self {
            Backend::Api(c) => Ok(c.audit()?),
            Backend::Offline(o) => {
                let n = o.node();
                Ok(AuditDump::read(
                    n.device_id(),
                    n.is_trail_admin(),
                    &n.trail_reader(),
                )?)
            }
        }
    }

    pub fn directory(&self) -> Result<Vec<Member>> {
        match self {
            Backend::Api(c) => Ok(c.directory()?),
            Backend::Offline(o) => Ok(views::directory(o.node())),
        }
    }

    pub fn peers(&self, ctx: &Ctx) -> Result<Vec<Peer>> {
        Ok(self.client(ctx, "see who is connected")?.peers()?)
    }

    pub fn find_messages(&self, prefix: &str) -> Result<Vec<MessageRef>> {
        match self {
            Backend::Api(c) => Ok(c.find_messages(prefix)?),
            Backend::Offline(o) => Ok(views::find_messages(o.node(), prefix)),
        }
    }

    pub fn create(&mut self, req: NewConversation) -> Result<ConversationId> {
        match self {
            Backend::Api(c) => Ok(c.create(&req)?),
            Backend::Offline(o) => {
                let cmd = views::create_command(o.node(), req)?;
                match o.command(cmd)? {
                    Reply::Conversation(id) => Ok(id),
                    r => Err(unexpected(r)),
                }
            }
        }
    }

    pub fn send(&mut self, id: ConversationId, req: SendRequest) -> Result<MessageId> {
        match self {
            Backend::Api(c) => Ok(c.send(&id, &req)?),
            Backend::Offline(o) => match o.command(Command::Send {
                conversation: id,
                fields: req.fields(o.blobs(), id).map_err(CliError::usage)?,
                body: req.body,
                priority: req.priority,
                reply_to: req.reply_to,
            })? {
                Reply::Message(m) => Ok(m),
                r => Err(unexpected(r)),
            },
        }
    }

    /// Stores a file as our own blob, to attach.
    pub fn upload(&mut self, bytes: &[u8], name: &str, media_type: &str) -> Result<Uploaded> {
        match self {
            Backend::Api(c) => Ok(c.upload(bytes, name, media_type)?),
            Backend::Offline(o) => {
                let (clean, stripped) =
                    crate::blobs::strip::strip(bytes).map_err(|e| CliError::new(e.to_string()))?;
                let limit = o.node().attachment_limit();
                let hash = o
                    .blobs()
                    .put_own(&clean, limit)
                    .map_err(|e| CliError::new(e.to_string()))?;
                Ok(Uploaded {
                    hash: hash.to_hex(),
                    size: clean.len() as u64,
                    name: name.to_owned(),
                    media_type: media_type.to_owned(),
                    stripped,
                })
            }
        }
    }

    /// A message's attachments, with what this device holds of each.
    pub fn attachments(&self, r: &MessageRef) -> Result<Vec<AttachmentView>> {
        match self {
            Backend::Api(c) => Ok(c.attachments(&r.conversation, &r.message)?),
            Backend::Offline(o) => Ok(o
                .node()
                .attachments_of(&r.conversation, &r.message)
                .iter()
                .enumerate()
                .map(|(i, a)| {
                    let mut v = AttachmentView::of(i, a);
                    crate::api::enrich_view(o.blobs(), r.conversation, &mut v);
                    v
                })
                .collect()),
        }
    }

    /// A held attachment's bytes.
    pub fn download(&self, r: &MessageRef, index: usize) -> Result<Vec<u8>> {
        match self {
            Backend::Api(c) => Ok(c.download_attachment(&r.conversation, &r.message, index)?),
            Backend::Offline(o) => {
                let a = o
                    .node()
                    .attachments_of(&r.conversation, &r.message)
                    .get(index)
                    .cloned()
                    .ok_or_else(|| CliError::new("no such attachment"))?;
                o.blobs()
                    .read_range(&crate::blobs::Key::new(r.conversation, a.hash), 0, a.size)
                    .map_err(|e| CliError::new(e.to_string()))
            }
        }
    }

    pub fn mark_read(&mut self, id: ConversationId) -> Result<()> {
        match self {
            Backend::Api(c) => Ok(c.mark_read(&id)?),
            Backend::Offline(o) => o.command(Command::MarkRead { conversation: id }).map(drop),
        }
    }

    pub fn ack(&mut self, r: &MessageRef) -> Result<()> {
        match self {
            Backend::Api(c) => Ok(c.ack(&r.conversation, &r.message)?),
            Backend::Offline(o) => o
                .command(Command::Ack {
                    conversation: r.conversation,
                    message: r.message,
                })
                .map(drop),
        }
    }

    pub fn alerts(&self) -> Result<Vec<Alert>> {
        match self {
            Backend::Api(c) => Ok(c.alerts()?),
            Backend::Offline(o) => Ok(o.node().alerts(super::now_ms())),
        }
    }

    pub fn policy(&self) -> Result<PolicyView> {
        match self {
            Backend::Api(c) => Ok(c.policy()?),
            Backend::Offline(o) => Ok(crate::api::clinical_policy_view(o.node())),
        }
    }

    pub fn set_policy(&mut self, p: SignedPolicy) -> Result<()> {
        match self {
            Backend::Api(c) => c.set_policy(&p).map(drop).map_err(Into::into),
            Backend::Offline(o) => o.command(Command::SetPolicy(Box::new(p))).map(drop),
        }
    }

    pub fn oncall(&self) -> Result<Vec<OnCallView>> {
        match self {
            Backend::Api(c) => Ok(c.oncall()?),
            Backend::Offline(o) => Ok(o.node().on_call_view(super::now_ms())),
        }
    }

    /// The ids of the assignments for `role` overlapping `[from, to)`.
    pub fn overlapping(&self, role: &str, from: u64, to: u64) -> Result<Vec<[u8; 16]>> {
        match self {
            Backend::Api(c) => Ok(c.overlapping(role, from, to)?),
            Backend::Offline(o) => Ok(o.node().roster().overlapping(role, from, to)),
        }
    }

    pub fn set_oncall(&mut self, req: OnCallRequest) -> Result<()> {
        match self {
            Backend::Api(c) => c.set_oncall(&req).map(drop).map_err(Into::into),
            Backend::Offline(o) => o
                .command(Command::OnCall {
                    role: req.role,
                    holders: req.holders,
                    from_ms: req.from_ms,
                    to_ms: req.to_ms,
                })
                .map(drop),
        }
    }

    pub fn add_assignment(&mut self, a: Assignment) -> Result<()> {
        match self {
            Backend::Api(c) => c.add_assignment(&a).map(drop).map_err(Into::into),
            Backend::Offline(o) => o.command(Command::AddAssignment(Box::new(a))).map(drop),
        }
    }

    /// Marks a reminder's occurrence done, or snoozes it until `until`.
    pub fn reminder(&mut self, r: &MessageRef, occurrence: u16, until: Option<u64>) -> Result<()> {
        match self {
            Backend::Api(c) => Ok(c.reminder(r, occurrence, until)?),
            Backend::Offline(o) => o
                .command(match until {
                    None => Command::ReminderDone {
                        conversation: r.conversation,
                        message: r.message,
                        occurrence,
                    },
                    Some(until) => Command::Snooze {
                        conversation: r.conversation,
                        message: r.message,
                        occurrence,
                        until,
                    },
                })
                .map(drop),
        }
    }

    pub fn revoke(&mut self, rev: Revocation) -> Result<()> {
        match self {
            Backend::Api(c) => Ok(c.revoke(&rev)?),
            Backend::Offline(o) => o.command(Command::Revoke(rev)).map(drop),
        }
    }
}

fn unexpected(r: Reply) -> CliError {
    CliError::new(format!(
        "the node gave an unexpected reply ({r:?}); please report this"
    ))
}
