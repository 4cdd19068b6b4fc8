//! The JSON vocabulary of the local API (version 1). The CLI speaks exactly
//! these types to a running node and builds the same ones from the store
//! when no node runs, so `--json` output is the same either way.
//!
//! Invariant: every field is plain data (ids in their text form, times in
//! milliseconds since the epoch); nothing here depends on the transport.

use serde::{Deserialize, Serialize};

mod attachments;
pub use attachments::{AttachmentRequest, AttachmentView, BlobUse, Uploaded};

use crate::ids::{ConversationId, DeviceId, MemberId, MessageId, TeamId};
use crate::membership::RevocationTarget;
use crate::message::{AckBy, Priority};
use crate::node::Event;

/// What `GET /v1/status` returns: who this node is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub device: DeviceId,
    pub member: Option<MemberId>,
    pub name: Option<String>,
    pub roles: Vec<String>,
    pub team: Option<TeamId>,
    pub team_name: Option<String>,
    /// Certificate expiry, ms since the epoch.
    pub expires: Option<u64>,
    /// The addresses peers can dial (empty when read from the store offline).
    pub listen: Vec<String>,
    pub pid: u32,
    /// Stored conversations that could not be read at start and are set
    /// aside (their records kept, not synced): show them to the user.
    #[serde(default)]
    pub damaged: Vec<Damaged>,
    /// This device's membership was revoked (the device or its member), as
    /// far as this node has learnt: the team accepts nothing more from it.
    #[serde(default)]
    pub revoked: bool,
    /// mDNS discovery is on (false when read from the store offline).
    #[serde(default)]
    pub mdns: bool,
    /// The addresses the running node dials while not connected to them:
    /// `--peer` addresses and remembered peers'.
    #[serde(default)]
    pub dialling: Vec<String>,
    /// What remote devices make the running node hold now (all zero when
    /// read from the store offline).
    #[serde(default)]
    pub resources: crate::net::Resources,
    /// Attachments fetched and served since start, and the blob store's use.
    #[serde(default)]
    pub blobs: BlobUse,
}

/// A conversation set aside at start ([`Status::damaged`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Damaged {
    pub conversation: ConversationId,
    /// Why it could not be read, as a sentence.
    pub why: String,
}

/// One conversation, as `huddle chats` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chat {
    pub id: ConversationId,
    pub title: String,
    /// "direct", "group" or "role".
    pub kind: String,
    pub members: Vec<MemberId>,
    pub role: Option<String>,
    pub messages: usize,
    pub unread: usize,
    pub last_activity: Option<u64>,
    /// The newest message, for a list's preview (none in an empty
    /// conversation).
    #[serde(default)]
    pub last: Option<crate::node::LastMessage>,
    /// Urgent and STAT messages from others this member has not
    /// acknowledged, among the newest 1,000.
    #[serde(default)]
    pub to_ack: usize,
    /// How many of `to_ack` are STAT.
    #[serde(default)]
    pub stat_to_ack: usize,
}

/// One message with its receipts, in display order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryMessage {
    pub id: MessageId,
    pub hlc: u64,
    pub time_ms: u64,
    pub author: MemberId,
    pub author_name: Option<String>,
    pub device: DeviceId,
    /// False when this node holds no verified certificate binding the
    /// author's device to the author: show such a message as unverified.
    pub author_verified: bool,
    pub priority: Priority,
    pub reply_to: Option<MessageId>,
    pub body: String,
    pub delivered_to: Vec<MemberId>,
    pub read_by: Vec<MemberId>,
    pub acked_by: Vec<MemberId>,
    /// Who the sender asked to acknowledge, when not the team's rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack_by: Option<AckBy>,
    /// An escalation entry: the message it escalates, its level, who is
    /// waiting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalation: Option<crate::node::EscalationInfo>,
    /// A reminder: due time, targets, repeat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reminder: Option<crate::node::ReminderInfo>,
    /// Attachments, with what this device holds of each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<AttachmentView>,
}

/// A team member as this node's directory knows them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub member: MemberId,
    pub name: String,
    pub roles: Vec<String>,
    pub devices: Vec<DeviceId>,
    pub revoked: bool,
    /// The latest expiry among the member's certificates.
    pub expires: u64,
}

/// A connected peer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    pub device: DeviceId,
    pub member: Option<MemberId>,
    pub name: Option<String>,
    /// The peer has proved a valid certificate.
    pub verified: bool,
    pub address: Option<String>,
    /// "mdns", "static", "inbound" or "dialed".
    pub found_by: Option<String>,
    /// When the connection came up, ms since the epoch.
    pub since_ms: Option<u64>,
}

/// Where a message lives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRef {
    pub conversation: ConversationId,
    pub message: MessageId,
}

/// `POST /v1/conversations`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum NewConversation {
    /// A 1:1 conversation between this member and `with`.
    Direct { with: MemberId },
    /// A named group; this member is added if missing.
    Group {
        title: String,
        members: Vec<MemberId>,
    },
    /// Everyone holding `role`.
    Role { role: String },
}

