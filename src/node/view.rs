//! Read-only views of the node's state, as the CLI and the API render them.
//! Everything here is derived from the documents; nothing is stored twice.
//!
//! Invariant: the rendered history of a conversation depends only on the
//! document and the team directory, so two converged devices render the
//! same history byte for byte. The acknowledgement rules (sync.md §7.2:
//! only urgent and STAT messages, only by members other than the author)
//! are applied here, when rendering, because older versions stored acks
//! that break them and peers still send them; an ack that counts also
//! counts as that message read.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::Node;
use crate::conversation::Conversation;
use crate::header::ConversationKind;
use crate::hlc::Hlc;
use crate::ids::{ConversationId, DeviceId, MemberId, MessageId};
use crate::message::{Message, Priority};
use crate::store::{DocMeta, LastEntry};

/// Unread messages are counted among this many newest messages, so that the
/// count costs the same at any length (it is recomputed for the store's
/// index with every message); a list shows "1000+" beyond it.
pub const UNREAD_SCAN: usize = 1000;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConversationSummary {
    pub id: ConversationId,
    pub title: String,
    /// "direct", "group" or "role".
    pub kind: &'static str,
    pub members: Vec<MemberId>,
    pub role: Option<String>,
    pub messages: usize,
    /// Messages from others newer than our member's read receipt, among the
    /// newest [`UNREAD_SCAN`].
    pub unread: usize,
    pub last_activity: Option<u64>,
    /// The newest message, for the list's preview.
    pub last: Option<LastMessage>,
    /// Urgent and STAT messages from others that our member has not
    /// acknowledged, among the newest [`UNREAD_SCAN`].
    pub to_ack: usize,
    /// How many of `to_ack` are STAT.
    pub stat_to_ack: usize,
}

/// A conversation list's preview of its newest message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct LastMessage {
    pub author_name: Option<String>,
    /// The body's first [`PREVIEW_CHARS`] characters.
    pub preview: String,
    pub priority: Priority,
    pub time_ms: u64,
}

/// A conversation list entry's numbers, from the loaded document or the
/// store's index ([`Node::list_counts`]).
#[derive(Debug, Default)]
pub(super) struct ListCounts {
    pub messages: usize,
    pub unread: usize,
    pub last_activity: Option<u64>,
    pub last: Option<LastEntry>,
    pub to_ack: usize,
    pub stat_to_ack: usize,
}

impl From<&DocMeta> for ListCounts {
    fn from(m: &DocMeta) -> ListCounts {
        ListCounts {
            messages: m.messages as usize,
            unread: m.unread as usize,
            last_activity: (m.last_activity > 0).then_some(m.last_activity),
            last: m.last.clone(),
            to_ack: m.to_ack as usize,
            stat_to_ack: m.stat_to_ack as usize,
        }
    }
}

