//! The tagged fields of a version-2 message (sync.md §7.6): what a message
//! carries beyond its text. Each is optional and appears at most once, in
//! increasing tag order, so a message has exactly one encoding.
//!
//! Invariant: a field is decoded whole from its own length-prefixed bytes,
//! every count and length bounded before anything is allocated; a tag this
//! version does not know makes the whole message undecodable (and so
//! refused by the conversation's rules), never skipped.

use crate::codec::{DecodeError, Reader, Writer};
use crate::ids::{ConversationId, MemberId, MessageId, Millis};

use super::Priority;
use crate::blobs::meta::{self as attach, Attachment};

/// Most members a field names (waiting members, a reminder's targets).
pub const MAX_NAMED: usize = 32;
/// Most bytes one field's encoding may take.
const MAX_FIELD_LEN: usize = 4096;
/// Escalation levels are 1..=MAX_LEVELS (a ladder has at most this many steps).
pub const MAX_LEVELS: u8 = 4;
/// Most occurrences of one reminder.
pub const MAX_OCCURRENCES: u16 = 1000;
/// The shortest repeat of a reminder.
pub const MIN_REPEAT_MS: Millis = 60_000;

const TAG_ACK_BY: u8 = 1;
const TAG_ESCALATION: u8 = 2;
const TAG_REMINDER: u8 = 3;
const TAG_ATTACHMENTS: u8 = 4;

/// Who must acknowledge an urgent or STAT message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase", tag = "who", content = "member")]
pub enum AckBy {
    /// One acknowledgement by any recipient is enough.
    Any,
    /// Every recipient acknowledges.
    All,
    /// This member acknowledges.
    Member(MemberId),
}

impl AckBy {
    pub(crate) fn write(&self, w: &mut Writer) {
        match self {
            AckBy::Any => w.u8(1),
            AckBy::All => w.u8(2),
            AckBy::Member(m) => w.u8(3).raw(&m.0),
        };
    }

    pub(crate) fn read(r: &mut Reader) -> Result<AckBy, DecodeError> {
        Ok(match r.u8("ack-by")? {
            1 => AckBy::Any,
            2 => AckBy::All,
            3 => AckBy::Member(MemberId(r.array("ack-by member")?)),
            k => return Err(DecodeError::Unknown("ack-by", k.into())),
        })
    }
}

/// An escalation entry (written into a role channel): a message in
/// `conversation` still lacked an acknowledgement when escalation level
/// `level` came due. It never carries the original's text.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Escalation {
    pub conversation: ConversationId,
    pub message: MessageId,
    pub level: u8,
    pub priority: Priority,
    /// The original's author.
    pub author: MemberId,
    /// Whose acknowledgement was still owed (sorted, unique, 1..=32).
    pub waiting: Vec<MemberId>,
    /// How long the writing device had held the original unacknowledged.
    pub unacked_ms: Millis,
}

/// A reminder: fires on the devices of `targets` at `due_ms`, and then every
/// `every_ms` until `times` occurrences (sync.md §7.6).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Reminder {
    pub due_ms: Millis,
    /// Sorted, unique, 1..=32.
    pub targets: Vec<MemberId>,
    /// 0: once; else at least [`MIN_REPEAT_MS`].
    pub every_ms: Millis,
    /// 1 when `every_ms` is 0; else 1..=[`MAX_OCCURRENCES`].
    pub times: u16,
}

impl Reminder {
    /// When occurrence `k` (0-based) is due.
    pub fn occurrence(&self, k: u16) -> Millis {
        self.due_ms
            .saturating_add(self.every_ms.saturating_mul(u64::from(k)))
    }
}

/// A message's fields (all absent: a version-1 message).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Fields {
    pub ack_by: Option<AckBy>,
    pub escalation: Option<Escalation>,
    pub reminder: Option<Reminder>,
    /// Empty, or 1..=[`attach::MAX_ATTACHMENTS`] blobs (protocol/blobs.md).
    pub attachments: Vec<Attachment>,
}

fn write_members(w: &mut Writer, members: &[MemberId]) {
    w.varint(members.len() as u64);
    for m in members {
        w.raw(&m.0);
    }
}

fn read_members(r: &mut Reader, what: &'static str) -> Result<Vec<MemberId>, DecodeError> {
    let n = r.count(MAX_NAMED, 16, what)?;
    if n == 0 {
        return Err(DecodeError::Invalid("a field names no member"));
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(MemberId(r.array(what)?));
    }
    if out.windows(2).any(|p| p[0] >= p[1]) {
        return Err(DecodeError::Invalid("members not sorted and unique"));
    }
    Ok(out)
}

impl Fields {
    pub fn is_empty(&self) -> bool {
        self == &Fields::default()
    }

