//! The audit trail (protocol/sync.md §8): each device's append-only,
//! hash-chained log of security-relevant actions, every entry signed by the
//! device. Pure: encoding, signing, checking one entry, and (`verify.rs`)
//! walking a whole chain. The node keeps, serves and replicates it
//! (`node/trail.rs`).
//!
//! Invariants: an entry is at most [`MAX_ENTRY_LEN`] bytes and decoding
//! never allocates beyond it; an entry is taken from anyone only once its
//! signature verifies under the device it names; entry `n` names the hash
//! of entry `n − 1` (`prev`), so an entry altered, removed or moved breaks
//! the chain at the first place it touched. A hash chain cannot show a
//! tail cut from its end: that is what administrators' copies are for.

mod verify;

pub use verify::{verify_chain, ChainReport, Problem};

use crate::codec::{DecodeError, Reader, Writer};
use crate::crypto::{self, DeviceKey, SIGNATURE_LEN};
use crate::ids::{ConversationId, DeviceId, MemberId, MessageId, Millis, TeamId};
use crate::membership::RevocationTarget;

/// Domain of an entry's signature (by its device).
pub const DOMAIN_ENTRY: &[u8] = b"huddle/audit-entry/v1";
/// Domain of an administrator's proof (by the team authority): "the device
/// named here holds the team key".
pub const DOMAIN_ADMIN: &[u8] = b"huddle/audit-admin/v1";
/// The most bytes one entry takes.
pub const MAX_ENTRY_LEN: usize = 512;
/// The most bytes of an action's body (an unknown action is kept whole).
pub const MAX_ACTION_LEN: usize = 256;
const VERSION: u8 = 1;

/// An entry's hash: what the next entry names as `prev`.
pub type EntryHash = [u8; 32];

/// How a person reached the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// `huddle run`, unlocking the data directory.
    Run,
    /// A CLI command on this computer.
    Cli,
    /// The screen (a browser session).
    Screen,
    /// The local API with its bearer token (a program).
    Api,
    Other(u8),
}

impl Via {
    fn code(self) -> u8 {
        match self {
            Via::Run => 1,
            Via::Cli => 2,
            Via::Screen => 3,
            Via::Api => 4,
            Via::Other(c) => c,
        }
    }

    fn from_code(c: u8) -> Via {
        match c {
            1 => Via::Run,
            2 => Via::Cli,
            3 => Via::Screen,
            4 => Via::Api,
            c => Via::Other(c),
        }
    }

    pub fn name(self) -> String {
        match self {
            Via::Run => "huddle run".into(),
            Via::Cli => "the CLI".into(),
            Via::Screen => "the screen".into(),
            Via::Api => "the API".into(),
            Via::Other(c) => format!("way {c}"),
        }
    }
}

/// What an entry records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// The data directory or a locked screen was unlocked.
    Unlocked {
        via: Via,
    },
    /// `count` wrong passphrases or PINs (counted since the last entry of
    /// this kind, when they could not be written at once).
    UnlockFailed {
        via: Via,
        count: u32,
    },
    /// A conversation was opened on the screen or read by the CLI or API.
    Opened {
        conversation: ConversationId,
        via: Via,
    },
    Sent {
        conversation: ConversationId,
        message: MessageId,
    },
    Acknowledged {
        conversation: ConversationId,
        message: MessageId,
    },
    /// A conversation was exported (`since` 0 for all of it).
    Exported {
        conversation: ConversationId,
        fhir: bool,
        since: Millis,
    },
    /// The team authority on this device admitted a device.
    Admitted {
        member: MemberId,
        device: DeviceId,
    },
    Revoked {
        target: RevocationTarget,
    },
    /// The passphrase was changed, or (`first`) the directory encrypted.
    PassphraseChanged {
        first: bool,
    },
    /// A PIN for unlocking the screen was set, or cleared.
    PinChanged {
        cleared: bool,
    },
    /// An action of a later version, kept as it was signed.
    Other {
        tag: u8,
        body: Vec<u8>,
    },
}

impl Action {
    fn tag(&self) -> u8 {
        match self {
            Action::Unlocked { .. } => 1,
            Action::UnlockFailed { .. } => 2,
            Action::Opened { .. } => 3,
            Action::Sent { .. } => 4,
            Action::Acknowledged { .. } => 5,
            Action::Exported { .. } => 6,
            Action::Admitted { .. } => 7,
            Action::Revoked { .. } => 8,
            Action::PassphraseChanged { .. } => 9,
            Action::PinChanged { .. } => 10,
            Action::Other { tag, .. } => *tag,
        }
    }

