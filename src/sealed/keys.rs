//! A device's X25519 key for sealed envelopes, derived from its Ed25519
//! identity the standard way (the Montgomery form of the public key; the
//! clamped scalar of the secret, as libsodium's
//! `crypto_sign_ed25519_sk_to_curve25519`), so every team device can seal
//! to any device in the directory without a second published key.

use crate::crypto::DeviceKey;
use crate::ids::DeviceId;

/// The X25519 public key of `device`, or `None` if its Ed25519 key is not
/// a valid point (no certificate the directory holds names one).
pub fn device_x25519_public(device: &DeviceId) -> Option<[u8; 32]> {
    let vk = ed25519_dalek::VerifyingKey::from_bytes(&device.0).ok()?;
    Some(vk.to_montgomery().to_bytes())
}

/// The X25519 secret of our own device key.
pub fn device_x25519_secret(key: &DeviceKey) -> zeroize::Zeroizing<[u8; 32]> {
    let sk = ed25519_dalek::SigningKey::from_bytes(&key.secret());
    zeroize::Zeroizing::new(sk.to_scalar_bytes())
}
