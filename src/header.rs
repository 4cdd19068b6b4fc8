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

/// Direct conversations have a deterministic id, so two members who open one
/// at the same time, cut off from each other, end up in the same
/// conversation — and nobody else can claim that id for other members.
pub fn direct_conversation_id(a: MemberId, b: MemberId) -> ConversationId {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let h = crypto::sha256(&[b"huddle/direct/v1", &lo.0, &hi.0]);
    ConversationId(h[..16].try_into().expect("16 bytes"))
}

/// The id a conversation header must carry: for a direct conversation the
/// [`direct_conversation_id`] of its two members; for a group or role
/// channel a hash of what the header says (kind, creator, time), so a
/// header cannot claim an id it was not made for — in particular not
/// another pair's direct id.
pub fn conversation_id(
    kind: &ConversationKind,
    creator: DeviceId,
    created: Millis,
) -> ConversationId {
    if let ConversationKind::Direct { members } = kind {
        return direct_conversation_id(members[0], members[1]);
    }
    let mut w = Writer::with_capacity(128);
    write_kind(&mut w, kind);
    w.raw(&creator.0).u64_be(created);
    let h = crypto::sha256(&[b"huddle/conversation/v1", &w.finish()]);
    ConversationId(h[..16].try_into().expect("16 bytes"))
}

fn write_kind(w: &mut Writer, kind: &ConversationKind) {
    match kind {
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
}

impl ConversationHeader {
    /// A new conversation's header, with the id [`conversation_id`] gives.
    pub fn create(key: &DeviceKey, kind: ConversationKind, created: Millis) -> Self {
        let id = conversation_id(&kind, key.device_id(), created);
        Self::sign(key, id, kind, created)
    }

    /// Signs a header with the given id (which [`Self::decode`] refuses
    /// unless it is the one [`conversation_id`] gives).
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
        write_kind(&mut w, &self.kind);
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
        if h.id != conversation_id(&h.kind, h.creator, h.created) {
            return Err(DecodeError::Invalid(
                "conversation id does not match its header",
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

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;

    #[test]
    fn a_direct_conversation_id_cannot_be_squatted() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        let key = DeviceKey::generate(&mut rng);
        let (ana, ben, mallory) = (MemberId([1; 16]), MemberId([2; 16]), MemberId([3; 16]));
        let honest = ConversationHeader::sign(
            &key,
            direct_conversation_id(ana, ben),
            ConversationKind::Direct {
                members: [ana, ben],
            },
            5,
        );
        assert_eq!(
            ConversationHeader::decode(&honest.encode()).unwrap(),
            honest
        );
        // Ana and Ben's direct id, claimed for Ana and Mallory.
        let squat = ConversationHeader::sign(
            &key,
            direct_conversation_id(ana, ben),
            ConversationKind::Direct {
                members: [ana, mallory],
            },
            5,
        );
        assert!(ConversationHeader::decode(&squat.encode()).is_err());
        // ... and for a group or a role channel of Mallory's.
        let group = ConversationKind::Group {
            title: "Ben".into(),
            members: [ana, ben, mallory].into_iter().collect(),
        };
        let role = ConversationKind::Role {
            role: "nurse".into(),
        };
        for kind in [group, role] {
            let made = ConversationHeader::create(&key, kind.clone(), 5);
            assert_eq!(ConversationHeader::decode(&made.encode()).unwrap(), made);
            let squat = ConversationHeader::sign(&key, direct_conversation_id(ana, ben), kind, 5);
            assert!(ConversationHeader::decode(&squat.encode()).is_err());
        }
    }

    /// A group or role id is a hash of its header: any other id, or the
    /// same header at another time, by another device or with other
    /// members, is refused.
    #[test]
    fn a_group_or_role_id_is_its_headers_own() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let (key, other) = (DeviceKey::generate(&mut rng), DeviceKey::generate(&mut rng));
        let kind = ConversationKind::Group {
            title: "Ward 7".into(),
            members: [MemberId([1; 16]), MemberId([2; 16])].into_iter().collect(),
        };
        let made = ConversationHeader::create(&key, kind.clone(), 5);
        let more = ConversationKind::Group {
            title: "Ward 7".into(),
            members: [MemberId([1; 16]), MemberId([2; 16]), MemberId([3; 16])]
                .into_iter()
                .collect(),
        };
        let refused = [
            ConversationHeader::sign(&key, ConversationId([7; 16]), kind.clone(), 5),
            ConversationHeader::sign(&key, made.id, kind.clone(), 6),
            ConversationHeader::sign(&other, made.id, kind, 5),
            ConversationHeader::sign(&key, made.id, more, 5),
        ];
        for h in refused {
            assert!(ConversationHeader::decode(&h.encode()).is_err(), "{h:?}");
        }
    }
}