    fn body(&self) -> Vec<u8> {
        let mut w = Writer::new();
        match self {
            Action::Unlocked { via } => {
                w.u8(via.code());
            }
            Action::UnlockFailed { via, count } => {
                w.u8(via.code()).varint((*count).into());
            }
            Action::Opened { conversation, via } => {
                w.raw(&conversation.0).u8(via.code());
            }
            Action::Sent {
                conversation,
                message,
            }
            | Action::Acknowledged {
                conversation,
                message,
            } => {
                w.raw(&conversation.0).raw(&message.0);
            }
            Action::Exported {
                conversation,
                fhir,
                since,
            } => {
                w.raw(&conversation.0).u8(u8::from(*fhir)).varint(*since);
            }
            Action::Admitted { member, device } => {
                w.raw(&member.0).raw(&device.0);
            }
            Action::Revoked { target } => match target {
                RevocationTarget::Device(d) => {
                    w.u8(1).raw(&d.0);
                }
                RevocationTarget::Member(m) => {
                    w.u8(2).raw(&m.0);
                }
            },
            Action::PassphraseChanged { first } => {
                w.u8(u8::from(*first));
            }
            Action::PinChanged { cleared } => {
                w.u8(u8::from(*cleared));
            }
            Action::Other { body, .. } => {
                w.raw(body);
            }
        }
        w.finish()
    }

    fn read(tag: u8, body: &[u8]) -> Result<Action, DecodeError> {
        let mut r = Reader::new(body);
        let action = match tag {
            1 => Action::Unlocked {
                via: Via::from_code(r.u8("via")?),
            },
            2 => Action::UnlockFailed {
                via: Via::from_code(r.u8("via")?),
                count: u32::try_from(r.varint("count")?)
                    .map_err(|_| DecodeError::Invalid("failure count"))?,
            },
            3 => Action::Opened {
                conversation: ConversationId(r.array("conversation")?),
                via: Via::from_code(r.u8("via")?),
            },
            4 | 5 => {
                let conversation = ConversationId(r.array("conversation")?);
                let message = MessageId(r.array("message")?);
                if tag == 4 {
                    Action::Sent {
                        conversation,
                        message,
                    }
                } else {
                    Action::Acknowledged {
                        conversation,
                        message,
                    }
                }
            }
            6 => Action::Exported {
                conversation: ConversationId(r.array("conversation")?),
                fhir: flag(&mut r)?,
                since: r.varint("since")?,
            },
            7 => Action::Admitted {
                member: MemberId(r.array("member")?),
                device: DeviceId(r.array("device")?),
            },
            8 => Action::Revoked {
                target: match r.u8("revocation target")? {
                    1 => RevocationTarget::Device(DeviceId(r.array("device")?)),
                    2 => RevocationTarget::Member(MemberId(r.array("member")?)),
                    t => return Err(DecodeError::Unknown("revocation target", t.into())),
                },
            },
            9 => Action::PassphraseChanged {
                first: flag(&mut r)?,
            },
            10 => Action::PinChanged {
                cleared: flag(&mut r)?,
            },
            0 => return Err(DecodeError::Unknown("action", 0)),
            tag => {
                return Ok(Action::Other {
                    tag,
                    body: body.to_vec(),
                })
            }
        };
        r.finish()?;
        Ok(action)
    }
}

