//! Sealed envelopes (protocol/sealed.md): a conversation's change sealed to
//! the member devices that were out of reach when it was written, so that
//! any team device can carry it without being able to read it.
//!
//! An envelope is one body sealed once under a fresh key, and one *slot*
//! per recipient device carrying that key: a one-way Noise `X` message
//! (snow, `Noise_X_25519_ChaChaPoly_BLAKE2s`) from the sender's device key
//! to the recipient's, so the recipient learns which device sealed it and
//! nobody else learns anything but the envelope's outside. Each slot also
//! commits to a secret only its recipient learns (`done`): showing it tells
//! carriers that this recipient has the envelope, and nothing more.
//!
//! Invariants:
//! - Decoding never panics and never allocates beyond the bytes given;
//!   every length is bounded before it is used.
//! - What a carrier sees (the outside) is: version, class, blinded tag,
//!   expiry, each slot's done commitment and opaque bytes, the body's
//!   length. Everything else is inside AEADs keyed by Noise.
//! - Sealing is deterministic in its random input (`Randomness`), so the
//!   pure core stays replayable.

mod keys;
pub mod mailbox;
mod noise;
#[cfg(test)]
mod tests;

use crate::codec::{DecodeError, Reader, Writer};
use crate::crypto::sha256;
use crate::header::ConversationHeader;
use crate::ids::{ConversationId, Millis};

pub use keys::{device_x25519_public, device_x25519_secret};

/// The envelope format this version writes and reads.
pub const VERSION: u8 = 1;
/// Most recipient devices one envelope names; more are sealed into more
/// envelopes.
pub const MAX_SLOTS: usize = 256;
/// Bytes of one slot's Noise message: `e` (32), `s` sealed (48), the
/// payload sealed (96 + 16).
pub const SLOT_LEN: usize = 32 + 48 + PAYLOAD_LEN + 16;
const PAYLOAD_LEN: usize = 96;
/// Bytes of a slot's done commitment.
pub const DONE_LEN: usize = 16;
/// The longest sealed body (a change pushed alone, with the page change it
/// needed and the conversation's header).
pub const MAX_BODY_LEN: usize = 256 * 1024;
/// The longest envelope.
pub const MAX_ENVELOPE_LEN: usize =
    1 + 1 + 16 + 8 + 3 + MAX_SLOTS * (DONE_LEN + SLOT_LEN) + 24 + 4 + MAX_BODY_LEN + 16;
/// The longest header a body carries.
const MAX_HEADER_LEN: usize = 64 * 1024;
/// An envelope lives at most this long after it was sealed.
pub const MAX_LIFETIME_MS: Millis = 7 * 24 * 3600 * 1000;
const DAY_MS: Millis = 24 * 3600 * 1000;

/// How urgent an envelope's change is: carriers keep and forward STAT
/// before urgent before routine (a leak the protocol accepts: sealed.md §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Class {
    Routine = 0,
    Urgent = 1,
    Stat = 2,
}

impl Class {
    pub(crate) fn from_code(c: u8) -> Result<Class, DecodeError> {
        match c {
            0 => Ok(Class::Routine),
            1 => Ok(Class::Urgent),
            2 => Ok(Class::Stat),
            c => Err(DecodeError::Unknown("envelope class", c.into())),
        }
    }
}

/// One recipient's slot: the commitment to its done secret and its Noise
/// message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slot {
    pub done: [u8; DONE_LEN],
    pub noise: Vec<u8>,
}

/// An envelope as a carrier sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    pub class: Class,
    /// The conversation, blinded: a keyed hash that only its members can
    /// make, changing every day (`tag`).
    pub tag: [u8; 16],
    /// When carriers drop it, in the sealer's milliseconds since the epoch.
    pub expires: Millis,
    pub slots: Vec<Slot>,
    pub nonce: [u8; 24],
    /// The body, sealed (XChaCha20-Poly1305).
    pub body: Vec<u8>,
}

/// What is sealed inside: the conversation, its header (so a recipient
/// that has never seen the conversation can take it), and an Automerge sync
/// message carrying the change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Body {
    pub conversation: ConversationId,
    pub header: Vec<u8>,
    pub sync: Vec<u8>,
}

/// An opened envelope: who sealed it (its X25519 key, which the node maps
/// to a device of the directory), what it holds, and the recipient's slot
/// and done secret.
#[derive(Clone, Debug)]
pub struct Opened {
    pub sender: [u8; 32],
    pub body: Body,
    pub slot: usize,
    pub done_secret: [u8; 32],
}