    /// Checks what decoding checks, for a local writer's fields.
    pub fn validate(&self) -> Result<(), DecodeError> {
        if self.is_empty() {
            return Ok(());
        }
        let mut w = Writer::new();
        self.write(&mut w);
        let bytes = w.finish();
        let mut r = Reader::new(&bytes);
        let back = Fields::read(&mut r)?;
        r.finish()?;
        if back != *self {
            return Err(DecodeError::Invalid("fields do not survive encoding"));
        }
        Ok(())
    }

    pub(crate) fn write(&self, w: &mut Writer) {
        let mut parts: Vec<(u8, Vec<u8>)> = Vec::new();
        if let Some(a) = &self.ack_by {
            let mut f = Writer::new();
            a.write(&mut f);
            parts.push((TAG_ACK_BY, f.finish()));
        }
        if let Some(e) = &self.escalation {
            let mut f = Writer::new();
            f.raw(&e.conversation.0)
                .raw(&e.message.0)
                .u8(e.level)
                .u8(e.priority.to_byte())
                .raw(&e.author.0);
            write_members(&mut f, &e.waiting);
            f.u64_be(e.unacked_ms);
            parts.push((TAG_ESCALATION, f.finish()));
        }
        if let Some(rm) = &self.reminder {
            let mut f = Writer::new();
            f.u64_be(rm.due_ms);
            write_members(&mut f, &rm.targets);
            f.u64_be(rm.every_ms).raw(&rm.times.to_be_bytes());
            parts.push((TAG_REMINDER, f.finish()));
        }
        if !self.attachments.is_empty() {
            let mut f = Writer::new();
            attach::write_all(&mut f, &self.attachments);
            parts.push((TAG_ATTACHMENTS, f.finish()));
        }
        w.varint(parts.len() as u64);
        for (tag, bytes) in parts {
            w.u8(tag).bytes(&bytes);
        }
    }

    pub(crate) fn read(r: &mut Reader) -> Result<Fields, DecodeError> {
        let n = r.count(4, 2, "field count")?;
        if n == 0 {
            return Err(DecodeError::Invalid(
                "a version-2 message without fields (it is written as version 1)",
            ));
        }
        let mut fields = Fields::default();
        let mut last = 0u8;
        for _ in 0..n {
            let tag = r.u8("field tag")?;
            if tag <= last {
                return Err(DecodeError::Invalid("fields out of order or repeated"));
            }
            last = tag;
            let max = if tag == TAG_ATTACHMENTS {
                attach::MAX_FIELD_LEN
            } else {
                MAX_FIELD_LEN
            };
            let mut f = Reader::new(r.bytes(max, "field")?);
            match tag {
                TAG_ACK_BY => fields.ack_by = Some(AckBy::read(&mut f)?),
                TAG_ESCALATION => {
                    let e = Escalation {
                        conversation: ConversationId(f.array("escalated conversation")?),
                        message: MessageId(f.array("escalated message")?),
                        level: f.u8("escalation level")?,
                        priority: Priority::from_byte(f.u8("escalated priority")?)?,
                        author: MemberId(f.array("escalated author")?),
                        waiting: read_members(&mut f, "waiting members")?,
                        unacked_ms: f.u64_be("unacknowledged for")?,
                    };
                    if e.level == 0 || e.level > MAX_LEVELS {
                        return Err(DecodeError::Unknown("escalation level", e.level.into()));
                    }
                    if !e.priority.wants_ack() {
                        return Err(DecodeError::Invalid("an escalation of a routine message"));
                    }
                    fields.escalation = Some(e);
                }
                TAG_REMINDER => {
                    let due_ms = f.u64_be("reminder due")?;
                    let targets = read_members(&mut f, "reminder targets")?;
                    let every_ms = f.u64_be("reminder repeat")?;
                    let times = u16::from_be_bytes(f.array("reminder times")?);
                    let once = every_ms == 0 && times == 1;
                    let repeats =
                        every_ms >= MIN_REPEAT_MS && (2..=MAX_OCCURRENCES).contains(&times);
                    if !once && !repeats {
                        return Err(DecodeError::Invalid("a reminder's repeat out of bounds"));
                    }
                    fields.reminder = Some(Reminder {
                        due_ms,
                        targets,
                        every_ms,
                        times,
                    });
                }
                TAG_ATTACHMENTS => fields.attachments = attach::read_all(&mut f)?,
                t => return Err(DecodeError::Unknown("message field", t.into())),
            }
            f.finish()?;
        }
        if fields.escalation.is_some() && fields.reminder.is_some() {
            return Err(DecodeError::Invalid(
                "a message is an escalation or a reminder, not both",
            ));
        }
        Ok(fields)
    }
}
