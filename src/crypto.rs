//! Signing keys and signature checks: thin wrappers over `ed25519-dalek`.
//! Nothing here is home-made cryptography; it only fixes how huddle uses it.
//!
//! Invariant: every signature is over a domain tag followed by the payload,
//! so a signature made for one purpose (a certificate) can never be replayed
//! as another (a message or a receipt).

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use crate::ids::{DeviceId, TeamId};

pub const SIGNATURE_LEN: usize = 64;

/// Domain tags: one per kind of signed object.
pub mod domain {
    pub const CERTIFICATE: &[u8] = b"huddle/certificate/v2";
    /// Not a published signature: the authority's signature over a
    /// certificate request, hashed into the certificate's salt.
    pub const CERTIFICATE_SALT: &[u8] = b"huddle/certificate-salt/v1";
    pub const REVOCATION: &[u8] = b"huddle/revocation/v1";
    pub const MESSAGE: &[u8] = b"huddle/message/v1";
    pub const RECEIPT: &[u8] = b"huddle/receipt/v1";
    pub const HEADER: &[u8] = b"huddle/conversation-header/v1";
    pub const POLICY: &[u8] = b"huddle/clinical-policy/v1";
    pub const ONCALL: &[u8] = b"huddle/oncall/v1";
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

/// Checks `sig` over (`domain`, `payload`) against a raw Ed25519 public key,
/// with ed25519-dalek's strict rules: small-order ("weak") keys and
/// small-order R components are rejected, so a signature cannot be made to
/// verify for any message, and every node reaches the same verdict.
pub fn verify(public: &[u8; 32], domain: &[u8], payload: &[u8], sig: &[u8; SIGNATURE_LEN]) -> bool {
    let message = tagged(domain, payload);
    let memo_key = MEMO
        .with(|m| m.borrow().is_some())
        .then(|| sha256(&[public, sig, &message]));
    if let Some(k) = &memo_key {
        if let Some(v) = MEMO.with(|m| m.borrow().as_ref().and_then(|m| m.get(k).copied())) {
            return v;
        }
    }
    let verdict = verify_tagged(public, &message, sig);
    if let Some(k) = memo_key {
        MEMO.with(|m| {
            if let Some(memo) = m.borrow_mut().as_mut() {
                if memo.len() >= MEMO_CAPACITY {
                    memo.clear();
                }
                memo.insert(k, verdict);
            }
        });
    }
    verdict
}

fn verify_tagged(public: &[u8; 32], message: &[u8], sig: &[u8; SIGNATURE_LEN]) -> bool {
    let Ok(key) = VerifyingKey::from_bytes(public) else {
        return false;
    };
    if key.is_weak() {
        return false;
    }
    key.verify_strict(message, &Signature::from_bytes(sig))
        .is_ok()
}

/// Most verdicts the memo holds; it is emptied when full.
const MEMO_CAPACITY: usize = 1 << 16;

thread_local! {
    /// Verdicts by SHA-256 of (key, signature, tagged message), when this
    /// thread has turned the memo on.
    static MEMO: std::cell::RefCell<Option<std::collections::HashMap<[u8; 32], bool>>> =
        const { std::cell::RefCell::new(None) };
}

/// Turns on, for the calling thread, a bounded memo of [`verify`]'s
/// verdicts. Only the simulator does: all its devices run on one thread and
/// check the same signatures, and a verdict is a pure function of the key,
/// the signed bytes and the signature, so remembering it changes nothing a
/// node does or decides, only the time a simulated run takes. A node in
/// production checks each signature once and never turns it on.
pub fn memoize_verdicts_on_this_thread() {
    MEMO.with(|m| {
        m.borrow_mut().get_or_insert_with(Default::default);
    });
}

/// One signature to check: (public key, domain, payload, signature).
pub type SignedItem<'a> = (
    &'a [u8; 32],
    &'static [u8],
    Vec<u8>,
    &'a [u8; SIGNATURE_LEN],
);

/// Checks many signatures, one by one with [`verify`]. (Batch verification
/// was tried and removed: ed25519-dalek's batch equation accepts some
/// signatures its strict single check rejects, so two nodes could disagree
/// about the same message. Every node must reach the same verdict.)
pub fn verify_many(items: &[SignedItem<'_>]) -> Vec<bool> {
    items
        .iter()
        .map(|(k, d, p, s)| verify(k, d, p, s))
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;

    #[test]
    fn verification_finds_the_bad_signatures_and_refuses_weak_keys() {
        check_verdicts();
    }

    /// The memo only saves time: the same verdicts, the first time (each
    /// computed) and the second (each remembered), good and bad alike.
    #[test]
    fn the_verdict_memo_gives_the_same_verdicts() {
        std::thread::spawn(|| {
            memoize_verdicts_on_this_thread();
            check_verdicts();
            let remembered = MEMO.with(|m| m.borrow().as_ref().map_or(0, |m| m.len()));
            assert!(remembered >= 8, "{remembered} verdicts remembered");
            check_verdicts();
        })
        .join()
        .expect("the memo thread");
    }

    fn check_verdicts() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let keys: Vec<DeviceKey> = (0..8).map(|_| DeviceKey::generate(&mut rng)).collect();
        let ids: Vec<DeviceId> = keys.iter().map(DeviceKey::device_id).collect();
        let mut sigs: Vec<[u8; SIGNATURE_LEN]> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| k.sign(domain::MESSAGE, &[i as u8]))
            .collect();
        let items = |sigs: &[[u8; SIGNATURE_LEN]]| -> Vec<bool> {
            let items: Vec<SignedItem<'_>> = (0..8)
                .map(|i| (&ids[i].0, domain::MESSAGE, vec![i as u8], &sigs[i]))
                .collect();
            verify_many(&items)
        };
        assert_eq!(items(&sigs), vec![true; 8]);
        sigs[3][0] ^= 1;
        sigs[6] = sigs[5];
        // The identity point as a key ("weak"): refused outright.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert!(!verify(&identity, domain::MESSAGE, b"anything", &sigs[0]));
        let mut expected = vec![true; 8];
        expected[3] = false;
        expected[6] = false;
        assert_eq!(items(&sigs), expected);
        // The domain matters: a message signature is not a receipt signature.
        let wrong_domain = verify(&ids[0].0, domain::RECEIPT, &[0], &sigs[0]);
        assert!(!wrong_domain);
    }
}