/// The random input of one sealing: the body key and nonce, and per slot
/// an ephemeral key and a done secret. The node draws them from its seeded
/// generator.
pub trait Randomness {
    fn fill(&mut self, out: &mut [u8]);
}

impl<R: rand_core::RngCore> Randomness for R {
    fn fill(&mut self, out: &mut [u8]) {
        self.fill_bytes(out);
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("an envelope names at most {MAX_SLOTS} recipients, and at least one")]
    Recipients,
    #[error("the body is longer than {MAX_BODY_LEN} bytes")]
    TooLong,
    #[error("Noise refused: {0}")]
    Noise(String),
}

/// The blinded tag of `header`'s conversation on the day of `now`: a keyed
/// BLAKE3 hash whose key only holders of the header (its members) can
/// derive from the creator's signature.
pub fn tag(header: &ConversationHeader, now: Millis) -> [u8; 16] {
    let mut material = Vec::with_capacity(80);
    material.extend_from_slice(&header.id.0);
    material.extend_from_slice(&header.signature);
    let key = blake3::derive_key("huddle sealed tag v1", &material);
    let day = (now / DAY_MS).to_be_bytes();
    let h = blake3::keyed_hash(&key, &day);
    h.as_bytes()[..16].try_into().expect("16 of 32 bytes")
}

/// The commitment a slot carries to its done secret.
pub fn done_commitment(secret: &[u8; 32]) -> [u8; DONE_LEN] {
    sha256(&[b"huddle/sealed-done/v1", secret])[..DONE_LEN]
        .try_into()
        .expect("16 of 32 bytes")
}

impl Body {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(16 + self.header.len() + self.sync.len() + 8);
        w.raw(&self.conversation.0)
            .bytes(&self.header)
            .bytes(&self.sync);
        w.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<Body, DecodeError> {
        let mut r = Reader::new(bytes);
        let body = Body {
            conversation: ConversationId(r.array("conversation id")?),
            header: r.bytes(MAX_HEADER_LEN, "header")?.to_vec(),
            sync: r.bytes(MAX_BODY_LEN, "sync message")?.to_vec(),
        };
        r.finish()?;
        Ok(body)
    }
}

impl Envelope {
    /// Seals `body` from the device whose X25519 secret is `sender` to each
    /// of `recipients` (X25519 public keys). Also returns each slot's done
    /// secret: the sealer may show one for a recipient it knows holds the
    /// change.
    pub fn seal_with_secrets(
        sender: &[u8; 32],
        recipients: &[[u8; 32]],
        class: Class,
        tag: [u8; 16],
        expires: Millis,
        body: &Body,
        rng: &mut dyn Randomness,
    ) -> Result<(Envelope, Vec<[u8; 32]>), SealError> {
        let mut secrets = Vec::with_capacity(recipients.len());
        let env = Self::seal_inner(
            sender,
            recipients,
            class,
            tag,
            expires,
            body,
            rng,
            &mut secrets,
        )?;
        Ok((env, secrets))
    }

