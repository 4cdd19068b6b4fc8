//! How the sled store keeps a key-value pair when the data directory is
//! encrypted (storage.md §8.2): under the key's hashed form
//! (`atrest::names`), the value sealed with that stored key as its place,
//! its plaintext being the key as the node wrote it and then the value:
//! `len(key) (u16 big-endian) ‖ key ‖ value`.
//!
//! Invariants: a pair read back is exactly the pair written, or an error (a
//! value that does not open, or whose key is not the one asked for, is
//! [`StoreError::Corrupt`]); scans return pairs in the order of the keys the
//! node wrote, as the plain store does.

use crate::atrest::Keys;

use super::{KeyValues, StoreError};

/// The stored key and sealed value for `(key, value)`.
pub fn seal(keys: &Keys, key: &[u8], value: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let stored = keys.names.physical(key);
    let len = u16::try_from(key.len()).expect("store keys are short");
    let mut plain = Vec::with_capacity(2 + key.len() + value.len());
    plain.extend_from_slice(&len.to_be_bytes());
    plain.extend_from_slice(key);
    plain.extend_from_slice(value);
    let sealed = keys.values.seal(&stored, &plain);
    zeroize::Zeroize::zeroize(&mut plain);
    (stored, sealed)
}

/// The node's key and value from a stored pair.
pub fn open(keys: &Keys, stored: &[u8], sealed: &[u8]) -> Result<(Vec<u8>, Vec<u8>), StoreError> {
    let plain = keys
        .values
        .open(stored, sealed)
        .map_err(|e| StoreError::Corrupt(format!("a stored value is damaged ({e})")))?;
    let damaged = || StoreError::Corrupt("a stored value's key is damaged".into());
    let len = u16::from_be_bytes(plain.get(..2).ok_or_else(damaged)?.try_into().expect("2"));
    let end = 2 + usize::from(len);
    let key = plain.get(2..end).ok_or_else(damaged)?.to_vec();
    Ok((key, plain[end..].to_vec()))
}

/// The value of `key`, given what is stored at its hashed form.
pub fn open_value(
    keys: &Keys,
    key: &[u8],
    stored: &[u8],
    sealed: &[u8],
) -> Result<Vec<u8>, StoreError> {
    let (found, value) = open(keys, stored, sealed)?;
    if found != key {
        return Err(StoreError::Corrupt(
            "a stored value is under another key".into(),
        ));
    }
    Ok(value)
}

/// Opens a scan's pairs and puts them in the node's key order.
pub fn open_scan(
    keys: &Keys,
    prefix: &[u8],
    stored: impl Iterator<Item = Result<(Vec<u8>, Vec<u8>), StoreError>>,
) -> Result<KeyValues, StoreError> {
    // Remembered peers and held times are hints (a peer is found again, a
    // held time starts again): one that does not open is skipped, as a
    // damaged plain one is. Anything else that does not open is an error.
    let hint = prefix.starts_with(super::keys::PEER_PREFIX)
        || prefix.starts_with(super::keys::HELD_PREFIX);
    let mut out = Vec::new();
    for pair in stored {
        let (stored, sealed) = pair?;
        let (key, value) = match open(keys, &stored, &sealed) {
            Ok(pair) => pair,
            Err(e) if hint => {
                tracing::error!("{e}; skipped");
                continue;
            }
            Err(e) => return Err(e),
        };
        if !key.starts_with(prefix) {
            return Err(StoreError::Corrupt(
                "a stored value is under another key".into(),
            ));
        }
        out.push((key, value));
    }
    out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::atrest::DataKey;
    use crate::store::keys;

    #[test]
    fn a_pair_round_trips_and_cannot_be_moved() {
        let keys = DataKey::generate().keys();
        let key = keys::header(&[3; 16]);
        let (stored, sealed) = seal(&keys, &key, b"Bed 12");
        assert_ne!(stored, key);
        assert_eq!(
            open_value(&keys, &key, &stored, &sealed).unwrap(),
            b"Bed 12"
        );
        let other = keys.names.physical(&keys::header(&[4; 16]));
        assert!(open(&keys, &other, &sealed).is_err());
        let (s2, v2) = seal(&keys, &keys::header(&[4; 16]), b"x");
        assert!(open_value(&keys, &key, &s2, &v2).is_err());
    }
}
