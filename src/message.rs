//! Messages and receipts: the signed records stored inside a conversation
//! document.
//!
//! Invariant: what is stored is exactly what was signed (minus the
//! conversation id, which the signature also covers so a message cannot be
//! replayed into another conversation). A record whose signature does not
//! verify is never indexed, so it is never rendered as genuine.

use crate::codec::{DecodeError, Reader, Writer};
use crate::crypto::{self, domain, DeviceKey, SIGNATURE_LEN};
use crate::hlc::Hlc;
use crate::ids::{ConversationId, DeviceId, MemberId, MessageId, Millis};

mod fields;
pub use fields::{AckBy, Escalation, Fields, Reminder, MAX_LEVELS, MAX_NAMED, MIN_REPEAT_MS};

/// Largest message body, in bytes of UTF-8.
pub const MAX_BODY_LEN: usize = 16 * 1024;
/// Version 1: no fields; version 2: the same, then [`Fields`] (at least
/// one). A message is written as version 1 when it has no fields, so each
/// message has one encoding.
const MESSAGE_VERSION: u8 = 1;
const MESSAGE_VERSION_FIELDS: u8 = 2;
const RECEIPT_VERSION: u8 = 1;

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Routine,
    Urgent,
    Stat,
}

impl Priority {
    pub fn to_byte(self) -> u8 {
        match self {
            Priority::Routine => 0,
            Priority::Urgent => 1,
            Priority::Stat => 2,
        }
    }

    pub fn from_byte(b: u8) -> Result<Priority, DecodeError> {
        Ok(match b {
            0 => Priority::Routine,
            1 => Priority::Urgent,
            2 => Priority::Stat,
            _ => return Err(DecodeError::Unknown("priority", b.into())),
        })
    }

    /// Urgent and STAT messages ask every member for an acknowledgement.
    pub fn wants_ack(self) -> bool {
        self != Priority::Routine
    }
}

/// A message as signed by its author's device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub author_member: MemberId,
    pub author_device: DeviceId,
    pub hlc: Hlc,
    pub priority: Priority,
    pub reply_to: Option<MessageId>,
    pub body: String,
    pub fields: Fields,
    pub signature: [u8; SIGNATURE_LEN],
}

/// The fields an author fills in.
#[derive(Clone, Debug)]
pub struct Draft {
    pub author_member: MemberId,
    pub hlc: Hlc,
    pub priority: Priority,
    pub reply_to: Option<MessageId>,
    pub body: String,
    pub fields: Fields,
}

impl Message {
    pub fn sign(key: &DeviceKey, conversation: &ConversationId, draft: Draft) -> Message {
        let mut m = Message {
            author_member: draft.author_member,
            author_device: key.device_id(),
            hlc: draft.hlc,
            priority: draft.priority,
            reply_to: draft.reply_to,
            body: draft.body,
            fields: draft.fields,
            signature: [0; SIGNATURE_LEN],
        };
        m.signature = key.sign(domain::MESSAGE, &m.signed_payload(conversation));
        m
    }

    pub fn id(&self) -> MessageId {
        let h = crypto::sha256(&[&self.signature]);
        MessageId(h[..16].try_into().expect("16 bytes"))
    }

    /// The display-order key: the same on every device.
    pub fn order_key(&self) -> (Hlc, MessageId) {
        (self.hlc, self.id())
    }