/// `POST /v1/conversations/{id}/messages`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendRequest {
    pub body: String,
    #[serde(default = "routine")]
    pub priority: Priority,
    #[serde(default)]
    pub reply_to: Option<MessageId>,
    /// Who must acknowledge (urgent and STAT): `{"who": "all"}`,
    /// `{"who": "any"}` or `{"who": "member", "member": ID}`; the team
    /// policy's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack_by: Option<AckBy>,
    /// Make the message a reminder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reminder: Option<ReminderRequest>,
    /// Blobs this device holds, to attach (at most four).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<AttachmentRequest>,
}

/// A reminder: due at `due_ms`, for `targets`, repeated `times` times
/// every `every_ms` (once when absent).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReminderRequest {
    pub due_ms: u64,
    pub targets: Vec<MemberId>,
    #[serde(default)]
    pub every_ms: Option<u64>,
    #[serde(default)]
    pub times: Option<u16>,
}

impl SendRequest {
    /// The message's fields, or why they cannot be.
    /// The message's fields; attachments are looked up in `blobs`, where
    /// each must be held whole.
    pub fn fields(
        &self,
        blobs: &crate::blobs::store::BlobStore,
        conversation: ConversationId,
    ) -> Result<crate::message::Fields, String> {
        if self.ack_by.is_some() && !self.priority.wants_ack() {
            return Err(
                "only urgent and STAT messages are acknowledged: --ack-by needs --urgent or --stat"
                    .into(),
            );
        }
        let reminder = self.reminder.as_ref().map(|r| {
            let mut targets = r.targets.clone();
            targets.sort();
            targets.dedup();
            crate::message::Reminder {
                due_ms: r.due_ms,
                targets,
                every_ms: r.every_ms.unwrap_or(0),
                times: r.times.unwrap_or(1),
            }
        });
        let fields = crate::message::Fields {
            ack_by: self.ack_by,
            reminder,
            attachments: super::blobs::resolve(blobs, conversation, &self.attachments)?,
            ..Default::default()
        };
        fields.validate().map_err(|e| match e {
            crate::codec::DecodeError::Invalid(why) => format!("{why}: a reminder repeats at most 1000 times, at least a minute apart, for 1 to 32 members"),
            e => e.to_string(),
        })?;
        Ok(fields)
    }
}

/// The team's clinical policy as `GET /v1/team/policy` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyView {
    pub policy: crate::clinical::ClinicalPolicy,
    /// When the authority signed it; none: the built-in default.
    pub issued_ms: Option<u64>,
}

/// A signed object (a policy, an on-call assignment), hex-encoded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedRequest {
    pub hex: String,
}

/// `POST /v1/oncall`: who is on call for a role, signed by this device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnCallRequest {
    pub role: String,
    pub holders: Vec<MemberId>,
    pub from_ms: u64,
    pub to_ms: u64,
}

/// `POST …/done` and `…/snooze`: a reminder's occurrence (0-based), and
/// for a snooze when it fires again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReminderAction {
    #[serde(default)]
    pub occurrence: u16,
    #[serde(default)]
    pub until_ms: Option<u64>,
}

fn routine() -> Priority {
    Priority::Routine
}

/// `POST /v1/revocations`: an authority-signed revocation, hex-encoded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokeRequest {
    pub revocation: String,
}

impl RevokeRequest {
    /// The revocation it carries, if the text is one hex-encoded.
    pub fn decode(&self) -> Option<crate::membership::Revocation> {
        let bytes = data_encoding::HEXLOWER_PERMISSIVE
            .decode(self.revocation.trim().as_bytes())
            .ok()?;
        crate::membership::Revocation::decode(&bytes).ok()
    }
}

/// The answer to a create or a send.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Created<T> {
    pub id: T,
}

/// Every error response: one sentence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

/// An event on `GET /v1/events` (the SSE `data:` field).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventJson {
    ConversationAdded {
        conversation: ConversationId,
        title: String,
    },
    MessageAdded {
        conversation: ConversationId,
        message: MessageId,
        hlc: u64,
        author: MemberId,
        priority: Priority,
        local: bool,
    },
    Sent {
        conversation: ConversationId,
        message: MessageId,
    },
    ReceiptsChanged {
        conversation: ConversationId,
    },
    PeerJoined {
        peer: DeviceId,
        member: MemberId,
        name: String,
    },
    PeerLeft {
        peer: DeviceId,
    },
    PeerRefused {
        peer: DeviceId,
        reason: String,
        by_us: bool,
    },
    Revoked {
        device: Option<DeviceId>,
        member: Option<MemberId>,
    },
    Rejected {
        conversation: Option<ConversationId>,
        count: usize,
    },
    /// An urgent or STAT message still awaits your acknowledgement:
    /// re-notification `n` of `of`.
    Alert {
        conversation: ConversationId,
        message: MessageId,
        priority: Priority,
        author: MemberId,
        n: u16,
        of: u16,
        waiting_ms: u64,
    },
    /// This device escalated `message` (level `level`) into `channel`.
    Escalated {
        conversation: ConversationId,
        message: MessageId,
        level: u8,
        channel: ConversationId,
        entry: MessageId,
    },
    /// A reminder for you is due.
    Reminder {
        conversation: ConversationId,
        message: MessageId,
        occurrence: u16,
        due_ms: u64,
    },
    /// What awaits you changed: re-read `GET /v1/alerts`.
    AlertsChanged,
    /// An attachment fetched from peers is held whole here.
    AttachmentHeld {
        conversation: ConversationId,
        message: MessageId,
        hash: String,
    },
    /// The stream fell behind and skipped `missed` events: re-read state.
    Lagged {
        missed: u64,
    },
}

