//! The two primitives of an envelope: a slot, a one-way Noise `X` message
//! (snow), and the body, sealed with XChaCha20-Poly1305 (RustCrypto).

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use std::sync::{Arc, Mutex};

use curve25519_dalek::montgomery::MontgomeryPoint;
use rand_core::{RngCore, SeedableRng};
use snow::params::NoiseParams;
use snow::resolvers::{CryptoResolver, DefaultResolver, FallbackResolver};
use snow::types::{Cipher, Dh, Hash, Random};
use zeroize::Zeroizing;

const PATTERN: &str = "Noise_X_25519_ChaChaPoly_BLAKE2s";

fn params() -> NoiseParams {
    PATTERN.parse().expect("a pattern snow knows")
}

/// Noise's randomness (only the ephemeral key) from the seed the caller
/// drew: the core reads no OS randomness.
struct Seeded(rand_chacha::ChaCha20Rng);

impl Random for Seeded {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        self.0.fill_bytes(dest);
        Ok(())
    }
}

struct SeededResolver([u8; 32]);

impl CryptoResolver for SeededResolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        Some(Box::new(Seeded(rand_chacha::ChaCha20Rng::from_seed(
            self.0,
        ))))
    }
    fn resolve_dh(&self, _: &snow::params::DHChoice) -> Option<Box<dyn Dh>> {
        None
    }
    fn resolve_hash(&self, _: &snow::params::HashChoice) -> Option<Box<dyn Hash>> {
        None
    }
    fn resolve_cipher(&self, _: &snow::params::CipherChoice) -> Option<Box<dyn Cipher>> {
        None
    }
}

fn resolver(seed: [u8; 32]) -> snow::resolvers::BoxedCryptoResolver {
    Box::new(FallbackResolver::new(
        Box::new(SeededResolver(seed)),
        Box::new(DefaultResolver),
    ))
}

/// One slot: `payload` sealed from `sender` (our X25519 secret) to
/// `recipient` (its public key), bound to `prologue`.
pub(super) fn seal_slot(
    sender: &[u8; 32],
    recipient: &[u8; 32],
    prologue: &[u8],
    payload: &[u8],
    seed: [u8; 32],
    memo: &DhMemo,
) -> Result<Vec<u8>, String> {
    let mut hs = snow::Builder::with_resolver(params(), memo_resolver(seed, memo))
        .local_private_key(sender)
        .and_then(|b| b.remote_public_key(recipient))
        .and_then(|b| b.prologue(prologue))
        .and_then(snow::Builder::build_initiator)
        .map_err(|e| e.to_string())?;
    let mut out = vec![0u8; super::SLOT_LEN];
    let n = hs
        .write_message(payload, &mut out)
        .map_err(|e| e.to_string())?;
    out.truncate(n);
    Ok(out)
}

/// X25519 for the slots of one envelope, remembering its results: the
/// slots share the sender's ephemeral key (`Envelope::seal`), so a device
/// trying them all computes `es` and its own public key once, not once per
/// slot, and a sealer its static and ephemeral public keys once. A memo of
/// pure functions in front of curve25519-dalek's X25519 (what snow's own
/// resolver calls), not a change to Noise: snow runs every step of every
/// slot.
#[derive(Clone, Default)]
pub(super) struct DhMemo(Arc<Mutex<Memo>>);

type Secret = Zeroizing<[u8; 32]>;

#[derive(Default)]
struct Memo {
    /// (secret, its public key).
    publics: Vec<(Secret, [u8; 32])>,
    /// (secret, their public key, shared secret).
    shared: Vec<(Secret, [u8; 32], Secret)>,
}

/// At most this many of each: an envelope has one sender and one
/// ephemeral key, but a forged one may carry a different key in every slot.
const MEMO_MAX: usize = 4;

impl DhMemo {
    fn public(&self, secret: &[u8; 32]) -> [u8; 32] {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, public)) = m.publics.iter().find(|(s, _)| **s == *secret) {
            return *public;
        }
        let public = MontgomeryPoint::mul_base_clamped(*secret).to_bytes();
        if m.publics.len() < MEMO_MAX {
            m.publics.push((Zeroizing::new(*secret), public));
        }
        public
    }

    fn shared(&self, secret: &[u8; 32], theirs: &[u8; 32]) -> Secret {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, _, shared)) = m
            .shared
            .iter()
            .find(|(s, t, _)| **s == *secret && t == theirs)
        {
            return shared.clone();
        }
        let shared = Zeroizing::new(MontgomeryPoint(*theirs).mul_clamped(*secret).to_bytes());
        if m.shared.len() < MEMO_MAX {
            m.shared
                .push((Zeroizing::new(*secret), *theirs, shared.clone()));
        }
        shared
    }
}

