//! Store keys without identifiers (storage.md §8.2): each conversation,
//! message, entry, change, revocation and device id in a key becomes a
//! keyed BLAKE3 hash of the same length; the key's fixed parts and a chunk's
//! sequence number stay as they are, so a prefix scan over one document,
//! and the order of its chunks, work on the hashed keys as on the plain.
//!
//! Invariants: the map is a function of the key and the data key only; a
//! whole key maps to a whole key and a prefix that ends where a part ends
//! maps to the prefix of every key it covered; within one document the map
//! keeps order, so a range over one document's keys maps to a range.
//! Keys outside the layout (`meta/…`, and the contract tests' own) are
//! kept as they are: they hold no identifier.

use zeroize::Zeroizing;

use crate::store::keys;

/// The keyed hash of identifiers.
pub struct Names(Zeroizing<[u8; 32]>);

impl Names {
    pub(super) fn new(key: Zeroizing<[u8; 32]>) -> Names {
        Names(key)
    }

    /// `id`'s keyed hash, as long as `id` (up to 64 bytes; `kind` keeps
    /// equal bytes of different kinds apart).
    fn hash_into(&self, kind: u8, id: &[u8], out: &mut Vec<u8>) {
        let mut h = blake3::Hasher::new_keyed(&self.0);
        h.update(&[kind]);
        h.update(id);
        let start = out.len();
        out.resize(start + id.len(), 0);
        h.finalize_xof().fill(&mut out[start..]);
    }

    /// The key stored for `logical` (a whole key or a prefix of the forms
    /// above).
    pub fn physical(&self, logical: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(logical.len());
        if let Some(rest) = logical.strip_prefix(keys::DOC_PREFIX) {
            out.extend_from_slice(keys::DOC_PREFIX);
            let (id, rest) = rest.split_at(rest.len().min(16));
            self.hash_into(b'd', id, &mut out);
            // `/c/<seq>` keeps its sequence; `/x/<change>`, `/r/<entry>`
            // hash theirs; `/h`, `/s` and a range's end (`0`) are plain.
            for (tag, kind) in [(&b"/x/"[..], b'x'), (&b"/r/"[..], b'r')] {
                if let Some(id) = rest.strip_prefix(tag) {
                    out.extend_from_slice(tag);
                    self.hash_into(kind, id, &mut out);
                    return out;
                }
            }
            out.extend_from_slice(rest);
            return out;
        }
        for (prefix, kind) in [
            (keys::INDEX_PREFIX, b'd'),
            (keys::REVOCATION_PREFIX, b'v'),
            (keys::PEER_PREFIX, b'p'),
            (keys::TRAIL_HEAD_PREFIX, b'a'),
            (keys::MAIL_PREFIX, b'e'),
            (keys::MAIL_QUEUE_PREFIX, b'd'),
        ] {
            if let Some(id) = logical.strip_prefix(prefix) {
                out.extend_from_slice(prefix);
                self.hash_into(kind, id, &mut out);
                return out;
            }
        }
        // A device, then a sequence number kept as it is (so a trail's
        // entries stay in order, and a partial one is a block's prefix) or
        // a second device.
        for (prefix, second) in [
            (keys::TRAIL_PREFIX, None),
            (keys::TRAIL_FINDING_PREFIX, Some(b'a')),
        ] {
            if let Some(rest) = logical.strip_prefix(prefix) {
                out.extend_from_slice(prefix);
                let (device, rest) = rest.split_at(rest.len().min(32));
                self.hash_into(b'a', device, &mut out);
                match second {
                    Some(kind) => self.hash_into(kind, rest, &mut out),
                    None => out.extend_from_slice(rest),
                }
                return out;
            }
        }
        if let Some(rest) = logical.strip_prefix(keys::HELD_PREFIX) {
            out.extend_from_slice(keys::HELD_PREFIX);
            let (conversation, message) = rest.split_at(rest.len().min(16));
            self.hash_into(b'd', conversation, &mut out);
            self.hash_into(b'm', message, &mut out);
            return out;
        }
        out.extend_from_slice(logical);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::atrest::DataKey;

    #[test]
    fn ids_are_hashed_and_the_layout_kept() {
        let names = DataKey::generate().keys().names;
        let id = [7u8; 16];
        let header = names.physical(&keys::header(&id));
        assert!(header.starts_with(keys::DOC_PREFIX) && header.ends_with(b"/h"));
        assert!(!header.windows(16).any(|w| w == id));
        assert_eq!(header.len(), keys::header(&id).len());
        // The document's prefix covers its keys.
        let prefix = names.physical(&keys::doc_prefix(&id));
        for key in [
            keys::header(&id),
            keys::snapshot(&id),
            keys::chunk(&id, 3),
            keys::aside(&id, &[1; 32]),
            keys::rejected(&id, &[2; 16]),
        ] {
            assert!(names.physical(&key).starts_with(&prefix));
        }
        assert!(!names
            .physical(&keys::doc_prefix(&[8; 16]))
            .starts_with(&prefix));
        // Chunks keep their order.
        assert!(names.physical(&keys::chunk(&id, 2)) < names.physical(&keys::chunk(&id, 10)));
        assert!(names.physical(&keys::chunk(&id, u64::MAX)) < names.physical(&keys::snapshot(&id)));
        // The index, held times and peers hash theirs.
        assert!(names
            .physical(&keys::index(&id))
            .starts_with(keys::INDEX_PREFIX));
        let held = names.physical(&keys::held(&id, &[9; 16]));
        assert!(held.starts_with(keys::HELD_PREFIX) && !held.windows(16).any(|w| w == [9; 16]));
        assert_eq!(names.physical(keys::FORMAT), keys::FORMAT);
        let d = crate::ids::DeviceId([4; 32]);
        let entry = names.physical(&keys::trail(&d, 300));
        assert!(entry.starts_with(&names.physical(&keys::trail_block(&d, 300))));
        assert!(entry.starts_with(&names.physical(keys::TRAIL_PREFIX)));
        assert!(!entry.windows(32).any(|w| w == d.0));
        assert!(names.physical(&keys::trail(&d, 255)) < entry);
        for key in [keys::trail_head(&d), keys::trail_finding(&d, &d)] {
            assert!(!names.physical(&key).windows(32).any(|w| w == d.0));
        }
    }

    #[test]
    fn the_map_depends_on_the_data_key() {
        let a = DataKey::generate().keys().names;
        let b = DataKey::generate().keys().names;
        let key = keys::index(&[1; 16]);
        assert_eq!(a.physical(&key), a.physical(&key));
        assert_ne!(a.physical(&key), b.physical(&key));
        assert_eq!(a.physical(b"meta/format"), b"meta/format");
    }
}
