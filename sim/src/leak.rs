//! No leak by content: every message body the workload wrote, with its
//! conversation, and a search for the bodies a device may not see — in
//! every frame sent to it (`check::check_send`) and in every key and value
//! of its store (`check_store`, at each crash and at the end).
//!
//! Membership gates (a `Sync` frame names its document, a store key
//! `doc/<id>/…` its conversation) say where bytes *may* go; this says where
//! plaintext *did* go, whatever frame or key carries it — a sealed envelope
//! for a carrier, a mailbox entry, a frame kind that does not exist yet.
//!
//! The search is Rabin–Karp: each body is indexed by a rolling hash of its
//! first [`WINDOW`] bytes (with a bitmap in front of the map), so a haystack
//! costs one multiply-add and one bit test per byte, whatever the number of
//! bodies. A hit counts only if the whole body follows and its conversation
//! does not admit the device. Automerge chunks found in a haystack are also
//! searched inflated (a deflated change, a saved document), so compression
//! cannot hide a body.
//!
//! Invariant: only bodies of at least [`MIN_BODY`] bytes are searched for.
//! The workload draws bodies from a 20-word vocabulary, so a short body of
//! one conversation may well occur inside a long body of another (a false
//! leak); a body of 48 bytes or more has about nine words or more, and the
//! chance that it occurs inside another is then about 1e-10 per pair of
//! bodies or less.

use std::collections::BTreeMap;

use huddle::store::Store;
use huddle::team::TEAM_DOC_ID;
use huddle::{ConversationHeader, ConversationId};

use crate::check::{Invariant, Violation};
use crate::device::Device;
use crate::net::Dev;

/// Shortest body searched for (see the module's invariant).
pub const MIN_BODY: usize = 48;
/// Bytes of a body's start that the rolling hash covers.
const WINDOW: usize = 16;
const BASE: u64 = 0x0100_0000_01b3;
/// Bits of the prefilter bitmap's index (2^20 bits, 128 KiB).
const BITS: u32 = 20;
/// Automerge's chunk magic.
const MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];

/// Every body the workload wrote, searchable.
#[derive(Default)]
pub struct Bodies {
    /// (conversation, body), in the order written.
    entries: Vec<(ConversationId, Vec<u8>)>,
    headers: BTreeMap<ConversationId, ConversationHeader>,
    /// Window hash → entries starting with it.
    by_hash: BTreeMap<u64, Vec<u32>>,
    /// Prefilter over window hashes (empty until the first body).
    bits: Vec<u64>,
    /// BASE^WINDOW, to roll the oldest byte out.
    top: u64,
}

/// A body found where it must not be.
pub struct Found {
    pub conv: ConversationId,
    pub title: String,
    pub len: usize,
    pub at: usize,
}

fn window_hash(w: &[u8]) -> u64 {
    w.iter().fold(0u64, |h, &b| {
        h.wrapping_mul(BASE).wrapping_add(u64::from(b) + 1)
    })
}

fn slot(h: u64) -> usize {
    (h.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - BITS)) as usize
}

/// May `d` hold the plaintext of a conversation with header `h`?
pub fn admitted(d: &Device, h: &ConversationHeader) -> bool {
    d.is_member() && d.cert.as_ref().is_some_and(|c| h.admits(c))
}

