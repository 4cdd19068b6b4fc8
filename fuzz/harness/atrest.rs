//! Encryption at rest's decoders (protocol/storage.md §8): the wrapped data
//! key (`key.wrap`), a sealed store pair, a sealed file of the data
//! directory, the map from a store key to its hashed form, and the screen
//! PIN's record.
//!
//! Promises checked: nothing panics on any bytes; a genuine wrap, pair or
//! file damaged in any way opens to exactly what was sealed or not at all;
//! undamaged, each round-trips; a wrap whose parameters are out of bounds is
//! refused before Argon2id runs (a wrap is unwrapped here only when its
//! parameters are small, so the fuzzer stays fast); the key map is a
//! function that keeps a document's keys under the document's prefix.

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use huddle::atrest::wrap::{self, Params};
use huddle::atrest::{DataKey, Keys};
use huddle::datadir::pin;
use huddle::store::{keys, sealed};

use super::{structured, Damage};

const PASSPHRASE: &[u8] = b"a fuzzed passphrase";

struct Base {
    key: DataKey,
    keys: Keys,
    wrapped: Vec<u8>,
}

fn base() -> &'static Base {
    static B: OnceLock<Base> = OnceLock::new();
    B.get_or_init(|| {
        let key = DataKey::generate();
        let wrapped = wrap::wrap(&key, PASSPHRASE, Params::FAST_FOR_TESTS).expect("wrap");
        Base {
            keys: key.keys(),
            key,
            wrapped,
        }
    })
}

#[derive(Arbitrary, Debug)]
enum Case {
    /// The genuine wrap, damaged, unwrapped with its passphrase or another.
    Wrap { damage: Vec<Damage>, right: bool },
    /// A pair sealed and damaged (value or stored key), then opened.
    Pair {
        doc: [u8; 16],
        seq: u64,
        value: Vec<u8>,
        damage: Vec<Damage>,
        damage_key: bool,
    },
    /// Any bytes as a stored pair.
    RawPair { stored: Vec<u8>, sealed: Vec<u8> },
    /// A data directory file sealed, damaged, opened under a name.
    File {
        text: Vec<u8>,
        damage: Vec<Damage>,
        other_name: bool,
    },
    /// Any key through the map.
    Name { key: Vec<u8> },
    /// The screen PIN's record (`datadir/pin.rs`), genuine and damaged,
    /// checked against the PIN or another.
    Pin { damage: Vec<Damage>, right: bool },
}

pub fn atrest(data: &[u8]) {
    let Some(case) = structured::<Case>(data) else {
        return;
    };
    let b = base();
    match case {
        Case::Wrap { damage, right } => {
            let mut bytes = b.wrapped.clone();
            for d in &damage {
                d.apply(&mut bytes);
            }
            let Ok(params) = wrap::params_of(&bytes) else {
                assert!(wrap::unwrap(&bytes, PASSPHRASE).is_err());
                return;
            };
            if params.m_kib > 1024 || params.t > 2 || params.p > 2 {
                return;
            }
            let pass: &[u8] = if right { PASSPHRASE } else { b"another one" };
            if let Ok(key) = wrap::unwrap(&bytes, pass) {
                assert!(right, "a wrong passphrase unwrapped a key");
                assert_eq!(bytes, b.wrapped, "a damaged wrap unwrapped");
                assert_eq!(
                    key.keys().names.physical(b"idx/x"),
                    b.keys.names.physical(b"idx/x")
                );
            } else {
                assert!(
                    !right || bytes != b.wrapped,
                    "the genuine wrap did not unwrap"
                );
            }
        }
        Case::Pair {
            doc,
            seq,
            value,
            damage,
            damage_key,
        } => {
            let key = keys::chunk(&doc, seq);
            let (mut stored, mut sealed_value) = sealed::seal(&b.keys, &key, &value);
            let genuine = (stored.clone(), sealed_value.clone());
            for d in &damage {
                d.apply(if damage_key {
                    &mut stored
                } else {
                    &mut sealed_value
                });
            }
            match sealed::open_value(&b.keys, &key, &stored, &sealed_value) {
                Ok(v) => {
                    assert_eq!(v, value, "a pair opened to other bytes");
                    assert_eq!((stored, sealed_value), genuine, "a damaged pair opened");
                }
                Err(_) => assert_ne!(
                    (stored, sealed_value),
                    genuine,
                    "a genuine pair did not open"
                ),
            }
        }
        Case::RawPair {
            stored,
            sealed: bytes,
        } => {
            let _ = sealed::open(&b.keys, &stored, &bytes);
        }
        Case::File {
            text,
            damage,
            other_name,
        } => {
            let mut bytes = b.keys.seal_file("profile.json", &text);
            let genuine = bytes.clone();
            for d in &damage {
                d.apply(&mut bytes);
            }
            let name = if other_name {
                "certificate"
            } else {
                "profile.json"
            };
            match b.keys.open_file(name, &bytes) {
                Ok(plain) => {
                    assert_eq!(plain.as_slice(), text.as_slice());
                    assert!(
                        !other_name && bytes == genuine,
                        "a damaged or moved file opened"
                    );
                }
                Err(_) => assert!(
                    other_name || bytes != genuine,
                    "a genuine file did not open"
                ),
            }
        }
        Case::Name { key } => {
            let physical = b.keys.names.physical(&key);
            assert_eq!(
                physical,
                b.keys.names.physical(&key),
                "the map is a function"
            );
            if key.len() >= keys::DOC_PREFIX.len() + 16 && key.starts_with(keys::DOC_PREFIX) {
                let id: [u8; 16] = key[keys::DOC_PREFIX.len()..][..16].try_into().expect("16");
                assert!(physical.starts_with(&b.keys.names.physical(&keys::doc_prefix(&id))[..20]));
            }
            let _ = &b.key;
        }
        Case::Pin { damage, right } => {
            let genuine = pin::encode("4711", Params::FAST_FOR_TESTS, [3; pin::SALT_LEN])
                .expect("a PIN record");
            let mut record = genuine.clone();
            for d in &damage {
                d.apply(&mut record);
            }
            // Large parameters are refused before Argon2id runs; only small
            // ones are run here, so the fuzzer stays fast.
            let word = |i: usize| {
                record
                    .get(1 + 4 * i..5 + 4 * i)
                    .map_or(0, |w| u32::from_be_bytes(w.try_into().expect("4")))
            };
            if word(0) > 1024 || word(1) > 2 || word(2) > 2 {
                return;
            }
            let given: &[u8] = if right { b"4711" } else { b"4712" };
            if let Ok(true) = pin::verify(&record, given) {
                assert!(right, "a wrong PIN was taken");
                assert_eq!(&record[..13], &genuine[..13], "damaged parameters verified");
            } else {
                assert!(
                    !right || record != genuine,
                    "the genuine record refused its PIN"
                );
            }
        }
    }
}