    /// [`Envelope::seal_with_secrets`] without the secrets.
    pub fn seal(
        sender: &[u8; 32],
        recipients: &[[u8; 32]],
        class: Class,
        tag: [u8; 16],
        expires: Millis,
        body: &Body,
        rng: &mut dyn Randomness,
    ) -> Result<Envelope, SealError> {
        Self::seal_inner(
            sender,
            recipients,
            class,
            tag,
            expires,
            body,
            rng,
            &mut Vec::new(),
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn seal_inner(
        sender: &[u8; 32],
        recipients: &[[u8; 32]],
        class: Class,
        tag: [u8; 16],
        expires: Millis,
        body: &Body,
        rng: &mut dyn Randomness,
        secrets: &mut Vec<[u8; 32]>,
    ) -> Result<Envelope, SealError> {
        if recipients.is_empty() || recipients.len() > MAX_SLOTS {
            return Err(SealError::Recipients);
        }
        let plain = body.encode();
        if plain.len() > MAX_BODY_LEN {
            return Err(SealError::TooLong);
        }
        let mut env = Envelope {
            class,
            tag,
            expires,
            slots: Vec::with_capacity(recipients.len()),
            nonce: [0; 24],
            body: Vec::new(),
        };
        let mut key = zeroize::Zeroizing::new([0u8; 32]);
        rng.fill(&mut key[..]);
        rng.fill(&mut env.nonce);
        env.body = noise::seal_body(&key, &env.nonce, &env.outside(), &plain);
        let body_hash = env.body_hash();
        // One ephemeral key for every slot (randomness reuse in
        // multi-recipient encryption, protocol/sealed.md §2): each device
        // that tries the envelope computes one X25519 for it, not one per
        // slot.
        let mut seed = [0u8; 32];
        rng.fill(&mut seed);
        let memo = noise::DhMemo::default();
        for r in recipients {
            let mut secret = [0u8; 32];
            rng.fill(&mut secret);
            let done = done_commitment(&secret);
            let mut payload = zeroize::Zeroizing::new([0u8; PAYLOAD_LEN]);
            payload[..32].copy_from_slice(&key[..]);
            payload[32..64].copy_from_slice(&body_hash);
            payload[64..].copy_from_slice(&secret);
            let noise =
                noise::seal_slot(sender, r, &env.prologue(&done), &payload[..], seed, &memo)
                    .map_err(SealError::Noise)?;
            debug_assert_eq!(noise.len(), SLOT_LEN);
            env.slots.push(Slot { done, noise });
            secrets.push(secret);
        }
        Ok(env)
    }

    /// Opens the envelope with the device's X25519 secret `ours`, if one
    /// of its slots is for us and everything verifies; `None` otherwise
    /// (most envelopes a device carries are not for it).
    pub fn open(&self, ours: &[u8; 32]) -> Option<Opened> {
        let body_hash = self.body_hash();
        let memo = noise::DhMemo::default();
        for (i, slot) in self.slots.iter().enumerate() {
            let Some((sender, payload)) =
                noise::open_slot(ours, &self.prologue(&slot.done), &slot.noise, &memo)
            else {
                continue;
            };
            if payload.len() != PAYLOAD_LEN || payload[32..64] != body_hash {
                return None;
            }
            let secret: [u8; 32] = payload[64..].try_into().ok()?;
            if done_commitment(&secret) != slot.done {
                return None;
            }
            let key: [u8; 32] = payload[..32].try_into().ok()?;
            let plain = noise::open_body(&key, &self.nonce, &self.outside(), &self.body)?;
            let body = Body::decode(&plain).ok()?;
            return Some(Opened {
                sender,
                body,
                slot: i,
                done_secret: secret,
            });
        }
        None
    }

    /// The envelope's id: what carriers name it by.
    pub fn id_of(bytes: &[u8]) -> [u8; 32] {
        sha256(&[b"huddle/sealed-id/v1", bytes])
    }

    /// The fields every slot's Noise prologue and the body's AEAD bind.
    fn outside(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(48);
        w.raw(b"huddle/sealed/v1")
            .u8(VERSION)
            .u8(self.class as u8)
            .raw(&self.tag)
            .u64_be(self.expires);
        w.finish()
    }

    fn prologue(&self, done: &[u8; DONE_LEN]) -> Vec<u8> {
        let mut p = self.outside();
        p.extend_from_slice(done);
        p
    }

    fn body_hash(&self) -> [u8; 32] {
        sha256(&[b"huddle/sealed-body/v1", &self.nonce, &self.body])
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w =
            Writer::with_capacity(64 + self.slots.len() * (DONE_LEN + SLOT_LEN) + self.body.len());
        w.u8(VERSION)
            .u8(self.class as u8)
            .raw(&self.tag)
            .u64_be(self.expires)
            .varint(self.slots.len() as u64);
        for s in &self.slots {
            w.raw(&s.done).raw(&s.noise);
        }
        w.raw(&self.nonce).bytes(&self.body);
        w.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<Envelope, DecodeError> {
        if bytes.len() > MAX_ENVELOPE_LEN {
            return Err(DecodeError::TooLong("envelope", MAX_ENVELOPE_LEN));
        }
        let mut r = Reader::new(bytes);
        let version = r.u8("envelope version")?;
        if version != VERSION {
            return Err(DecodeError::Unknown("envelope version", version.into()));
        }
        let class = Class::from_code(r.u8("envelope class")?)?;
        let tag = r.array("envelope tag")?;
        let expires = r.u64_be("envelope expiry")?;
        let n = r.count(MAX_SLOTS, DONE_LEN + SLOT_LEN, "envelope slots")?;
        if n == 0 {
            return Err(DecodeError::Invalid("an envelope without recipients"));
        }
        let mut slots = Vec::with_capacity(n);
        for _ in 0..n {
            slots.push(Slot {
                done: r.array("done commitment")?,
                noise: r.raw(SLOT_LEN, "slot")?.to_vec(),
            });
        }
        let nonce = r.array("body nonce")?;
        let body = r.bytes(MAX_BODY_LEN + 16, "sealed body")?.to_vec();
        if body.len() < 16 {
            return Err(DecodeError::Invalid("a sealed body shorter than its tag"));
        }
        r.finish()?;
        Ok(Envelope {
            class,
            tag,
            expires,
            slots,
            nonce,
            body,
        })
    }
}