/// Noise's "25519" DH through a `DhMemo`.
struct MemoDh {
    memo: DhMemo,
    secret: Secret,
    public: [u8; 32],
}

impl Dh for MemoDh {
    fn name(&self) -> &'static str {
        "25519"
    }
    fn pub_len(&self) -> usize {
        32
    }
    fn priv_len(&self) -> usize {
        32
    }
    fn set(&mut self, privkey: &[u8]) {
        // snow hands over a key of `priv_len` bytes.
        let mut secret = Zeroizing::new([0u8; 32]);
        let n = privkey.len().min(32);
        secret[..n].copy_from_slice(&privkey[..n]);
        self.public = self.memo.public(&secret);
        self.secret = secret;
    }
    fn generate(&mut self, rng: &mut dyn Random) -> Result<(), snow::Error> {
        let mut secret = Zeroizing::new([0u8; 32]);
        rng.try_fill_bytes(&mut secret[..])?;
        self.set(&secret[..]);
        Ok(())
    }
    fn pubkey(&self) -> &[u8] {
        &self.public
    }
    fn privkey(&self) -> &[u8] {
        &self.secret[..]
    }
    fn dh(&self, pubkey: &[u8], out: &mut [u8]) -> Result<(), snow::Error> {
        // snow passes buffers of its largest DH length; X25519 uses the
        // first 32 bytes of each.
        let (Some(theirs), Some(out)) = (pubkey.first_chunk::<32>(), out.first_chunk_mut::<32>())
        else {
            return Err(snow::Error::Dh);
        };
        out.copy_from_slice(&self.memo.shared(&self.secret, theirs)[..]);
        Ok(())
    }
}

/// The seeded randomness (`resolver`), with `DhMemo` for X25519.
struct MemoResolver(DhMemo);

impl CryptoResolver for MemoResolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        None
    }
    fn resolve_dh(&self, choice: &snow::params::DHChoice) -> Option<Box<dyn Dh>> {
        match choice {
            snow::params::DHChoice::Curve25519 => Some(Box::new(MemoDh {
                memo: self.0.clone(),
                secret: Zeroizing::new([0; 32]),
                public: [0; 32],
            })),
            _ => None,
        }
    }
    fn resolve_hash(&self, _: &snow::params::HashChoice) -> Option<Box<dyn Hash>> {
        None
    }
    fn resolve_cipher(&self, _: &snow::params::CipherChoice) -> Option<Box<dyn Cipher>> {
        None
    }
}

fn memo_resolver(seed: [u8; 32], memo: &DhMemo) -> snow::resolvers::BoxedCryptoResolver {
    Box::new(FallbackResolver::new(
        Box::new(MemoResolver(memo.clone())),
        resolver(seed),
    ))
}

/// Opens a slot with our X25519 secret: the sender's public key and the
/// payload, or `None` if the slot is not for us or does not verify. `memo`
/// is shared by the slots of one envelope, with the same `ours`.
pub(super) fn open_slot(
    ours: &[u8; 32],
    prologue: &[u8],
    slot: &[u8],
    memo: &DhMemo,
) -> Option<([u8; 32], Vec<u8>)> {
    let mut hs = snow::Builder::with_resolver(params(), memo_resolver([0; 32], memo))
        .local_private_key(ours)
        .and_then(|b| b.prologue(prologue))
        .and_then(snow::Builder::build_responder)
        .ok()?;
    let mut out = vec![0u8; slot.len()];
    let n = hs.read_message(slot, &mut out).ok()?;
    out.truncate(n);
    let sender: [u8; 32] = hs.get_remote_static()?.try_into().ok()?;
    Some((sender, out))
}

pub(super) fn seal_body(key: &[u8; 32], nonce: &[u8; 24], aad: &[u8], plain: &[u8]) -> Vec<u8> {
    XChaCha20Poly1305::new(key.into())
        .encrypt(XNonce::from_slice(nonce), Payload { msg: plain, aad })
        .expect("XChaCha20-Poly1305 seals any length we allow")
}

pub(super) fn open_body(
    key: &[u8; 32],
    nonce: &[u8; 24],
    aad: &[u8],
    sealed: &[u8],
) -> Option<Vec<u8>> {
    XChaCha20Poly1305::new(key.into())
        .decrypt(XNonce::from_slice(nonce), Payload { msg: sealed, aad })
        .ok()
}