    fn body_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(80 + self.body.len());
        let version = if self.fields.is_empty() {
            MESSAGE_VERSION
        } else {
            MESSAGE_VERSION_FIELDS
        };
        w.u8(version)
            .raw(&self.author_member.0)
            .raw(&self.author_device.0)
            .u64_be(self.hlc.0)
            .u8(self.priority.to_byte());
        match self.reply_to {
            Some(r) => w.u8(1).raw(&r.0),
            None => w.u8(0),
        };
        w.str(&self.body);
        if !self.fields.is_empty() {
            self.fields.write(&mut w);
        }
        w.finish()
    }

    fn signed_payload(&self, conversation: &ConversationId) -> Vec<u8> {
        [conversation.0.as_slice(), &self.body_bytes()].concat()
    }

    /// The stored form (what goes into the conversation document).
    pub fn encode(&self) -> Vec<u8> {
        let mut b = self.body_bytes();
        b.extend_from_slice(&self.signature);
        b
    }

    /// Decodes without checking the signature; see [`Message::verify`].
    pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
        let mut r = Reader::new(bytes);
        let version = r.u8("message version")?;
        if version != MESSAGE_VERSION && version != MESSAGE_VERSION_FIELDS {
            return Err(DecodeError::Unknown("message version", version.into()));
        }
        let author_member = MemberId(r.array("author member")?);
        let author_device = DeviceId(r.array("author device")?);
        let hlc = Hlc(r.u64_be("timestamp")?);
        let priority = Priority::from_byte(r.u8("priority")?)?;
        let reply_to = match r.u8("reply flag")? {
            0 => None,
            1 => Some(MessageId(r.array("reply-to")?)),
            f => return Err(DecodeError::Unknown("reply flag", f.into())),
        };
        let body = r.str(MAX_BODY_LEN, "body")?.to_owned();
        let fields = if version == MESSAGE_VERSION_FIELDS {
            Fields::read(&mut r)?
        } else {
            Fields::default()
        };
        let signature = r.array("message signature")?;
        r.finish()?;
        Ok(Message {
            author_member,
            author_device,
            hlc,
            priority,
            reply_to,
            body,
            fields,
            signature,
        })
    }

    /// Was this message signed by `author_device` for `conversation`?
    pub fn verify(&self, conversation: &ConversationId) -> bool {
        let (k, d, p, s) = self.signed_item(conversation);
        crypto::verify(k, d, &p, s)
    }

    /// What [`Message::verify`] checks, for batch verification.
    pub fn signed_item(&self, conversation: &ConversationId) -> crypto::SignedItem<'_> {
        (
            &self.author_device.0,
            domain::MESSAGE,
            self.signed_payload(conversation),
            &self.signature,
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ReceiptKind {
    /// Everything up to `upto` has reached one of the member's devices.
    Delivered,
    /// The member has read everything up to `upto`.
    Read,
    /// The member acknowledged the message `upto` (urgent / STAT).
    Ack,
    /// Occurrence `occurrence` (0-based) of the reminder `upto` is done.
    Done { occurrence: u16 },
    /// Occurrence `occurrence` of the reminder `upto` fires again at `until`.
    Snooze { occurrence: u16, until: Millis },
}

impl ReceiptKind {
    pub fn letter(self) -> char {
        match self {
            ReceiptKind::Delivered => 'd',
            ReceiptKind::Read => 'r',
            ReceiptKind::Ack => 'a',
            ReceiptKind::Done { .. } => 'x',
            ReceiptKind::Snooze { .. } => 'z',
        }
    }

    fn byte(self) -> u8 {
        match self {
            ReceiptKind::Delivered => 1,
            ReceiptKind::Read => 2,
            ReceiptKind::Ack => 3,
            ReceiptKind::Done { .. } => 4,
            ReceiptKind::Snooze { .. } => 5,
        }
    }
}

/// A signed receipt. Delivered and read receipts are cursors (everything up
/// to a position in display order); an acknowledgement names one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    pub kind: ReceiptKind,
    pub member: MemberId,
    pub device: DeviceId,
    pub upto: (Hlc, MessageId),
    pub at: Hlc,
    pub signature: [u8; SIGNATURE_LEN],
}

impl Receipt {
    pub fn sign(
        key: &DeviceKey,
        conversation: &ConversationId,
        kind: ReceiptKind,
        member: MemberId,
        upto: (Hlc, MessageId),
        at: Hlc,
    ) -> Receipt {
        let mut r = Receipt {
            kind,
            member,
            device: key.device_id(),
            upto,
            at,
            signature: [0; SIGNATURE_LEN],
        };
        r.signature = key.sign(domain::RECEIPT, &r.signed_payload(conversation));
        r
    }

