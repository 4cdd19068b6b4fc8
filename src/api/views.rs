//! Builds the API's JSON types from a [`Node`], and API requests into node
//! [`Command`]s. The server runs these inside `NodeHandle::query`; the CLI
//! runs the very same functions on a node it loaded from the store when no
//! node is running, so both paths answer identically.

use std::collections::BTreeMap;

use super::types::{
    AttachmentView, Chat, Damaged, HistoryMessage, Member, MessageRef, NewConversation, Status,
};
use crate::header::ConversationKind;
use crate::ids::{ConversationId, MemberId, MessageId};
use crate::node::{Command, CommandError, Node};

/// Who this node is (`listen` and `resources` are filled in by the caller
/// that knows them).
pub fn status(node: &Node) -> Status {
    let cert = node.certificate();
    Status {
        device: node.device_id(),
        member: cert.map(|c| c.member),
        name: cert.map(|c| c.display_name.clone()),
        roles: cert.map(|c| c.roles.clone()).unwrap_or_default(),
        team: cert.map(|c| c.team),
        team_name: cert.map(|c| c.team_name.clone()),
        expires: cert.map(|c| c.expires),
        listen: Vec::new(),
        mdns: false,
        dialling: Vec::new(),
        pid: std::process::id(),
        damaged: node
            .damaged_conversations()
            .iter()
            .map(|(id, why)| Damaged {
                conversation: *id,
                why: why.clone(),
            })
            .collect(),
        revoked: cert.is_some_and(|c| node.is_revoked(&c.device, &c.member)),
        resources: Default::default(),
        blobs: Default::default(),
    }
}

pub fn chats(node: &Node) -> Vec<Chat> {
    node.conversations()
        .into_iter()
        .map(|c| Chat {
            id: c.id,
            title: c.title,
            kind: c.kind.to_owned(),
            members: c.members,
            role: c.role,
            messages: c.messages,
            unread: c.unread,
            last_activity: c.last_activity,
            last: c.last,
            to_ack: c.to_ack,
            stat_to_ack: c.stat_to_ack,
        })
        .collect()
}

pub fn history(
    node: &Node,
    id: &ConversationId,
    limit: Option<usize>,
) -> Option<Vec<HistoryMessage>> {
    Some(node.history(id, limit)?.into_iter().map(message).collect())
}

/// A page of history: up to `limit` messages ending just before `before`
/// (the newest when `None`). `Some(Err)` when `before` is not one of the
/// conversation's messages.
pub fn history_page(
    node: &Node,
    id: &ConversationId,
    before: Option<&MessageId>,
    limit: usize,
) -> Option<Result<Vec<HistoryMessage>, CommandError>> {
    Some(
        node.history_page(id, before, limit)?
            .map(|page| page.into_iter().map(message).collect())
            .map_err(|()| CommandError::UnknownMessage(*before.expect("only a cursor is unknown"))),
    )
}

fn message(m: crate::node::RenderedMessage) -> HistoryMessage {
    HistoryMessage {
        id: m.id,
        hlc: m.hlc,
        time_ms: m.time_ms,
        author: m.author,
        author_name: m.author_name,
        device: m.device,
        author_verified: m.author_verified,
        priority: m.priority,
        reply_to: m.reply_to,
        body: m.body,
        delivered_to: m.delivered_to,
        read_by: m.read_by,
        acked_by: m.acked_by,
        ack_by: m.ack_by,
        escalation: m.escalation,
        reminder: m.reminder,
        attachments: m
            .attachments
            .iter()
            .enumerate()
            .map(|(i, a)| AttachmentView::of(i, a))
            .collect(),
    }
}

/// What an export of conversation `id` is made from (`crate::export`):
/// the conversation, the directory, its history from `since_ms` on (the
/// author's time) with each message's signed entry, this device, and
/// `now_ms` as the export time. `None` when the conversation is not held.
pub fn export_input(
    node: &Node,
    id: &ConversationId,
    since_ms: Option<u64>,
    now_ms: u64,
) -> Option<crate::export::ExportInput> {
    let conversation = chats(node).into_iter().find(|c| c.id == *id)?;
    let messages: Vec<HistoryMessage> = history(node, id, None)?
        .into_iter()
        .filter(|m| since_ms.is_none_or(|s| m.time_ms >= s))
        .collect();
    let wanted: std::collections::BTreeSet<MessageId> = messages.iter().map(|m| m.id).collect();
    let signed = node
        .conversation(id)?
        .messages()
        .filter(|m| wanted.contains(&m.id()))
        .map(crate::export::SignedEntry::of)
        .collect();
    Some(crate::export::ExportInput {
        conversation: (&conversation).into(),
        members: directory(node),
        messages,
        signed,
        device: node.device_id(),
        exported_ms: now_ms,
        since_ms,
    })
}

/// The team directory, one entry per member (a member may have several
/// devices), sorted by name.
pub fn directory(node: &Node) -> Vec<Member> {
    let mut by_member: BTreeMap<MemberId, (u64, Member)> = BTreeMap::new();
    for c in node.directory() {
        let revoked = node.is_revoked(&c.device, &c.member);
        let e = by_member.entry(c.member).or_insert_with(|| {
            (
                c.issued,
                Member {
                    member: c.member,
                    name: c.display_name.clone(),
                    roles: c.roles.clone(),
                    devices: Vec::new(),
                    revoked: true,
                    expires: 0,
                },
            )
        });
        // The newest certificate names the member.
        if c.issued > e.0 {
            e.0 = c.issued;
            e.1.name = c.display_name.clone();
            e.1.roles = c.roles.clone();
        }
        e.1.devices.push(c.device);
        e.1.revoked &= revoked;
        e.1.expires = e.1.expires.max(c.expires);
    }
    let mut out: Vec<Member> = by_member.into_values().map(|(_, m)| m).collect();
    out.sort_by_key(|a| a.name.to_lowercase());
    out
}

/// Messages whose id starts with `prefix` (lowercase hex), in any conversation.
pub fn find_messages(node: &Node, prefix: &str) -> Vec<MessageRef> {
    let prefix = prefix.trim().to_ascii_lowercase();
    let mut out = Vec::new();
    for id in node.conversation_ids() {
        let Some(c) = node.conversation(id) else {
            continue;
        };
        for m in c.messages() {
            let mid = m.id();
            if mid.to_hex().starts_with(&prefix) {
                out.push(MessageRef {
                    conversation: *id,
                    message: mid,
                });
            }
        }
    }
    out
}

/// Turns a create request into the node command, adding this member where
/// the conversation needs them.
pub fn create_command(node: &Node, req: NewConversation) -> Result<Command, CommandError> {
    let me = node.member_id().ok_or(CommandError::NoMembership)?;
    let kind = match req {
        NewConversation::Direct { with } => ConversationKind::Direct {
            members: [me, with],
        },
        NewConversation::Group { title, members } => {
            let mut members: std::collections::BTreeSet<MemberId> = members.into_iter().collect();
            members.insert(me);
            ConversationKind::Group {
                title: title.trim().to_owned(),
                members,
            }
        }
        NewConversation::Role { role } => ConversationKind::Role { role },
    };
    Ok(Command::CreateConversation { kind })
}