impl Action {
    /// A short name for the kind of action (`huddle audit export`).
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Unlocked { .. } => "unlocked",
            Action::UnlockFailed { .. } => "unlock_failed",
            Action::Opened { .. } => "opened",
            Action::Sent { .. } => "sent",
            Action::Acknowledged { .. } => "acknowledged",
            Action::Exported { .. } => "exported",
            Action::Admitted { .. } => "admitted",
            Action::Revoked { .. } => "revoked",
            Action::PassphraseChanged { .. } => "passphrase_changed",
            Action::PinChanged { .. } => "pin_changed",
            Action::Other { .. } => "other",
        }
    }

    /// The conversation it concerns, if any.
    pub fn conversation(&self) -> Option<ConversationId> {
        match self {
            Action::Opened { conversation, .. }
            | Action::Sent { conversation, .. }
            | Action::Acknowledged { conversation, .. }
            | Action::Exported { conversation, .. } => Some(*conversation),
            _ => None,
        }
    }

    /// One line for a person; `conv` names a conversation.
    pub fn describe(&self, conv: &dyn Fn(&ConversationId) -> String) -> String {
        match self {
            Action::Unlocked { via } => format!("unlocked ({})", via.name()),
            Action::UnlockFailed { via, count } => {
                format!("{count} wrong passphrase(s) or PIN(s) ({})", via.name())
            }
            Action::Opened { conversation, via } => {
                format!("opened {} ({})", conv(conversation), via.name())
            }
            Action::Sent {
                conversation,
                message,
            } => format!(
                "sent message {} in {}",
                &message.to_hex()[..8],
                conv(conversation)
            ),
            Action::Acknowledged {
                conversation,
                message,
            } => format!(
                "acknowledged message {} in {}",
                &message.to_hex()[..8],
                conv(conversation)
            ),
            Action::Exported {
                conversation,
                fhir,
                since,
            } => format!(
                "exported {} as {}{}",
                conv(conversation),
                if *fhir { "FHIR" } else { "JSON" },
                if *since > 0 { " (from a time on)" } else { "" }
            ),
            Action::Admitted { device, .. } => format!("admitted device {}", device.short()),
            Action::Revoked { target } => match target {
                RevocationTarget::Device(d) => format!("revoked device {}", d.short()),
                RevocationTarget::Member(m) => format!("revoked member {}", &m.to_hex()[..8]),
            },
            Action::PassphraseChanged { first: true } => "encrypted the data directory".into(),
            Action::PassphraseChanged { first: false } => "changed the passphrase".into(),
            Action::PinChanged { cleared: false } => "set a PIN".into(),
            Action::PinChanged { cleared: true } => "cleared the PIN".into(),
            Action::Other { tag, .. } => format!("an action of a later version ({tag})"),
        }
    }
}

fn flag(r: &mut Reader<'_>) -> Result<bool, DecodeError> {
    match r.u8("flag")? {
        0 => Ok(false),
        1 => Ok(true),
        v => Err(DecodeError::Unknown("flag", v.into())),
    }
}

/// One signed entry of a device's trail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub device: DeviceId,
    /// Its place in the device's trail, from 0.
    pub seq: u64,
    /// The hash of entry `seq − 1` (zeros for the first).
    pub prev: EntryHash,
    /// The device's clock when it was written.
    pub at: Millis,
    pub action: Action,
    pub signature: [u8; SIGNATURE_LEN],
}

impl Entry {
    /// Writes and signs the entry after `prev` (`None` for a first entry).
    pub fn sign(
        key: &DeviceKey,
        prev: Option<(u64, EntryHash)>,
        at: Millis,
        action: Action,
    ) -> Entry {
        let (seq, prev) = match prev {
            Some((seq, hash)) => (seq + 1, hash),
            None => (0, [0; 32]),
        };
        let mut e = Entry {
            device: key.device_id(),
            seq,
            prev,
            at,
            action,
            signature: [0; SIGNATURE_LEN],
        };
        e.signature = key.sign(DOMAIN_ENTRY, &e.signed_part());
        e
    }

    fn signed_part(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(128);
        w.u8(VERSION)
            .raw(&self.device.0)
            .u64_be(self.seq)
            .raw(&self.prev)
            .u64_be(self.at)
            .u8(self.action.tag())
            .bytes(&self.action.body());
        w.finish()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = self.signed_part();
        bytes.extend_from_slice(&self.signature);
        bytes
    }

    /// Decodes an entry; says nothing of its signature ([`Entry::verify`]).
    pub fn decode(bytes: &[u8]) -> Result<Entry, DecodeError> {
        if bytes.len() > MAX_ENTRY_LEN {
            return Err(DecodeError::TooLong("audit entry", MAX_ENTRY_LEN));
        }
        let mut r = Reader::new(bytes);
        let version = r.u8("audit entry version")?;
        if version != VERSION {
            return Err(DecodeError::Unknown("audit entry version", version.into()));
        }
        let device = DeviceId(r.array("device")?);
        let seq = r.u64_be("seq")?;
        let prev = r.array("prev")?;
        let at = r.u64_be("time")?;
        let tag = r.u8("action")?;
        let body = r.bytes(MAX_ACTION_LEN, "action")?;
        let action = Action::read(tag, body)?;
        let signature = r.array("signature")?;
        r.finish()?;
        Ok(Entry {
            device,
            seq,
            prev,
            at,
            action,
            signature,
        })
    }

