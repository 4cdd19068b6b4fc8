//! Encryption at rest (protocol/storage.md §8): the data key, the keys
//! derived from it, and sealing a value, a file or a store key with them.
//!
//! One random 256-bit *data key* per data directory encrypts everything
//! huddle writes there; it is stored only wrapped by a key derived from the
//! user's passphrase (`wrap.rs`), so changing the passphrase rewrites one
//! small file and no data. From the data key, BLAKE3's key derivation gives
//! one key per use, so no key ever serves two purposes:
//!
//! - values in the store, files of the data directory and attachment chunks
//!   are sealed with XChaCha20-Poly1305 (RustCrypto) under a fresh random
//!   192-bit nonce each (random nonces of that size never repeat in
//!   practice), with the place the bytes belong to as associated data, so a
//!   sealed value moved to another key or file does not open;
//! - identifiers in store keys and file names are replaced by a keyed
//!   BLAKE3 hash of the same length (`names.rs`), so the store's layout
//!   shows no conversation, message or device id.
//!
//! Invariants: nothing here writes a file or logs a secret; a key is wiped
//! from memory when dropped; a value that does not open is an error, never
//! garbage handed on.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use thiserror::Error;
use zeroize::Zeroizing;

pub mod names;
pub mod wrap;

/// The wrapped data key's file in the data directory; a data directory that
/// has it is encrypted.
pub const WRAP_FILE: &str = "key.wrap";

/// Bytes a sealed value has beyond its plaintext: the nonce and the tag.
pub const OVERHEAD: usize = NONCE_LEN + TAG_LEN;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;

/// A value, file or chunk that did not open: damaged, moved, or sealed
/// under another data key.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("encrypted data did not open with this data directory's key (it is damaged, or from another device)")]
pub struct SealError;

/// The data directory's data key.
pub struct DataKey(Zeroizing<[u8; 32]>);

impl DataKey {
    /// A new random key.
    pub fn generate() -> DataKey {
        let mut key = Zeroizing::new([0u8; 32]);
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, key.as_mut());
        DataKey(key)
    }

    pub(crate) fn from_bytes(bytes: [u8; 32]) -> DataKey {
        DataKey(Zeroizing::new(bytes))
    }

    pub(crate) fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    fn derive(&self, purpose: &str) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(blake3::derive_key(purpose, self.0.as_ref()))
    }

    /// The keys for each use of this data key.
    pub fn keys(&self) -> Keys {
        Keys {
            values: Sealer::new(&self.derive("huddle 2026-12 store values")),
            names: names::Names::new(self.derive("huddle 2026-12 store names")),
            files: Sealer::new(&self.derive("huddle 2026-12 data directory files")),
            blobs: Sealer::new(&self.derive("huddle 2026-12 attachment chunks")),
            blob_names: self.derive("huddle 2026-12 attachment file names"),
        }
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(…)")
    }
}

/// The keys derived from one data key.
pub struct Keys {
    /// Values in the store.
    pub values: Sealer,
    /// Identifiers in store keys.
    pub names: names::Names,
    /// The data directory's files (`device.key`, `profile.json`, …).
    pub files: Sealer,
    /// Attachment chunks and their outline and metadata files.
    pub blobs: Sealer,
    /// Names attachment files (replaces the plain `blobs/key`).
    pub blob_names: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(…)")
    }
}

/// XChaCha20-Poly1305 under one key.
#[derive(Clone)]
pub struct Sealer(XChaCha20Poly1305);

impl Sealer {
    pub fn new(key: &[u8; 32]) -> Sealer {
        Sealer(XChaCha20Poly1305::new(key.into()))
    }

    /// `nonce ‖ ciphertext ‖ tag`, binding `place` (not stored).
    pub fn seal(&self, place: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut nonce);
        let sealed = self
            .0
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: place,
                },
            )
            .expect("XChaCha20-Poly1305 seals any length a Vec holds");
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// The plaintext of what [`Sealer::seal`] made for the same `place`.
    pub fn open(&self, place: &[u8], sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        if sealed.len() < OVERHEAD {
            return Err(SealError);
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        self.0
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: body,
                    aad: place,
                },
            )
            .map_err(|_| SealError)
    }
}

/// The magic a sealed file of the data directory starts with.
pub const FILE_MAGIC: &[u8; 8] = b"HDLSEAL1";

impl Keys {
    /// A data directory file's sealed form: the magic, then the value
    /// sealed with the file's name as its place.
    pub fn seal_file(&self, name: &str, plaintext: &[u8]) -> Vec<u8> {
        let mut out = FILE_MAGIC.to_vec();
        out.extend(self.files.seal(name.as_bytes(), plaintext));
        out
    }

    /// The plaintext of a file [`Keys::seal_file`] wrote under `name`.
    pub fn open_file(&self, name: &str, bytes: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let body = bytes.strip_prefix(FILE_MAGIC).ok_or(SealError)?;
        self.files.open(name.as_bytes(), body).map(Zeroizing::new)
    }
}

/// Whether `bytes` are a sealed file (else a plain one from before
/// encryption at rest, or from an unencrypted data directory).
pub fn is_sealed_file(bytes: &[u8]) -> bool {
    bytes.starts_with(FILE_MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_opens_only_at_its_place_and_under_its_key() {
        let key = DataKey::generate();
        let keys = key.keys();
        let sealed = keys.values.seal(b"doc/1", b"Bed 4 obs");
        assert_eq!(sealed.len(), 9 + OVERHEAD);
        assert_eq!(keys.values.open(b"doc/1", &sealed).unwrap(), b"Bed 4 obs");
        assert_eq!(keys.values.open(b"doc/2", &sealed), Err(SealError));
        assert_eq!(keys.files.open(b"doc/1", &sealed), Err(SealError));
        let other = DataKey::generate().keys();
        assert_eq!(other.values.open(b"doc/1", &sealed), Err(SealError));
        let mut flipped = sealed.clone();
        flipped[30] ^= 1;
        assert_eq!(keys.values.open(b"doc/1", &flipped), Err(SealError));
        assert_eq!(
            keys.values.open(b"doc/1", &sealed[..OVERHEAD - 1]),
            Err(SealError)
        );
    }

    #[test]
    fn two_seals_of_one_value_differ() {
        let keys = DataKey::generate().keys();
        assert_ne!(keys.values.seal(b"k", b"v"), keys.values.seal(b"k", b"v"));
    }

    #[test]
    fn a_file_opens_only_under_its_name() {
        let keys = DataKey::generate().keys();
        let sealed = keys.seal_file("device.key", b"secret");
        assert!(is_sealed_file(&sealed));
        assert_eq!(
            keys.open_file("device.key", &sealed).unwrap().as_slice(),
            b"secret"
        );
        assert!(keys.open_file("team.key", &sealed).is_err());
        assert!(keys.open_file("device.key", b"secret").is_err());
    }
}
