//! The wrapped data key (`key.wrap` in the data directory; storage.md §8.1):
//! the data key sealed under a key derived from the passphrase with
//! Argon2id, and the derivation's parameters and salt.
//!
//! Layout (108 bytes): `HDLWRAP1`, then memory in KiB, passes and lanes
//! (u32 big-endian each), a 16-byte salt, then the data key sealed with
//! XChaCha20-Poly1305 (nonce, ciphertext, tag: 72 bytes) with the 36 bytes
//! before it as associated data, so no parameter can be changed unseen.
//!
//! Invariants: parameters are checked against fixed bounds before Argon2id
//! runs, so a damaged or planted file cannot make an unlock take the
//! machine's memory; a wrong passphrase and a damaged file are told apart
//! only as far as the bytes allow (both fail to open the seal).

use thiserror::Error;
use zeroize::Zeroizing;

use super::{DataKey, Sealer};

const MAGIC: &[u8; 8] = b"HDLWRAP1";
const HEADER_LEN: usize = 8 + 12 + SALT_LEN;
const SALT_LEN: usize = 16;
/// The whole file.
pub const WRAP_LEN: usize = HEADER_LEN + 32 + super::OVERHEAD;
/// The shortest passphrase `init` and `passphrase change` accept.
pub const MIN_PASSPHRASE: usize = 8;
/// The longest (a passphrase file is read up to this).
pub const MAX_PASSPHRASE: usize = 1024;

/// Argon2id's cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    pub m_kib: u32,
    pub t: u32,
    pub p: u32,
}

impl Params {
    /// RFC 9106's second recommended option (64 MiB, 3 passes), on one
    /// lane: about a quarter of a second on a ward laptop.
    pub const DEFAULT: Params = Params {
        m_kib: 64 * 1024,
        t: 3,
        p: 1,
    };
    /// Argon2's minimum, for test and debug builds only.
    pub const FAST_FOR_TESTS: Params = Params {
        m_kib: 64,
        t: 1,
        p: 1,
    };
    /// Bounds a file's parameters must meet before Argon2id runs.
    const MAX_M_KIB: u32 = 2 * 1024 * 1024;
    const MAX_T: u32 = 64;
    const MAX_P: u32 = 16;

    /// What a new wrap uses: [`Params::DEFAULT`], or in a debug build
    /// [`Params::FAST_FOR_TESTS`] when `HUDDLE_TEST_FAST_KDF=1` (the test
    /// suite starts hundreds of processes; a release build ignores it).
    pub fn for_new_wrap() -> Params {
        if cfg!(debug_assertions)
            && std::env::var_os("HUDDLE_TEST_FAST_KDF").is_some_and(|v| v == "1")
        {
            Params::FAST_FOR_TESTS
        } else {
            Params::DEFAULT
        }
    }

    fn check(self) -> Result<argon2::Params, WrapError> {
        if self.t == 0
            || self.t > Self::MAX_T
            || self.p == 0
            || self.p > Self::MAX_P
            || self.m_kib > Self::MAX_M_KIB
        {
            return Err(WrapError::Damaged(
                "its Argon2id parameters are out of bounds",
            ));
        }
        argon2::Params::new(self.m_kib, self.t, self.p, Some(32))
            .map_err(|_| WrapError::Damaged("its Argon2id parameters are out of bounds"))
    }
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum WrapError {
    #[error("wrong passphrase")]
    WrongPassphrase,
    #[error("the key file is damaged: {0}")]
    Damaged(&'static str),
}

/// The key that wraps the data key.
fn derive(passphrase: &[u8], salt: &[u8], params: Params) -> Result<Sealer, WrapError> {
    let argon = argon2::Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        params.check()?,
    );
    let mut out = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(passphrase, salt, out.as_mut())
        .map_err(|_| WrapError::Damaged("Argon2id refused its parameters"))?;
    Ok(Sealer::new(&out))
}

/// The wrap file for `key` under `passphrase`, with a fresh salt.
pub fn wrap(key: &DataKey, passphrase: &[u8], params: Params) -> Result<Vec<u8>, WrapError> {
    let mut out = MAGIC.to_vec();
    for v in [params.m_kib, params.t, params.p] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    let mut salt = [0u8; SALT_LEN];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut salt);
    out.extend_from_slice(&salt);
    let sealer = derive(passphrase, &salt, params)?;
    let sealed = sealer.seal(&out, key.as_bytes());
    out.extend(sealed);
    debug_assert_eq!(out.len(), WRAP_LEN);
    Ok(out)
}

/// The parameters a wrap file names (checked), for reports.
pub fn params_of(bytes: &[u8]) -> Result<Params, WrapError> {
    if bytes.len() != WRAP_LEN {
        return Err(WrapError::Damaged("it is not 108 bytes long"));
    }
    if !bytes.starts_with(MAGIC) {
        return Err(WrapError::Damaged("it is not a huddle key file"));
    }
    let word = |i: usize| u32::from_be_bytes(bytes[8 + 4 * i..12 + 4 * i].try_into().expect("4"));
    let params = Params {
        m_kib: word(0),
        t: word(1),
        p: word(2),
    };
    params.check()?;
    Ok(params)
}

/// The data key in a wrap file, given its passphrase.
pub fn unwrap(bytes: &[u8], passphrase: &[u8]) -> Result<DataKey, WrapError> {
    let params = params_of(bytes)?;
    let (header, sealed) = bytes.split_at(HEADER_LEN);
    let sealer = derive(passphrase, &header[20..], params)?;
    let plain = Zeroizing::new(
        sealer
            .open(header, sealed)
            .map_err(|_| WrapError::WrongPassphrase)?,
    );
    let key: [u8; 32] = plain
        .as_slice()
        .try_into()
        .map_err(|_| WrapError::Damaged("the wrapped key is not 32 bytes"))?;
    Ok(DataKey::from_bytes(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrap_opens_with_its_passphrase_only() {
        let key = DataKey::generate();
        let file = wrap(&key, b"correct horse", Params::FAST_FOR_TESTS).unwrap();
        assert_eq!(file.len(), WRAP_LEN);
        assert_eq!(params_of(&file).unwrap(), Params::FAST_FOR_TESTS);
        let back = unwrap(&file, b"correct horse").unwrap();
        assert_eq!(back.as_bytes(), key.as_bytes());
        assert_eq!(
            unwrap(&file, b"correct horsE").unwrap_err(),
            WrapError::WrongPassphrase
        );
    }

    #[test]
    fn changed_parameters_or_salt_do_not_open() {
        let key = DataKey::generate();
        let file = wrap(&key, b"pass phrase", Params::FAST_FOR_TESTS).unwrap();
        for at in [12, 20, 30] {
            let mut bad = file.clone();
            bad[at] ^= 1;
            assert!(unwrap(&bad, b"pass phrase").is_err(), "byte {at}");
        }
    }

    #[test]
    fn parameters_out_of_bounds_are_refused_before_argon2_runs() {
        let key = DataKey::generate();
        let mut file = wrap(&key, b"pass phrase", Params::FAST_FOR_TESTS).unwrap();
        // 4 TiB of memory.
        file[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            unwrap(&file, b"pass phrase"),
            Err(WrapError::Damaged(_))
        ));
        assert!(matches!(
            unwrap(&file[..50], b"pass phrase"),
            Err(WrapError::Damaged(_))
        ));
    }
}
