//! The screen's PIN (`pin` in the data directory; storage.md §8.3): a
//! short secret that unlocks a locked screen, kept as an Argon2id hash.
//! The record is one of the identity's files, so an encrypted directory
//! seals it with the data key (setting a PIN there needs the passphrase).
//!
//! Record (61 bytes, written as hex text): version `1`, Argon2id's memory
//! in KiB, passes and lanes (u32 big-endian each), a 16-byte random salt,
//! the 32-byte hash.
//!
//! Invariants: the record's length and parameters are checked before
//! Argon2id runs, so a damaged or planted file cannot make an unlock take
//! the machine's memory; hashes are compared in constant time; the PIN
//! itself is never stored, logged or kept longer than the check.

use subtle::ConstantTimeEq;
use thiserror::Error;
use zeroize::Zeroizing;

use super::{DataDir, DataDirError};
use crate::atrest::wrap::{self, Params, WrapError};
use crate::atrest::WRAP_FILE;

/// The file's name in the data directory.
pub const PIN_FILE: &str = "pin";
/// The fewest characters a PIN has.
pub const MIN_PIN: usize = 4;
/// The most.
pub const MAX_PIN: usize = 64;

const VERSION: u8 = 1;
pub const SALT_LEN: usize = 16;
const HASH_LEN: usize = 32;
/// The record's length in bytes.
pub const RECORD_LEN: usize = 1 + 12 + SALT_LEN + HASH_LEN;
/// The file's longest text (hex, a newline): longer is damaged, never read.
const MAX_FILE: u64 = 2 * RECORD_LEN as u64 + 2;

// Bounds a record's parameters must meet before Argon2id runs (as
// `key.wrap`'s: atrest/wrap.rs).
const MAX_M_KIB: u32 = 2 * 1024 * 1024;
const MAX_T: u32 = 64;
const MAX_P: u32 = 16;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PinError {
    #[error("a PIN has {MIN_PIN} to {MAX_PIN} characters")]
    Length,
    #[error("the PIN file is damaged: {0}")]
    Damaged(&'static str),
}

/// Refuses a PIN too short or too long.
pub fn check_length(pin: &str) -> Result<(), PinError> {
    let n = pin.chars().count();
    if (MIN_PIN..=MAX_PIN).contains(&n) {
        Ok(())
    } else {
        Err(PinError::Length)
    }
}

fn argon(params: Params) -> Result<argon2::Argon2<'static>, PinError> {
    let out_of_bounds = PinError::Damaged("its Argon2id parameters are out of bounds");
    if params.t == 0
        || params.t > MAX_T
        || params.p == 0
        || params.p > MAX_P
        || params.m_kib > MAX_M_KIB
    {
        return Err(out_of_bounds);
    }
    let p = argon2::Params::new(params.m_kib, params.t, params.p, Some(HASH_LEN))
        .map_err(|_| out_of_bounds)?;
    Ok(argon2::Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        p,
    ))
}

fn hash(pin: &[u8], salt: &[u8], params: Params) -> Result<Zeroizing<[u8; HASH_LEN]>, PinError> {
    let mut out = Zeroizing::new([0u8; HASH_LEN]);
    argon(params)?
        .hash_password_into(pin, salt, out.as_mut())
        .map_err(|_| PinError::Damaged("Argon2id refused its parameters"))?;
    Ok(out)
}

/// The record for `pin` with this salt and cost (the caller draws the salt).
pub fn encode(pin: &str, params: Params, salt: [u8; SALT_LEN]) -> Result<Vec<u8>, PinError> {
    check_length(pin)?;
    let mut out = vec![VERSION];
    for v in [params.m_kib, params.t, params.p] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out.extend_from_slice(&salt);
    out.extend_from_slice(hash(pin.as_bytes(), &salt, params)?.as_slice());
    debug_assert_eq!(out.len(), RECORD_LEN);
    Ok(out)
}

/// Whether `pin` is the one `record` holds.
pub fn verify(record: &[u8], pin: &[u8]) -> Result<bool, PinError> {
    if record.len() != RECORD_LEN {
        return Err(PinError::Damaged("it is not 61 bytes long"));
    }
    if record[0] != VERSION {
        return Err(PinError::Damaged("it is of an unknown version"));
    }
    let word = |i: usize| u32::from_be_bytes(record[1 + 4 * i..5 + 4 * i].try_into().expect("4"));
    let params = Params {
        m_kib: word(0),
        t: word(1),
        p: word(2),
    };
    let (salt, stored) = record[13..].split_at(SALT_LEN);
    argon(params)?;
    // A PIN longer than any we accept is wrong; Argon2id need not run.
    if pin.len() > 4 * MAX_PIN {
        return Ok(false);
    }
    let given = hash(pin, salt, params)?;
    Ok(bool::from(given.as_slice().ct_eq(stored)))
}