impl Bodies {
    /// Records a body written into the conversation with header `h`.
    pub fn record(&mut self, h: &ConversationHeader, body: &[u8]) {
        if body.len() < MIN_BODY {
            return;
        }
        if self.bits.is_empty() {
            self.bits = vec![0; (1usize << BITS) / 64];
            self.top = (0..WINDOW).fold(1u64, |t, _| t.wrapping_mul(BASE));
        }
        let h0 = window_hash(&body[..WINDOW]);
        let s = slot(h0);
        self.bits[s / 64] |= 1 << (s % 64);
        let idx = self.entries.len() as u32;
        self.by_hash.entry(h0).or_default().push(idx);
        self.headers.entry(h.id).or_insert_with(|| h.clone());
        self.entries.push((h.id, body.to_vec()));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The first body in `hay` whose conversation `foreign` says the
    /// device may not see.
    pub fn find(&self, hay: &[u8], foreign: &dyn Fn(&ConversationHeader) -> bool) -> Option<Found> {
        if self.entries.is_empty() || hay.len() < MIN_BODY {
            return None;
        }
        let mut h = window_hash(&hay[..WINDOW]);
        let last = hay.len() - WINDOW;
        for i in 0..=last {
            let s = slot(h);
            if self.bits[s / 64] & (1 << (s % 64)) != 0 {
                if let Some(found) = self.confirm(hay, i, h, foreign) {
                    return Some(found);
                }
            }
            if i < last {
                h = h
                    .wrapping_mul(BASE)
                    .wrapping_add(u64::from(hay[i + WINDOW]) + 1)
                    .wrapping_sub((u64::from(hay[i]) + 1).wrapping_mul(self.top));
            }
        }
        None
    }

    fn confirm(
        &self,
        hay: &[u8],
        at: usize,
        h: u64,
        foreign: &dyn Fn(&ConversationHeader) -> bool,
    ) -> Option<Found> {
        for &idx in self.by_hash.get(&h)? {
            let (conv, body) = &self.entries[idx as usize];
            if hay[at..].starts_with(body) {
                let header = &self.headers[conv];
                if foreign(header) {
                    return Some(Found {
                        conv: *conv,
                        title: header.title(),
                        len: body.len(),
                        at,
                    });
                }
            }
        }
        None
    }

    /// Like [`Bodies::find`], and also inside every Automerge chunk in
    /// `hay` once inflated.
    pub fn find_deep(
        &self,
        hay: &[u8],
        foreign: &dyn Fn(&ConversationHeader) -> bool,
    ) -> Option<Found> {
        if self.entries.is_empty() {
            return None;
        }
        self.find(hay, foreign)
            .or_else(|| inflated(hay).find_map(|plain| self.find(&plain, foreign)))
    }
}

/// The inflated form of each deflated Automerge chunk in `bytes`: a
/// compressed change (type 2) or a saved document (type 0). Plain changes
/// (type 1) are searched as they are.
fn inflated(bytes: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    let mut at = 0;
    std::iter::from_fn(move || {
        while let Some(off) = find_magic(&bytes[at..]) {
            let start = at + off;
            at = start + 1;
            let Some(chunk) = chunk_at(&bytes[start..]) else {
                continue;
            };
            let plain = match chunk[8] {
                0 => automerge::Automerge::load(chunk)
                    .ok()
                    .map(|d| d.save_nocompress()),
                2 => automerge::Change::from_bytes(chunk.to_vec())
                    .ok()
                    .map(|c| c.raw_bytes().to_vec()),
                _ => None,
            };
            if plain.is_some() {
                at = start + chunk.len();
                return plain;
            }
        }
        None
    })
}

fn find_magic(bytes: &[u8]) -> Option<usize> {
    bytes.windows(MAGIC.len()).position(|w| w == MAGIC)
}

/// The Automerge chunk (magic, checksum, type, LEB128 length, body) that
/// starts `bytes`, if its length fits.
fn chunk_at(bytes: &[u8]) -> Option<&[u8]> {
    if bytes.len() < 10 || !matches!(bytes[8], 0..=2) {
        return None;
    }
    let (mut len, mut shift, mut i) = (0usize, 0u32, 9);
    loop {
        let b = *bytes.get(i)?;
        len |= usize::from(b & 0x7f).checked_shl(shift)?;
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 56 {
            return None;
        }
    }
    bytes.get(..i.checked_add(len)?)
}

/// The conversation a store key belongs to, if it is one of a document's.
fn doc_of(key: &[u8]) -> Option<[u8; 16]> {
    key.strip_prefix(huddle::store::keys::DOC_PREFIX)?
        .get(..16)?
        .try_into()
        .ok()
}

/// No leak by holding, byte for byte: device `dev`'s whole store, read
/// through the `Store` trait (keys and values, as the shell would read
/// them; the simulator's store is plain, so sealing at rest cannot hide
/// anything here) holds no body of a conversation it is not a member of.
pub fn check_store(
    devices: &[Device],
    bodies: &Bodies,
    dev: Dev,
    at: u64,
) -> Result<(), Violation> {
    if bodies.is_empty() {
        return Ok(());
    }
    let d = &devices[dev];
    let foreign = |h: &ConversationHeader| !admitted(d, h);
    let all = d.store.scan_prefix(b"").expect("memory store");
    let mut own: BTreeMap<[u8; 16], bool> = BTreeMap::new();
    for (key, value) in &all {
        let hit = bodies.find(key, &foreign).or_else(|| {
            // A document the device holds by right is searched as stored;
            // anything else (another document, a mailbox, a key the
            // simulator does not know) inflated too.
            let by_right = doc_of(key).is_some_and(|doc| {
                *own.entry(doc).or_insert_with(|| {
                    doc == TEAM_DOC_ID
                        || bodies
                            .headers
                            .get(&ConversationId(doc))
                            .is_some_and(|h| admitted(d, h))
                })
            });
            if by_right {
                bodies.find(value, &foreign)
            } else {
                bodies.find_deep(value, &foreign)
            }
        });
        if let Some(f) = hit {
            return Err(Violation::new(
                Invariant::NoLeak,
                at,
                vec![dev],
                format!(
                    "d{dev}'s store holds, under key {}, the {}-byte body of a message of conversation {} (\"{}\"), which d{dev} is not a member of",
                    show_key(key),
                    f.len,
                    short(&f.conv),
                    f.title
                ),
            ));
        }
    }
    Ok(())
}

/// Every device's store (the final check).
pub fn check_stores(devices: &[Device], bodies: &Bodies, at: u64) -> Result<(), Violation> {
    (0..devices.len()).try_for_each(|d| check_store(devices, bodies, d, at))
}

fn short(id: &impl std::fmt::Display) -> String {
    id.to_string().chars().take(8).collect()
}

/// A store key for a human: its printable prefix, then hex.
pub fn show_key(key: &[u8]) -> String {
    let text = key
        .iter()
        .position(|b| !(b.is_ascii_graphic()))
        .unwrap_or(key.len());
    let hex: String = key[text..]
        .iter()
        .take(24)
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{}{hex}", String::from_utf8_lossy(&key[..text]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(title: &str) -> ConversationHeader {
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(1);
        let key = huddle::crypto::DeviceKey::generate(&mut rng);
        let kind = huddle::ConversationKind::Group {
            title: title.into(),
            members: Default::default(),
        };
        ConversationHeader::create(&key, kind, 0)
    }

