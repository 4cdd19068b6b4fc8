//! Export to the patient record (issue 24): one conversation as an HL7
//! FHIR R4 `Bundle` ([`fhir_bundle`]) or as huddle's own plain JSON
//! ([`plain`]).
//!
//! Pure: no clock, no store, no network. The caller gathers an
//! [`ExportInput`] from what a node already shows (`api::views::export_input`
//! on a loaded node, or the same JSON from a running node's API) and these
//! functions only transform it.
//!
//! Invariants:
//! - Total: any input, however odd (a message far in the future, a name
//!   with control characters, a signed entry that is not hex), gives an
//!   export; what cannot be said in FHIR's types is left out, never made up,
//!   and nothing panics.
//! - Honest about signatures: an export carries a message's signed entry
//!   only after checking here that it decodes, has that message's id and
//!   verifies for this conversation (protocol/wire.md §6). A message
//!   without one is still exported, without a signature.
//! - Deterministic: the same input gives the same bytes; every identifier
//!   is derived from huddle's ids, nothing is random.
//! - Nothing is escaped by hand: text goes into `serde_json` values as it
//!   is, save what FHIR's `string` type forbids (see `values::fhir_string`).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::api::types::{Chat, HistoryMessage, Member};
use crate::ids::{ConversationId, DeviceId, MemberId, MessageId};
use crate::message::Message;

mod fhir;
mod values;

pub use fhir::{fhir_bundle, EXTENSION_BLOB, EXTENSION_RECEIPTS};
pub use fhir::{SYSTEM_CONVERSATION, SYSTEM_DEVICE, SYSTEM_MEMBER, SYSTEM_MESSAGE};

/// The name and version of the plain form ([`PlainExport::format`]).
pub const PLAIN_FORMAT: &str = "huddle-export/1";

/// Everything an export is made from: what a node shows of one
/// conversation, and when and where the export was made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportInput {
    pub conversation: ExportConversation,
    /// The team directory as this device knows it: names, and who holds a
    /// role (a role conversation's recipients). Only the members an
    /// export names are written out.
    pub members: Vec<Member>,
    /// The conversation's history in display order, as `huddle history`
    /// shows it (the rendered acknowledgement rules applied).
    pub messages: Vec<HistoryMessage>,
    /// The signed entries of (some of) `messages`; see [`SignedEntry`].
    #[serde(default)]
    pub signed: Vec<SignedEntry>,
    /// The device that made the export.
    pub device: DeviceId,
    /// When the export was made, ms since the epoch.
    pub exported_ms: u64,
    /// Only messages whose author's time (`time_ms`) is at or after this,
    /// ms since the epoch.
    #[serde(default)]
    pub since_ms: Option<u64>,
}

/// The conversation being exported.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportConversation {
    pub id: ConversationId,
    pub title: String,
    /// "direct", "group" or "role".
    pub kind: String,
    /// A direct or group conversation's members (empty for a role).
    pub members: Vec<MemberId>,
    /// A role conversation's role.
    pub role: Option<String>,
}

impl From<&Chat> for ExportConversation {
    fn from(c: &Chat) -> ExportConversation {
        ExportConversation {
            id: c.id,
            title: c.title.clone(),
            kind: c.kind.clone(),
            members: c.members.clone(),
            role: c.role.clone(),
        }
    }
}

/// A message exactly as its author's device signed it: `entry` is the
/// stored encoding (protocol/wire.md §6, `Message::encode`) in lowercase
/// hex — the signed bytes followed by the 64-byte Ed25519 signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedEntry {
    pub message: MessageId,
    pub entry: String,
}

impl SignedEntry {
    pub fn of(m: &Message) -> SignedEntry {
        SignedEntry {
            message: m.id(),
            entry: data_encoding::HEXLOWER.encode(&m.encode()),
        }
    }
}

/// huddle's own plain form of an export: the history as `huddle history
/// --json` prints it, with each message's checked signed entry and the
/// directory entries of the members it names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlainExport {
    /// [`PLAIN_FORMAT`].
    pub format: String,
    pub conversation: ExportConversation,
    pub device: DeviceId,
    pub exported_ms: u64,
    pub since_ms: Option<u64>,
    /// The members named by the conversation or its exported messages
    /// that the directory knows, sorted by id.
    pub members: Vec<Member>,
    pub messages: Vec<PlainMessage>,
}