impl EventJson {
    /// The SSE event name (`event:` field).
    pub fn name(&self) -> &'static str {
        match self {
            EventJson::ConversationAdded { .. } => "conversation_added",
            EventJson::MessageAdded { .. } => "message_added",
            EventJson::Sent { .. } => "sent",
            EventJson::ReceiptsChanged { .. } => "receipts_changed",
            EventJson::PeerJoined { .. } => "peer_joined",
            EventJson::PeerLeft { .. } => "peer_left",
            EventJson::PeerRefused { .. } => "peer_refused",
            EventJson::Revoked { .. } => "revoked",
            EventJson::Rejected { .. } => "rejected",
            EventJson::Alert { .. } => "alert",
            EventJson::Escalated { .. } => "escalated",
            EventJson::Reminder { .. } => "reminder",
            EventJson::AlertsChanged => "alerts_changed",
            EventJson::AttachmentHeld { .. } => "attachment_held",
            EventJson::Lagged { .. } => "lagged",
        }
    }

    /// The conversation the event concerns, if any.
    pub fn conversation(&self) -> Option<ConversationId> {
        match self {
            EventJson::ConversationAdded { conversation, .. }
            | EventJson::MessageAdded { conversation, .. }
            | EventJson::Sent { conversation, .. }
            | EventJson::ReceiptsChanged { conversation }
            | EventJson::Alert { conversation, .. }
            | EventJson::Reminder { conversation, .. }
            | EventJson::AttachmentHeld { conversation, .. } => Some(*conversation),
            EventJson::Rejected { conversation, .. } => *conversation,
            _ => None,
        }
    }
}

impl From<&Event> for EventJson {
    fn from(e: &Event) -> EventJson {
        match e.clone() {
            Event::ConversationAdded {
                conversation,
                title,
            } => EventJson::ConversationAdded {
                conversation,
                title,
            },
            Event::MessageAdded {
                conversation,
                message,
                hlc,
                author,
                priority,
                local,
            } => EventJson::MessageAdded {
                conversation,
                message,
                hlc: hlc.0,
                author,
                priority,
                local,
            },
            Event::Sent {
                conversation,
                message,
            } => EventJson::Sent {
                conversation,
                message,
            },
            Event::ReceiptsChanged { conversation } => EventJson::ReceiptsChanged { conversation },
            Event::PeerJoined { peer, member, name } => {
                EventJson::PeerJoined { peer, member, name }
            }
            Event::PeerLeft { peer } => EventJson::PeerLeft { peer },
            Event::PeerRefused {
                peer,
                reason,
                by_us,
            } => EventJson::PeerRefused {
                peer,
                reason: reason.to_string(),
                by_us,
            },
            Event::Revoked { target } => match target {
                RevocationTarget::Device(d) => EventJson::Revoked {
                    device: Some(d),
                    member: None,
                },
                RevocationTarget::Member(m) => EventJson::Revoked {
                    device: None,
                    member: Some(m),
                },
            },
            Event::Rejected {
                conversation,
                count,
            } => EventJson::Rejected {
                conversation,
                count,
            },
            Event::Alert {
                conversation,
                message,
                priority,
                author,
                n,
                of,
                waiting_ms,
            } => EventJson::Alert {
                conversation,
                message,
                priority,
                author,
                n,
                of,
                waiting_ms,
            },
            Event::Escalated {
                conversation,
                message,
                level,
                channel,
                entry,
            } => EventJson::Escalated {
                conversation,
                message,
                level,
                channel,
                entry,
            },
            Event::Reminder {
                conversation,
                message,
                occurrence,
                due_ms,
            } => EventJson::Reminder {
                conversation,
                message,
                occurrence,
                due_ms,
            },
            Event::AlertsChanged => EventJson::AlertsChanged,
            Event::AttachmentHeld {
                conversation,
                message,
                hash,
            } => EventJson::AttachmentHeld {
                conversation,
                message,
                hash: hash.to_hex(),
            },
        }
    }
}
