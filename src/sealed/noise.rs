//! The two primitives of an envelope: a slot, a one-way Noise `X` message
//! (snow), and the body, sealed with XChaCha20-Poly1305 (RustCrypto).

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand_core::{RngCore, SeedableRng};
use snow::params::NoiseParams;
use snow::resolvers::{CryptoResolver, DefaultResolver, FallbackResolver};
use snow::types::{Cipher, Dh, Hash, Random};

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
) -> Result<Vec<u8>, String> {
    let mut hs = snow::Builder::with_resolver(params(), resolver(seed))
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

/// Opens a slot with our X25519 secret: the sender's public key and the
/// payload, or `None` if the slot is not for us or does not verify.
pub(super) fn open_slot(
    ours: &[u8; 32],
    prologue: &[u8],
    slot: &[u8],
) -> Option<([u8; 32], Vec<u8>)> {
    let mut hs = snow::Builder::with_resolver(params(), resolver([0; 32]))
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