/// One exported message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlainMessage {
    #[serde(flatten)]
    pub message: HistoryMessage,
    /// The signed entry (hex, as [`SignedEntry::entry`]), when it was
    /// given and checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed: Option<String>,
}

/// The plain form of `input`.
pub fn plain(input: &ExportInput) -> PlainExport {
    let messages = selected(input);
    let entries = checked_entries(input);
    let named = named_members(input, &messages);
    let members = directory(input)
        .into_iter()
        .filter(|(id, _)| named.contains(id))
        .map(|(_, m)| m.clone())
        .collect();
    PlainExport {
        format: PLAIN_FORMAT.to_owned(),
        conversation: input.conversation.clone(),
        device: input.device,
        exported_ms: input.exported_ms,
        since_ms: input.since_ms,
        members,
        messages: messages
            .into_iter()
            .map(|m| PlainMessage {
                message: m.clone(),
                signed: entries
                    .get(&m.id)
                    .map(|b| data_encoding::HEXLOWER.encode(b)),
            })
            .collect(),
    }
}

/// The messages an export holds: those at or after `since_ms`, each id
/// once (the first), in the order given.
fn selected(input: &ExportInput) -> Vec<&HistoryMessage> {
    let mut seen = BTreeSet::new();
    input
        .messages
        .iter()
        .filter(|m| input.since_ms.is_none_or(|s| m.time_ms >= s))
        .filter(|m| seen.insert(m.id))
        .collect()
}

/// The directory by member id (the first entry of a member wins).
fn directory(input: &ExportInput) -> BTreeMap<MemberId, &Member> {
    let mut by_id = BTreeMap::new();
    for m in &input.members {
        by_id.entry(m.member).or_insert(m);
    }
    by_id
}

/// The signed entries that decode as a message with the id they claim
/// and verify for this conversation, by message id.
fn checked_entries(input: &ExportInput) -> BTreeMap<MessageId, Vec<u8>> {
    let wanted: BTreeSet<MessageId> = input.messages.iter().map(|m| m.id).collect();
    let mut out = BTreeMap::new();
    for s in &input.signed {
        if !wanted.contains(&s.message) || out.contains_key(&s.message) {
            continue;
        }
        let Ok(bytes) = data_encoding::HEXLOWER_PERMISSIVE.decode(s.entry.as_bytes()) else {
            continue;
        };
        let genuine = Message::decode(&bytes)
            .is_ok_and(|m| m.id() == s.message && m.verify(&input.conversation.id));
        if genuine {
            out.insert(s.message, bytes);
        }
    }
    out
}

/// Who a message was sent to: the conversation's members, or for a role
/// conversation the unrevoked members the directory says hold the role;
/// never its author. Sorted, unique.
fn recipients(input: &ExportInput, author: &MemberId) -> Vec<MemberId> {
    let all: BTreeSet<MemberId> = match &input.conversation.role {
        Some(role) if input.conversation.members.is_empty() => input
            .members
            .iter()
            .filter(|m| !m.revoked && m.roles.iter().any(|r| r == role))
            .map(|m| m.member)
            .collect(),
        _ => input.conversation.members.iter().copied().collect(),
    };
    all.into_iter().filter(|m| m != author).collect()
}

/// Every member the conversation or the exported messages name.
fn named_members(input: &ExportInput, messages: &[&HistoryMessage]) -> BTreeSet<MemberId> {
    let mut named: BTreeSet<MemberId> = input.conversation.members.iter().copied().collect();
    for m in messages {
        named.insert(m.author);
        named.extend(recipients(input, &m.author));
        named.extend(m.delivered_to.iter().chain(&m.read_by).chain(&m.acked_by));
        if let Some(crate::message::AckBy::Member(who)) = m.ack_by {
            named.insert(who);
        }
    }
    named
}

#[cfg(test)]
mod tests;
