//! Signing keys and signature checks: thin wrappers over `ed25519-dalek`.
//! Nothing here is home-made cryptography; it only fixes how huddle uses it.
//!
//! Invariant: every signature is over a domain tag followed by the payload,
//! so a signature made for one purpose (a certificate) can never be replayed
//! as another (a message or a receipt).

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};

use crate::ids::{DeviceId, TeamId};

pub const SIGNATURE_LEN: usize = 64;

/// Domain tags: one per kind of signed object.
pub mod domain {
    pub const CERTIFICATE: &[u8] = b"huddle/certificate/v1";
    pub const REVOCATION: &[u8] = b"huddle/revocation/v1";
    pub const MESSAGE: &[u8] = b"huddle/message/v1";
    pub const RECEIPT: &[u8] = b"huddle/receipt/v1";
    pub const HEADER: &[u8] = b"huddle/conversation-header/v1";
}

fn tagged(domain: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(domain.len() + 1 + payload.len());
    m.extend_from_slice(domain);
    m.push(0);
    m.extend_from_slice(payload);
    m
}

fn sign_with(key: &SigningKey, domain: &[u8], payload: &[u8]) -> [u8; SIGNATURE_LEN] {
    key.sign(&tagged(domain, payload)).to_bytes()
}

/// Checks `sig` over (`domain`, `payload`) against a raw Ed25519 public key.
pub fn verify(public: &[u8; 32], domain: &[u8], payload: &[u8], sig: &[u8; SIGNATURE_LEN]) -> bool {
    let Ok(key) = VerifyingKey::from_bytes(public) else {
        return false;
    };
    key.verify(&tagged(domain, payload), &Signature::from_bytes(sig))
        .is_ok()
}

fn generate(rng: &mut dyn rand_core::RngCore) -> SigningKey {
    let mut secret = [0u8; 32];
    rng.fill_bytes(&mut secret);
    SigningKey::from_bytes(&secret)
}

/// A device's identity key. Its public half is the device id and the libp2p
/// peer id; the shell hands the same secret to libp2p.
#[derive(Clone)]
pub struct DeviceKey(SigningKey);

impl DeviceKey {
    /// `rng` must be a cryptographically secure generator in production
    /// (the shell passes the OS generator); the simulator passes a seeded one.
    pub fn generate(rng: &mut dyn rand_core::RngCore) -> Self {
        DeviceKey(generate(rng))
    }

    pub fn from_secret(secret: [u8; 32]) -> Self {
        DeviceKey(SigningKey::from_bytes(&secret))
    }

    pub fn secret(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    pub fn device_id(&self) -> DeviceId {
        DeviceId(self.0.verifying_key().to_bytes())
    }

    pub fn sign(&self, domain: &[u8], payload: &[u8]) -> [u8; SIGNATURE_LEN] {
        sign_with(&self.0, domain, payload)
    }
}

impl std::fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeviceKey({:?})", self.device_id())
    }
}

/// A team authority's key: signs membership certificates and revocations.
#[derive(Clone)]
pub struct AuthorityKey(SigningKey);

impl AuthorityKey {
    pub fn generate(rng: &mut dyn rand_core::RngCore) -> Self {
        AuthorityKey(generate(rng))
    }

    pub fn from_secret(secret: [u8; 32]) -> Self {
        AuthorityKey(SigningKey::from_bytes(&secret))
    }

    pub fn secret(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    pub fn team_id(&self) -> TeamId {
        TeamId(self.0.verifying_key().to_bytes())
    }

    pub fn sign(&self, domain: &[u8], payload: &[u8]) -> [u8; SIGNATURE_LEN] {
        sign_with(&self.0, domain, payload)
    }
}

impl std::fmt::Debug for AuthorityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuthorityKey({})", self.team_id().fingerprint())
    }
}

/// SHA-256, for content addressing and digests (never for signatures).
pub fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}