/// How much of the newest message a conversation list shows.
pub const PREVIEW_CHARS: usize = 140;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RenderedMessage {
    pub id: MessageId,
    /// Hybrid logical clock: milliseconds since the epoch, then a counter.
    pub hlc: u64,
    pub time_ms: u64,
    pub author: MemberId,
    pub author_name: Option<String>,
    pub device: DeviceId,
    /// The author's device holds a certificate for the author member that
    /// this node has verified. (The signature itself always verified, or the
    /// message would not be here.)
    pub author_verified: bool,
    pub priority: Priority,
    pub reply_to: Option<MessageId>,
    pub body: String,
    pub delivered_to: Vec<MemberId>,
    pub read_by: Vec<MemberId>,
    pub acked_by: Vec<MemberId>,
    /// Who the sender asked to acknowledge, if not the team policy's rule.
    pub ack_by: Option<crate::message::AckBy>,
    /// An escalation entry: what it escalates (sync.md §7.6).
    pub escalation: Option<EscalationInfo>,
    /// A reminder: when, for whom, how often.
    pub reminder: Option<ReminderInfo>,
    /// Its attachments' metadata (protocol/blobs.md).
    #[serde(skip)]
    pub attachments: Vec<crate::blobs::Attachment>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct EscalationInfo {
    pub conversation: ConversationId,
    pub message: MessageId,
    pub level: u8,
    pub author: MemberId,
    pub waiting: Vec<MemberId>,
    pub unacked_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ReminderInfo {
    pub due_ms: u64,
    pub targets: Vec<MemberId>,
    pub every_ms: u64,
    pub times: u16,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PeerInfo {
    pub device: DeviceId,
    pub member: Option<MemberId>,
    pub name: Option<String>,
    /// The peer has proved a valid certificate.
    pub verified: bool,
}

/// Per-device cursors, as signed (see `ReceiptIndex`).
type Cursors = BTreeMap<DeviceId, (MemberId, (Hlc, MessageId))>;

impl Node {
    /// Does a verified certificate bind `device` to `member`?
    pub(super) fn bound(&self, device: &DeviceId, member: &MemberId) -> bool {
        self.membership
            .as_ref()
            .and_then(|ms| ms.team.directory.get(device))
            .is_some_and(|cert| cert.member == *member)
    }

    /// The members whose cursor in `cursors` reaches `pos`, counting only
    /// devices bound to the member they name.
    fn reached(
        &self,
        cursors: &Cursors,
        pos: (Hlc, MessageId),
        except: &MemberId,
    ) -> Vec<MemberId> {
        let members: BTreeSet<MemberId> = cursors
            .iter()
            .filter(|(d, (m, at))| m != except && *at >= pos && self.bound(d, m))
            .map(|(_, (m, _))| *m)
            .collect();
        members.into_iter().collect()
    }

    /// The members whose acknowledgement of `m` counts: signed by a device
    /// bound to the member, of a message that asks for one, by someone
    /// other than its author. Acks breaking the rules stay in the document
    /// (older versions wrote them) and are ignored here.
    pub(super) fn ackers(
        &self,
        c: &Conversation,
        m: &Message,
        id: &MessageId,
    ) -> BTreeSet<MemberId> {
        if !m.priority.wants_ack() {
            return BTreeSet::new();
        }
        c.receipts.acks.get(id).map_or_else(BTreeSet::new, |s| {
            s.iter()
                .filter(|(d, who)| *who != m.author_member && self.bound(d, who))
                .map(|(_, who)| *who)
                .collect()
        })
    }

    pub(super) fn member_name(&self, member: &MemberId) -> Option<String> {
        self.directory()
            .filter(|c| c.member == *member)
            .max_by_key(|c| c.issued)
            .map(|c| c.display_name.clone())
    }

    /// For the conversation list: messages, messages unread by our member
    /// (among the newest [`UNREAD_SCAN`]), the newest message, and the
    /// urgent and STAT messages (of those newest) awaiting our member's
    /// acknowledgement. Also kept in the store's index — rewritten with
    /// every message — so a conversation not yet loaded is listed exactly
    /// as it will be once loaded, without loading it.
    pub(super) fn list_counts(&self, c: &Conversation) -> ListCounts {
        let me = self.member_id();
        let read = me.and_then(|me| {
            c.receipts
                .read
                .iter()
                .filter(|(d, (m, _))| *m == me && self.bound(d, m))
                .map(|(_, (_, at))| *at)
                .max()
        });
        let acked_by_me =
            |m: &Message| me.is_some_and(|me| self.ackers(c, m, &m.id()).contains(&me));
        let mut counts = ListCounts {
            messages: c.len(),
            ..ListCounts::default()
        };
        let mut reading = true;
        for m in c.messages().rev().take(UNREAD_SCAN) {
            let others = Some(m.author_member) != me;
            reading &= read.is_none_or(|r| m.order_key() > r);
            if reading && others && !acked_by_me(m) {
                counts.unread += 1;
            }
            if me.is_some() && others && m.priority.wants_ack() && c.shown(m) && !acked_by_me(m) {
                counts.to_ack += 1;
                counts.stat_to_ack += usize::from(m.priority == Priority::Stat);
            }
        }
        counts.last = c.messages().next_back().map(|m| LastEntry {
            author: m.author_member.0,
            priority: m.priority.to_byte(),
            time_ms: m.hlc.millis(),
            preview: m.body.chars().take(PREVIEW_CHARS).collect(),
        });
        counts.last_activity = c.last_position().map(|(h, _)| h.millis());
        counts
    }

    /// The conversations this device holds, newest activity first.
    pub fn conversations(&self) -> Vec<ConversationSummary> {
        let me = self.member_id();
        let mut out: Vec<ConversationSummary> = self
            .convs
            .iter()
            .map(|(id, slot)| {
                let counts = match slot.stored_meta() {
                    Some(m) => ListCounts::from(m),
                    None => self
                        .conversation(id)
                        .map_or_else(ListCounts::default, |c| self.list_counts(c)),
                };
                let header = &slot.header;
                let (kind, members, role) = match &header.kind {
                    ConversationKind::Direct { members } => ("direct", members.to_vec(), None),
                    ConversationKind::Group { members, .. } => {
                        ("group", members.iter().copied().collect(), None)
                    }
                    ConversationKind::Role { role } => ("role", Vec::new(), Some(role.clone())),
                };
                let title = match &header.kind {
                    ConversationKind::Direct { members } => {
                        let other = members
                            .iter()
                            .find(|m| Some(**m) != me)
                            .unwrap_or(&members[0]);
                        self.member_name(other)
                            .unwrap_or_else(|| format!("member {}", &other.to_hex()[..8]))
                    }
                    _ => header.title(),
                };
                ConversationSummary {
                    id: *id,
                    title,
                    kind,
                    members,
                    role,
                    messages: counts.messages,
                    unread: counts.unread,
                    last_activity: counts.last_activity,
                    last: counts.last.map(|l| LastMessage {
                        author_name: self.member_name(&MemberId(l.author)),
                        priority: Priority::from_byte(l.priority).unwrap_or(Priority::Routine),
                        time_ms: l.time_ms,
                        preview: l.preview,
                    }),
                    to_ack: counts.to_ack,
                    stat_to_ack: counts.stat_to_ack,
                }
            })
            .collect();
        out.sort_by(|a, b| b.last_activity.cmp(&a.last_activity).then(a.id.cmp(&b.id)));
        out
    }

    /// The history of a conversation in display order, `limit` newest if given.
    pub fn history(
        &self,
        id: &ConversationId,
        limit: Option<usize>,
    ) -> Option<Vec<RenderedMessage>> {
        let c = self.conversation(id)?;
        self.history_page(id, None, limit.unwrap_or(c.len()))
            .and_then(Result::ok)
    }

    /// Up to `limit` messages ending just before `before` (the newest when
    /// `None`), in display order: what a screen pages through from the
    /// newest backwards. `Some(Err(()))` when `before` is not a message of
    /// this conversation.
    pub fn history_page(
        &self,
        id: &ConversationId,
        before: Option<&MessageId>,
        limit: usize,
    ) -> Option<Result<Vec<RenderedMessage>, ()>> {
        let c = self.conversation(id)?;
        let Some(page) = c.page(before, limit) else {
            return Some(Err(()));
        };
        // Each escalation level of a message is shown once: its first copy.
        Some(Ok(page
            .into_iter()
            .filter(|m| {
                c.shown(m) || self.config.clinical_fault == super::ClinicalFault::ShowEveryCopy
            })
            .map(|m| self.render(c, m))
            .collect()))
    }

    fn render(&self, c: &Conversation, m: &Message) -> RenderedMessage {
        let pos = m.order_key();
        let acked = self.ackers(c, m, &pos.1);
        // An ack is a read of that one message, not of those
        // before it: it joins the read cursors without moving one.
        let mut read: BTreeSet<MemberId> = self
            .reached(&c.receipts.read, pos, &m.author_member)
            .into_iter()
            .collect();
        read.extend(acked.iter().copied());
        RenderedMessage {
            id: pos.1,
            hlc: m.hlc.0,
            time_ms: m.hlc.millis(),
            author: m.author_member,
            author_name: self.member_name(&m.author_member),
            device: m.author_device,
            author_verified: self.bound(&m.author_device, &m.author_member),
            priority: m.priority,
            reply_to: m.reply_to,
            body: m.body.clone(),
            delivered_to: self.reached(&c.receipts.delivered, pos, &m.author_member),
            read_by: read.into_iter().collect(),
            acked_by: acked.into_iter().collect(),
            ack_by: m.fields.ack_by,
            escalation: m.fields.escalation.as_ref().map(|e| EscalationInfo {
                conversation: e.conversation,
                message: e.message,
                level: e.level,
                author: e.author,
                waiting: e.waiting.clone(),
                unacked_ms: e.unacked_ms,
            }),
            reminder: m.fields.reminder.as_ref().map(|r| ReminderInfo {
                due_ms: r.due_ms,
                targets: r.targets.clone(),
                every_ms: r.every_ms,
                times: r.times,
            }),
            attachments: m.fields.attachments.clone(),
        }
    }

    /// How many conversation ids the node keeps about `peer` (for tests:
    /// it must stay bounded by what the node holds).
    #[doc(hidden)]
    pub fn ids_kept_for(&self, peer: &DeviceId) -> Option<usize> {
        self.peers.get(peer).map(|p| p.known.len())
    }

    /// Connected peers.
    pub fn peers(&self) -> Vec<PeerInfo> {
        self.peers
            .iter()
            .map(|(d, p)| PeerInfo {
                device: *d,
                member: p.member().map(|c| c.member),
                name: p.member().map(|c| c.display_name.clone()),
                verified: p.member().is_some(),
            })
            .collect()
    }
}
