//! A blob's BLAKE3 tree cut at chunk boundaries (protocol/blobs.md §2).
//!
//! A blob is addressed by its plain BLAKE3 hash. Its chunks are 128 KiB
//! (128 BLAKE3 chunks, a power of two), so each chunk is a whole subtree of
//! BLAKE3's own tree and has a chaining value; the *outline* is those values
//! in order. The outline is checked once against the hash (merged up the
//! tree exactly as BLAKE3 does, through `blake3::hazmat`, the interface
//! Bao is built on), and then every chunk is checked alone against its
//! value as it arrives. A blob of one chunk has an empty outline: the chunk
//! is checked against the hash itself.
//!
//! Invariant: `root(&outline(data), len) == blake3::hash(data)` for every
//! input (tested against `blake3::hash` over sizes around every boundary).

use blake3::hazmat::{
    left_subtree_len, merge_subtrees_non_root, merge_subtrees_root, ChainingValue, HasherExt, Mode,
};

/// Bytes in one chunk (the last may be shorter).
pub const CHUNK_LEN: u64 = 128 * 1024;

/// A chaining value of one chunk (or subtree).
pub type Cv = ChainingValue;

/// How many chunks a blob of `size` bytes has.
pub fn chunk_count(size: u64) -> u64 {
    size.div_ceil(CHUNK_LEN)
}

/// The length of chunk `index` of a blob of `size` bytes (0 past the end).
pub fn chunk_len(size: u64, index: u64) -> u64 {
    size.saturating_sub(index.saturating_mul(CHUNK_LEN))
        .min(CHUNK_LEN)
}

/// The chaining value of chunk `index` whose bytes are `bytes`.
pub fn chunk_cv(index: u64, bytes: &[u8]) -> Cv {
    blake3::Hasher::new()
        .set_input_offset(index * CHUNK_LEN)
        .update(bytes)
        .finalize_non_root()
}

/// The outline of `data`: every chunk's chaining value, or nothing for a
/// blob of at most one chunk.
pub fn outline(data: &[u8]) -> Vec<Cv> {
    if data.len() as u64 <= CHUNK_LEN {
        return Vec::new();
    }
    data.chunks(CHUNK_LEN as usize)
        .enumerate()
        .map(|(i, c)| chunk_cv(i as u64, c))
        .collect()
}

/// The hash an outline of a blob of `size` bytes stands for; `None` if the
/// outline has the wrong number of values for that size.
pub fn root(outline: &[Cv], size: u64) -> Option<[u8; 32]> {
    let n = chunk_count(size);
    if n < 2 || outline.len() as u64 != n {
        return None;
    }
    let (l, r) = split(outline, size);
    Some(*merge_subtrees_root(&l, &r, Mode::Hash).as_bytes())
}

/// The two halves' chaining values of a subtree of `len` bytes (more than
/// one chunk), as BLAKE3 splits it: the left holds the largest power of two
/// of BLAKE3 chunks that leaves something on the right. That is always a
/// whole number of our chunks, since ours are a power of two of BLAKE3's.
fn split(cvs: &[Cv], len: u64) -> (Cv, Cv) {
    let left = left_subtree_len(len);
    let k = (left / CHUNK_LEN) as usize;
    (subtree(&cvs[..k], left), subtree(&cvs[k..], len - left))
}

fn subtree(cvs: &[Cv], len: u64) -> Cv {
    if cvs.len() == 1 {
        return cvs[0];
    }
    let (l, r) = split(cvs, len);
    merge_subtrees_non_root(&l, &r, Mode::Hash)
}

/// Whether `bytes` are chunk `index` of the blob `hash` of `size` bytes
/// whose outline is `outline` (already checked against `hash`).
pub fn verify_chunk(hash: &[u8; 32], size: u64, outline: &[Cv], index: u64, bytes: &[u8]) -> bool {
    if index >= chunk_count(size) || bytes.len() as u64 != chunk_len(size, index) {
        return false;
    }
    if chunk_count(size) == 1 {
        return blake3::hash(bytes).as_bytes() == hash;
    }
    outline
        .get(index as usize)
        .is_some_and(|cv| *cv == chunk_cv(index, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn the_outline_merges_to_blake3_of_the_whole() {
        let c = CHUNK_LEN as usize;
        for n in [
            c + 1,
            2 * c,
            2 * c + 1,
            3 * c - 1,
            3 * c,
            4 * c + 7,
            5 * c,
            8 * c,
            8 * c + 1,
            13 * c + 1000,
        ] {
            let d = data(n);
            let o = outline(&d);
            assert_eq!(o.len() as u64, chunk_count(n as u64), "len {n}");
            assert_eq!(
                root(&o, n as u64),
                Some(*blake3::hash(&d).as_bytes()),
                "len {n}"
            );
            assert_eq!(root(&o[1..], n as u64), None);
        }
    }

    #[test]
    fn each_chunk_verifies_alone_and_a_changed_one_does_not() {
        let n = 3 * CHUNK_LEN as usize + 5;
        let d = data(n);
        let o = outline(&d);
        let h = *blake3::hash(&d).as_bytes();
        for (i, c) in d.chunks(CHUNK_LEN as usize).enumerate() {
            assert!(verify_chunk(&h, n as u64, &o, i as u64, c));
            let mut bad = c.to_vec();
            bad[0] ^= 1;
            assert!(!verify_chunk(&h, n as u64, &o, i as u64, &bad));
            // The right bytes at the wrong index do not verify either.
            assert!(!verify_chunk(&h, n as u64, &o, (i as u64 + 1) % 4, c));
        }
        let small = data(1000);
        let hs = *blake3::hash(&small).as_bytes();
        assert!(verify_chunk(&hs, 1000, &[], 0, &small));
        assert!(!verify_chunk(&hs, 1000, &[], 0, &small[1..]));
    }
}