    /// Is the signature the named device's?
    pub fn verify(&self) -> bool {
        crypto::verify(
            &self.device.0,
            DOMAIN_ENTRY,
            &self.signed_part(),
            &self.signature,
        )
    }

    /// The hash the next entry names.
    pub fn hash(&self) -> EntryHash {
        hash_of(&self.encode())
    }
}

/// A store's `trail/` records grouped by device: (place, entry) in place
/// order. A key of another length is not a trail record and is skipped.
pub fn group_records(
    pairs: crate::store::KeyValues,
) -> std::collections::BTreeMap<DeviceId, Vec<(u64, Vec<u8>)>> {
    let mut out: std::collections::BTreeMap<DeviceId, Vec<(u64, Vec<u8>)>> = Default::default();
    for (k, v) in pairs {
        let Some(rest) = k.strip_prefix(crate::store::keys::TRAIL_PREFIX) else {
            continue;
        };
        let (Ok(device), Ok(place)) = (
            <[u8; 32]>::try_from(&rest[..rest.len().min(32)]),
            <[u8; 8]>::try_from(&rest[rest.len().min(32)..]),
        ) else {
            continue;
        };
        out.entry(DeviceId(device))
            .or_default()
            .push((u64::from_be_bytes(place), v));
    }
    for records in out.values_mut() {
        records.sort_by_key(|(p, _)| *p);
    }
    out
}

/// The hash of an entry's bytes.
pub fn hash_of(bytes: &[u8]) -> EntryHash {
    crypto::sha256(&[b"huddle/audit-hash/v1", bytes])
}

/// A team authority's statement that `device` holds the team key: shown
/// by an administrator asking a member for its trail. Bound to the device,
/// which Noise authenticates, so no other device can use it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdminProof(pub [u8; SIGNATURE_LEN]);

impl AdminProof {
    pub fn sign(authority: &crate::crypto::AuthorityKey, device: &DeviceId) -> AdminProof {
        AdminProof(authority.sign(DOMAIN_ADMIN, &device.0))
    }

    pub fn verify(&self, team: &TeamId, device: &DeviceId) -> bool {
        crypto::verify(&team.0, DOMAIN_ADMIN, &device.0, &self.0)
    }
}

/// What one device showed of another's trail that its own copy contradicts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// Whose trail.
    pub device: DeviceId,
    /// Who holds the longer or different copy.
    pub holder: DeviceId,
    /// Entries the trail's device showed.
    pub shown: u64,
    /// Entries the holder held then.
    pub held: u64,
    /// The shown trail differs from the held one at or before entry `held − 1`
    /// (rather than only being shorter).
    pub diverged: bool,
    pub at: Millis,
}

impl Finding {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(1)
            .raw(&self.device.0)
            .raw(&self.holder.0)
            .u64_be(self.shown)
            .u64_be(self.held)
            .u8(u8::from(self.diverged))
            .u64_be(self.at);
        w.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<Finding, DecodeError> {
        let mut r = Reader::new(bytes);
        let v = r.u8("finding version")?;
        if v != 1 {
            return Err(DecodeError::Unknown("finding version", v.into()));
        }
        let f = Finding {
            device: DeviceId(r.array("device")?),
            holder: DeviceId(r.array("holder")?),
            shown: r.u64_be("shown")?,
            held: r.u64_be("held")?,
            diverged: flag(&mut r)?,
            at: r.u64_be("time")?,
        };
        r.finish()?;
        Ok(f)
    }

    /// One sentence for `huddle audit verify`.
    pub fn describe(&self, name: &dyn Fn(&DeviceId) -> String) -> String {
        let (whose, holder) = (name(&self.device), name(&self.holder));
        if self.diverged {
            format!(
                "{whose}'s trail was rewritten: {holder} holds {} entries that it no longer shows the same way (first seen differing at or before entry {})",
                self.held,
                self.held.saturating_sub(1)
            )
        } else {
            format!(
                "{whose}'s trail is shorter than what an administrator holds: it showed {} entries, {holder} holds {} (entries {}..={} were cut from its end)",
                self.shown,
                self.held,
                self.shown,
                self.held.saturating_sub(1)
            )
        }
    }
}

#[cfg(test)]
mod tests;