    #[test]
    fn finds_a_foreign_body_anywhere_and_only_a_whole_one() {
        let h = header("Left");
        let body = b"bed 4 obs stable BP 110/70 please review meds given pain score 3";
        let mut b = Bodies::default();
        b.record(&h, body);
        b.record(&h, b"too short to be searched for");
        let all = |_: &ConversationHeader| true;
        let none = |_: &ConversationHeader| false;
        let mut hay = vec![7u8; 1000];
        hay.extend_from_slice(body);
        hay.extend_from_slice(&[9u8; 100]);
        let f = b.find(&hay, &all).expect("found");
        assert_eq!((f.at, f.len), (1000, body.len()));
        assert!(b.find(&hay, &none).is_none(), "a member may hold it");
        assert!(b.find(&body[..body.len() - 1], &all).is_none(), "not whole");
        assert!(b
            .find(b"too short to be searched for, really!", &all)
            .is_none());
        assert!(b.find(&body[..], &all).is_some(), "at both ends");
    }

    #[test]
    fn finds_a_body_inside_a_deflated_change() {
        use automerge::transaction::Transactable;
        let h = header("Left");
        let body: Vec<u8> = b"family called ok transfer ward x-ray ordered "
            .iter()
            .copied()
            .cycle()
            .take(400)
            .collect();
        let mut b = Bodies::default();
        b.record(&h, &body);
        let mut doc = automerge::Automerge::new();
        let mut tx = doc.transaction();
        tx.put(
            automerge::ROOT,
            "m",
            automerge::ScalarValue::Bytes(body.clone()),
        )
        .unwrap();
        tx.commit();
        let mut change = doc.get_changes(&[])[0].clone();
        let packed = change.bytes().to_vec();
        assert_eq!(packed[8], 2, "deflated");
        let all = |_: &ConversationHeader| true;
        let mut hay = b"mail/".to_vec();
        hay.extend_from_slice(&packed);
        assert!(b.find(&hay, &all).is_none(), "not as it is stored");
        assert!(b.find_deep(&hay, &all).is_some(), "but inflated");
        assert!(b.find_deep(&doc.save(), &all).is_some(), "a saved document");
    }
}