/// The record in the file's text (hex).
fn decode_text(text: &str) -> Result<Zeroizing<Vec<u8>>, PinError> {
    let text = text.trim_end();
    if text.len() != 2 * RECORD_LEN {
        return Err(PinError::Damaged("it is not 61 bytes long"));
    }
    data_encoding::HEXLOWER_PERMISSIVE
        .decode(text.as_bytes())
        .map(Zeroizing::new)
        .map_err(|_| PinError::Damaged("it is not hex"))
}

impl DataDir {
    /// Whether a PIN is set (without reading it).
    pub fn has_pin(&self) -> bool {
        self.file(PIN_FILE).exists()
    }

    /// Sets the screen's PIN (over any earlier one), hashed with a fresh
    /// salt at the cost new passphrase wraps use.
    pub fn set_pin(&self, pin: &str) -> Result<(), DataDirError> {
        check_length(pin).map_err(|e| DataDirError::Passphrase(e.to_string()))?;
        let mut salt = [0u8; SALT_LEN];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut salt);
        let record = encode(pin, Params::for_new_wrap(), salt)
            .map_err(|e| DataDirError::Passphrase(e.to_string()))?;
        let text = Zeroizing::new(data_encoding::HEXLOWER.encode(&record) + "\n");
        self.write_secret(PIN_FILE, &text)
    }

    /// Removes the PIN; false if none was set.
    pub fn clear_pin(&self) -> Result<bool, DataDirError> {
        match std::fs::remove_file(self.file(PIN_FILE)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(error) => Err(DataDirError::Io {
                doing: "remove",
                path: self.file(PIN_FILE),
                error,
            }),
        }
    }

    /// Whether `secret` is this directory's passphrase (checked against
    /// `key.wrap`, read bounded) or its PIN (the file read now, so a PIN
    /// set while the node runs counts). An error only when neither
    /// matched and a file could not be read or is damaged.
    pub fn check_screen_secret(&self, secret: &[u8]) -> Result<bool, DataDirError> {
        let mut error = None;
        if let Some(wrapped) = self.read_wrap()? {
            match wrap::unwrap(&wrapped, secret) {
                Ok(_) => return Ok(true),
                Err(WrapError::WrongPassphrase) => {}
                Err(e @ WrapError::Damaged(_)) => {
                    error = Some(DataDirError::Damaged {
                        path: self.file(WRAP_FILE),
                        why: e.to_string(),
                    })
                }
            }
        }
        match self.pin_record() {
            Ok(Some(record)) => match verify(&record, secret) {
                Ok(true) => return Ok(true),
                Ok(false) => {}
                Err(e) => {
                    error.get_or_insert(DataDirError::Damaged {
                        path: self.file(PIN_FILE),
                        why: e.to_string(),
                    });
                }
            },
            Ok(None) => {}
            Err(e) => {
                error.get_or_insert(e);
            }
        }
        error.map_or(Ok(false), Err)
    }

    /// The PIN record, opened if sealed; a file longer than any record is
    /// refused before it is read.
    fn pin_record(&self) -> Result<Option<Zeroizing<Vec<u8>>>, DataDirError> {
        let path = self.file(PIN_FILE);
        let damaged = |why: String| DataDirError::Damaged {
            path: path.clone(),
            why,
        };
        // Sealing adds a header and a tag: the bound on the file is loose.
        let len = match std::fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => {
                return Err(DataDirError::Io {
                    doing: "read",
                    path,
                    error,
                })
            }
        };
        if len > 4096 {
            return Err(damaged("it is far longer than a PIN record".into()));
        }
        let Some(text) = self.read_secret(PIN_FILE)? else {
            return Ok(None);
        };
        if text.len() as u64 > MAX_FILE {
            return Err(damaged("it is longer than a PIN record".into()));
        }
        decode_text(&text)
            .map(Some)
            .map_err(|e| damaged(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SALT: [u8; SALT_LEN] = [7; SALT_LEN];

    #[test]
    fn a_record_verifies_its_pin_only() {
        let record = encode("4711", Params::FAST_FOR_TESTS, SALT).unwrap();
        assert_eq!(record.len(), RECORD_LEN);
        assert!(
            !record.windows(4).any(|w| w == b"4711"),
            "the PIN is not stored"
        );
        assert_eq!(verify(&record, b"4711"), Ok(true));
        assert_eq!(verify(&record, b"4712"), Ok(false));
        assert_eq!(verify(&record, b""), Ok(false));
        assert_eq!(verify(&record, &[b'4'; 1000]), Ok(false));
        let other = encode("4711", Params::FAST_FOR_TESTS, [8; SALT_LEN]).unwrap();
        assert_ne!(record, other, "the salt changes the hash");
    }

    #[test]
    fn a_pin_has_four_to_sixty_four_characters() {
        for bad in ["", "123", &"9".repeat(65)] {
            assert_eq!(
                encode(bad, Params::FAST_FOR_TESTS, SALT),
                Err(PinError::Length)
            );
        }
        assert!(check_length("1234").is_ok());
        assert!(
            check_length(&"é".repeat(64)).is_ok(),
            "characters, not bytes"
        );
    }

    #[test]
    fn a_damaged_record_or_absurd_cost_is_refused_before_argon2_runs() {
        let record = encode("2468", Params::FAST_FOR_TESTS, SALT).unwrap();
        assert!(matches!(
            verify(&record[..60], b"2468"),
            Err(PinError::Damaged(_))
        ));
        let mut v2 = record.clone();
        v2[0] = 2;
        assert!(matches!(verify(&v2, b"2468"), Err(PinError::Damaged(_))));
        for (at, value) in [(1, u32::MAX), (5, 0), (5, 1000), (9, 0), (9, 1000)] {
            let mut bad = record.clone();
            bad[at..at + 4].copy_from_slice(&value.to_be_bytes());
            assert!(
                matches!(verify(&bad, b"2468"), Err(PinError::Damaged(_))),
                "parameter at {at} = {value}"
            );
        }
        let mut flipped = record.clone();
        flipped[20] ^= 1;
        assert_eq!(verify(&flipped, b"2468"), Ok(false), "another salt");
    }

    #[test]
    fn the_file_text_is_checked_before_it_is_decoded() {
        let record = encode("2468", Params::FAST_FOR_TESTS, SALT).unwrap();
        let text = data_encoding::HEXLOWER.encode(&record) + "\n";
        assert_eq!(decode_text(&text).unwrap().as_slice(), record.as_slice());
        assert!(decode_text(&text[1..]).is_err());
        assert!(decode_text(&text.replace('0', "z")).is_err());
    }

    #[test]
    fn a_data_directory_checks_its_pin_and_its_passphrase() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("pass");
        std::fs::write(&file, "a long passphrase\n").unwrap();
        let source = super::super::Passphrase::File(file);
        let dir = DataDir::with_passphrase(tmp.path().join("d"), source);
        dir.create().unwrap();
        assert!(!dir.has_pin());
        assert!(
            !dir.check_screen_secret(b"1234").unwrap(),
            "nothing to match"
        );
        dir.set_pin("1234").unwrap();
        assert!(dir.has_pin());
        assert!(dir.check_screen_secret(b"1234").unwrap());
        assert!(!dir.check_screen_secret(b"4321").unwrap());
        // Encrypting the directory seals the PIN with the identity.
        dir.encrypt().unwrap();
        let sealed = std::fs::read(dir.file(PIN_FILE)).unwrap();
        assert!(crate::atrest::is_sealed_file(&sealed));
        assert!(dir.check_screen_secret(b"1234").unwrap());
        assert!(dir.check_screen_secret(b"a long passphrase").unwrap());
        assert!(!dir.check_screen_secret(b"a long passphrasE").unwrap());
        assert!(dir.clear_pin().unwrap());
        assert!(!dir.clear_pin().unwrap());
        assert!(!dir.check_screen_secret(b"1234").unwrap());
        // A planted huge file is refused unread.
        std::fs::write(dir.file(PIN_FILE), vec![b'a'; 1 << 20]).unwrap();
        assert!(matches!(
            dir.check_screen_secret(b"1234"),
            Err(DataDirError::Damaged { .. })
        ));
        assert!(dir.check_screen_secret(b"a long passphrase").unwrap());
    }
}
