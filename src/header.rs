//! Conversation headers: what a conversation is and who belongs to it.
//!
//! A header is signed by the device that created the conversation and never
//! changes. Invariant: [`ConversationHeader::admits`] is the one rule that
//! decides whether a certificate's holder may receive a conversation's bytes.

use std::collections::BTreeSet;

use crate::codec::{DecodeError, Reader, Writer};
use crate::crypto::{self, domain, DeviceKey, SIGNATURE_LEN};
use crate::ids::{ConversationId, DeviceId, MemberId, Millis};
use crate::membership::{Certificate, MAX_NAME_LEN, MAX_ROLE_LEN};

pub const MAX_GROUP_MEMBERS: usize = 256;
const HEADER_VERSION: u8 = 1;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConversationKind {
    /// Two members.
    Direct { members: [MemberId; 2] },
    /// Named members.
    Group {
        title: String,
        members: BTreeSet<MemberId>,
    },
    /// Everyone whose certificate carries `role`.
    Role { role: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConversationHeader {
    pub id: ConversationId,
    pub kind: ConversationKind,
    pub creator: DeviceId,
    pub created: Millis,
    pub signature: [u8; SIGNATURE_LEN],
}

impl ConversationHeader {
    pub fn sign(
        key: &DeviceKey,
        id: ConversationId,
        kind: ConversationKind,
        created: Millis,
    ) -> Self {
        let mut h = ConversationHeader {
            id,
            kind,
            creator: key.device_id(),
            created,
            signature: [0; SIGNATURE_LEN],
        };
        h.signature = key.sign(domain::HEADER, &h.signed_bytes());
        h
    }

    fn signed_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(128);
        w.u8(HEADER_VERSION).raw(&self.id.0);
        match &self.kind {
            ConversationKind::Direct { members } => {
                w.u8(1).raw(&members[0].0).raw(&members[1].0);
            }
            ConversationKind::Group { title, members } => {
                w.u8(2).str(title).varint(members.len() as u64);
                for m in members {
                    w.raw(&m.0);
                }
            }
            ConversationKind::Role { role } => {
                w.u8(3).str(role);
            }
        }
        w.raw(&self.creator.0).u64_be(self.created);
        w.finish()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = self.signed_bytes();
        b.extend_from_slice(&self.signature);
        b
    }

    /// Decodes and checks the creator's signature.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let version = r.u8("header version")?;
        if version != HEADER_VERSION {
            return Err(DecodeError::Unknown("header version", version.into()));
        }
        let id = ConversationId(r.array("conversation id")?);
        let kind = match r.u8("conversation kind")? {
            1 => ConversationKind::Direct {
                members: [MemberId(r.array("member")?), MemberId(r.array("member")?)],
            },
            2 => {
                let title = r.str(MAX_NAME_LEN, "title")?.to_owned();
                let n = r.count(MAX_GROUP_MEMBERS, 16, "members")?;
                let mut members = BTreeSet::new();
                for _ in 0..n {
                    members.insert(MemberId(r.array("member")?));
                }
                ConversationKind::Group { title, members }
            }
            3 => ConversationKind::Role {
                role: r.str(MAX_ROLE_LEN, "role")?.to_owned(),
            },
            k => return Err(DecodeError::Unknown("conversation kind", k.into())),
        };
        let creator = DeviceId(r.array("creator")?);
        let created = r.u64_be("created")?;
        let signature = r.array("header signature")?;
        r.finish()?;
        let h = ConversationHeader {
            id,
            kind,
            creator,
            created,
            signature,
        };
        if !crypto::verify(
            &h.creator.0,
            domain::HEADER,
            &h.signed_bytes(),
            &h.signature,
        ) {
            return Err(DecodeError::Invalid(
                "conversation header signature does not verify",
            ));
        }
        Ok(h)
    }

    /// May the holder of `cert` (already checked valid) receive this conversation?
    pub fn admits(&self, cert: &Certificate) -> bool {
        match &self.kind {
            ConversationKind::Direct { members } => members.contains(&cert.member),
            ConversationKind::Group { members, .. } => members.contains(&cert.member),
            ConversationKind::Role { role } => cert.has_role(role),
        }
    }

    /// A human title: the group title, `#role`, or "direct".
    pub fn title(&self) -> String {
        match &self.kind {
            ConversationKind::Direct { .. } => "direct".to_owned(),
            ConversationKind::Group { title, .. } => title.clone(),
            ConversationKind::Role { role } => format!("#{role}"),
        }
    }
}