    fn body_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(106);
        w.u8(RECEIPT_VERSION)
            .u8(self.kind.byte())
            .raw(&self.member.0)
            .raw(&self.device.0)
            .u64_be(self.upto.0 .0)
            .raw(&self.upto.1 .0)
            .u64_be(self.at.0);
        match self.kind {
            ReceiptKind::Done { occurrence } => {
                w.raw(&occurrence.to_be_bytes());
            }
            ReceiptKind::Snooze { occurrence, until } => {
                w.raw(&occurrence.to_be_bytes()).u64_be(until);
            }
            _ => {}
        }
        w.finish()
    }

    fn signed_payload(&self, conversation: &ConversationId) -> Vec<u8> {
        [conversation.0.as_slice(), &self.body_bytes()].concat()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = self.body_bytes();
        b.extend_from_slice(&self.signature);
        b
    }

    pub fn decode(bytes: &[u8]) -> Result<Receipt, DecodeError> {
        let mut r = Reader::new(bytes);
        let version = r.u8("receipt version")?;
        if version != RECEIPT_VERSION {
            return Err(DecodeError::Unknown("receipt version", version.into()));
        }
        let kind = r.u8("receipt kind")?;
        let member = MemberId(r.array("member")?);
        let device = DeviceId(r.array("device")?);
        let upto = (
            Hlc(r.u64_be("cursor time")?),
            MessageId(r.array("cursor id")?),
        );
        let at = Hlc(r.u64_be("receipt time")?);
        let kind = match kind {
            1 => ReceiptKind::Delivered,
            2 => ReceiptKind::Read,
            3 => ReceiptKind::Ack,
            4 => ReceiptKind::Done {
                occurrence: u16::from_be_bytes(r.array("occurrence")?),
            },
            5 => ReceiptKind::Snooze {
                occurrence: u16::from_be_bytes(r.array("occurrence")?),
                until: r.u64_be("snoozed until")?,
            },
            k => return Err(DecodeError::Unknown("receipt kind", k.into())),
        };
        let signature = r.array("receipt signature")?;
        r.finish()?;
        Ok(Receipt {
            kind,
            member,
            device,
            upto,
            at,
            signature,
        })
    }

    pub fn verify(&self, conversation: &ConversationId) -> bool {
        let (k, d, p, s) = self.signed_item(conversation);
        crypto::verify(k, d, &p, s)
    }

    /// What [`Receipt::verify`] checks, for batch verification.
    pub fn signed_item(&self, conversation: &ConversationId) -> crypto::SignedItem<'_> {
        (
            &self.device.0,
            domain::RECEIPT,
            self.signed_payload(conversation),
            &self.signature,
        )
    }

    /// The key under which this receipt lives in the document's receipt map.
    /// Cursors have one key per device (a single writer, so no conflicts);
    /// acknowledgements one key per message and device; a reminder's done
    /// and snooze one key per reminder, occurrence and device.
    pub fn doc_key(&self) -> String {
        match self.kind {
            ReceiptKind::Done { occurrence } | ReceiptKind::Snooze { occurrence, .. } => format!(
                "{}{}{:04x}{}",
                self.kind.letter(),
                self.upto.1,
                occurrence,
                data_encoding::HEXLOWER.encode(&self.device.0)
            ),
            ReceiptKind::Ack => format!(
                "a{}{}",
                self.upto.1,
                data_encoding::HEXLOWER.encode(&self.device.0)
            ),
            k => format!(
                "{}{}",
                k.letter(),
                data_encoding::HEXLOWER.encode(&self.device.0)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;

    #[test]
    fn sign_verify_and_tamper() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let key = DeviceKey::generate(&mut rng);
        let conv = ConversationId([5; 16]);
        let m = Message::sign(
            &key,
            &conv,
            Draft {
                author_member: MemberId([1; 16]),
                hlc: Hlc::new(1_700_000_000_000, 0),
                priority: Priority::Urgent,
                reply_to: Some(MessageId([2; 16])),
                body: "Bed 4 BP 80/40, please review".into(),
                fields: Default::default(),
            },
        );
        let back = Message::decode(&m.encode()).unwrap();
        assert_eq!(back, m);
        assert!(back.verify(&conv));
        assert!(
            !back.verify(&ConversationId([6; 16])),
            "replayed into another conversation"
        );
        let mut altered = back.clone();
        altered.body.push('!');
        assert!(!altered.verify(&conv));
        let mut impostor = back;
        impostor.author_member = MemberId([9; 16]);
        assert!(!impostor.verify(&conv));
    }

    #[test]
    fn receipts_round_trip() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        let key = DeviceKey::generate(&mut rng);
        let conv = ConversationId([5; 16]);
        let r = Receipt::sign(
            &key,
            &conv,
            ReceiptKind::Ack,
            MemberId([1; 16]),
            (Hlc(9), MessageId([3; 16])),
            Hlc(10),
        );
        let back = Receipt::decode(&r.encode()).unwrap();
        assert_eq!(back, r);
        assert!(back.verify(&conv));
    }
}
