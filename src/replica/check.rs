//! The check every sync message from a peer passes before Automerge parses
//! it: a walk over Automerge 0.12's sync message encoding (and the chunks
//! it carries) that refuses what Automerge would choke on — a Bloom filter
//! that makes it divide by zero or ask for gigabytes, counts that cost
//! more memory decoded than the bytes that carry them, and compressed
//! parts that inflate to more than a message may hold (protocol/sync.md
//! §5.7).
//!
//! Invariant: Automerge never sees a sync message that failed this check;
//! the check itself never panics and allocates nothing that grows with its
//! input (compressed parts are inflated through a fixed buffer and their
//! output dropped, only counted). It refuses nothing Automerge 0.12 itself
//! generates.

use std::io::{self, Read};

use thiserror::Error;

/// Hashes in one list (heads, needs, a have's `last_sync`, a change's
/// dependencies, a document's heads). Each is 32 bytes, so this is a 2 MiB
/// list; Automerge's lists are heads-sized (one per concurrent writer) and
/// far below it.
pub const MAX_HASHES: usize = 1 << 16;
/// `have` entries in one message. Automerge sends none or one; each costs
/// a Bloom filter probe per change we hold when we answer.
pub const MAX_HAVES: usize = 16;
/// Automerge's Bloom filter parameters (sync/bloom.rs: `BITS_PER_ENTRY`,
/// `NUM_PROBES`), which are what any Automerge 0.12 peer sends. The bounds
/// below allow twice them: a filter's bits must be present, so a filter is
/// never larger than its bytes, and probes are the cost of every lookup.
pub const BLOOM_BITS_PER_ENTRY: u32 = 10;
pub const BLOOM_PROBES: u32 = 7;
pub const MAX_BLOOM_BITS_PER_ENTRY: u32 = 2 * BLOOM_BITS_PER_ENTRY;
pub const MAX_BLOOM_PROBES: u32 = 2 * BLOOM_PROBES;
/// Chunks in one message, all change entries together (an entry holds one
/// chunk or several back to back). Automerge decodes each into a structure
/// of a few hundred bytes; a huddle change is itself a few hundred bytes,
/// so a message within the 64 MiB reassembly budget holds fewer.
pub const MAX_CHUNKS: usize = 1 << 18;
/// Actor ids in one chunk. Automerge's are one per writing device.
pub const MAX_ACTORS: usize = 1 << 16;
/// Columns in one column list. Automerge 0.12 writes a few dozen at most;
/// the rest is room for columns a later version adds.
pub const MAX_COLUMNS: usize = 256;
/// What the compressed parts of one message (a compressed change chunk's
/// body, a document chunk's deflated columns) may inflate to, all
/// together. It is the reassembly budget (`NodeConfig::max_reassembly_bytes`,
/// 64 MiB): what a peer can make us hold uncompressed, compression may not
/// multiply. An honest message that inflates past it would, uncompressed,
/// not fit through reassembly either.
pub const MAX_INFLATED: u64 = 64 << 20;

const MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
/// A column spec's deflate bit (storage/columns/column_specification.rs).
const DEFLATE_BIT: u32 = 0b1000;

/// Why a sync message was refused, naming the bound it broke.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CheckError {
    #[error("the sync message ends early while reading {0}")]
    Truncated(&'static str),
    #[error("a varint in {0} is overlong or too large")]
    Varint(&'static str),
    #[error("{what} counts {count}, over the limit of {limit}")]
    TooMany {
        what: &'static str,
        count: u64,
        limit: usize,
    },
    #[error("a Bloom filter uses {0} bits per entry (allowed: 1 to {MAX_BLOOM_BITS_PER_ENTRY})")]
    BloomBitsPerEntry(u32),
    #[error("a Bloom filter uses {0} probes (allowed: 1 to {MAX_BLOOM_PROBES})")]
    BloomProbes(u32),
    #[error("a Bloom filter claims {entries} entries at {bits_per_entry} bits each but holds {held} bytes of bits")]
    BloomBits {
        entries: u32,
        bits_per_entry: u32,
        held: usize,
    },
    #[error("the compressed parts inflate past {MAX_INFLATED} bytes")]
    Inflated,
    #[error("a compressed part is not valid deflate data")]
    Deflate,
    #[error("bytes left over after {0}")]
    Trailing(&'static str),
    #[error("{0}")]
    Invalid(&'static str),
}

impl CheckError {
    /// The message broke a size or count bound (rather than the format).
    pub fn is_limit(&self) -> bool {
        matches!(self, Self::TooMany { .. } | Self::Inflated)
    }
}

/// Checks a sync message from a peer; `Ok` means Automerge may decode it.
pub fn check_sync_message(bytes: &[u8]) -> Result<(), CheckError> {
    check_with_cap(bytes, MAX_INFLATED).map(|_| ())
}

/// [`check_sync_message`] with another inflation cap (tests use a small
/// one); returns how many bytes the compressed parts inflated to.
pub(crate) fn check_with_cap(bytes: &[u8], cap: u64) -> Result<u64, CheckError> {
    let mut c = Cursor(bytes);
    match c.u8("the message type")? {
        0x42 | 0x43 => {}
        _ => return Err(CheckError::Invalid("not an Automerge sync message")),
    }
    // Automerge writes every list of hashes here sorted, each hash once,
    // and trusts that of a peer: asked for a change twice, it rebuilds it
    // twice from its op set and panics (collector.rs:788, fuzz finding
    // `sync_check/crash-needs-twice`); heads out of order end up in the
    // `last_sync` it writes back, which it asserts is sorted (sync.rs:820,
    // `sync_check/crash-heads-unsorted`).
    sorted(
        hashes(&mut c, "heads")?,
        "heads not sorted and unique, as Automerge writes them",
    )?;
    sorted(
        hashes(&mut c, "needs")?,
        "needs not sorted and unique, as Automerge writes them",
    )?;
    for _ in 0..c.count("haves", MAX_HAVES)? {
        let last_sync = hashes(&mut c, "a have's last_sync")?;
        sorted(
            last_sync,
            "a have's last_sync not sorted and unique, as Automerge writes it",
        )?;
        bloom(c.bytes("a Bloom filter")?)?;
    }
    let mut budget = Budget {
        chunks: 0,
        inflated: 0,
        cap,
    };
    for _ in 0..c.count("change entries", MAX_CHUNKS)? {
        let entry = c.bytes("a change entry")?;
        if entry.is_empty() {
            return Err(CheckError::Invalid("an empty change entry"));
        }
        chunks(entry, &mut budget)?;
    }
    if !c.0.is_empty() {
        // Flag bytes: Automerge reads each one, whatever its value.
        c.bytes("the flags")?;
    }
    c.end("the sync message")?;
    Ok(budget.inflated)
}

/// A Bloom filter as Automerge writes it: empty (no entries), or entries,
/// bits per entry, probes, then exactly the bits the entries need.
/// Automerge divides by the bit count, so entries without bits panic it.
fn bloom(b: &[u8]) -> Result<(), CheckError> {
    if b.is_empty() {
        return Ok(());
    }
    let mut c = Cursor(b);
    let entries = c.u32("a Bloom filter")?;
    let bits_per_entry = c.u32("a Bloom filter")?;
    let probes = c.u32("a Bloom filter")?;
    if entries == 0 {
        return Err(CheckError::Invalid(
            "a Bloom filter with parameters but no entries",
        ));
    }
    if !(1..=MAX_BLOOM_BITS_PER_ENTRY).contains(&bits_per_entry) {
        return Err(CheckError::BloomBitsPerEntry(bits_per_entry));
    }
    if !(1..=MAX_BLOOM_PROBES).contains(&probes) {
        return Err(CheckError::BloomProbes(probes));
    }
    // Automerge's `bits_capacity`, exact here (the product is below 2^37).
    let need = (u64::from(entries) * u64::from(bits_per_entry)).div_ceil(8);
    if c.0.len() as u64 != need {
        return Err(CheckError::BloomBits {
            entries,
            bits_per_entry,
            held: c.0.len(),
        });
    }
    Ok(())
}

/// What the chunks of one message have used so far.
struct Budget {
    chunks: usize,
    inflated: u64,
    cap: u64,
}

impl Budget {
    /// Inflates `deflated` into nothing, counting; refuses past the cap
    /// without inflating more than one byte beyond it.
    fn inflate(&mut self, deflated: &[u8]) -> Result<(), CheckError> {
        let left = self.cap.saturating_sub(self.inflated);
        let mut out = flate2::bufread::DeflateDecoder::new(deflated).take(left + 1);
        let n = io::copy(&mut out, &mut io::sink()).map_err(|_| CheckError::Deflate)?;
        self.inflated += n;
        if n > left {
            return Err(CheckError::Inflated);
        }
        Ok(())
    }
}

/// One or more chunks back to back, as Automerge's `load_incremental`
/// reads them (each: magic, checksum, type, length, data).
fn chunks(mut bytes: &[u8], budget: &mut Budget) -> Result<(), CheckError> {
    while !bytes.is_empty() {
        budget.chunks += 1;
        if budget.chunks > MAX_CHUNKS {
            return Err(CheckError::TooMany {
                what: "chunks",
                count: budget.chunks as u64,
                limit: MAX_CHUNKS,
            });
        }
        let mut c = Cursor(bytes);
        if c.take(4, "a chunk's magic bytes")? != MAGIC {
            return Err(CheckError::Invalid(
                "a chunk without Automerge's magic bytes",
            ));
        }
        // The checksum is Automerge's to verify: a second hash of every
        // byte would cost more than this whole walk.
        c.take(4, "a chunk's checksum")?;
        let kind = c.u8("a chunk's type")?;
        let len = c.uleb("a chunk's length")?;
        let data = c.take(len, "a chunk's data")?;
        match kind {
            0 => document(data, budget)?,
            1 => change(data)?,
            // A compressed change: its body, deflated. What it inflates to
            // is a change body Automerge parses like any other.
            2 => budget.inflate(data)?,
            3 => {
                return Err(CheckError::Invalid(
                    "a bundle chunk (Automerge's sync sends none)",
                ))
            }
            _ => return Err(CheckError::Invalid("an unknown chunk type")),
        }
        bytes = c.0;
    }
    Ok(())
}

/// A change chunk's data (storage/change.rs `parse_following_header`).
fn change(data: &[u8]) -> Result<(), CheckError> {
    let mut c = Cursor(data);
    hashes(&mut c, "a change's dependencies")?;
    actor(&mut c)?;
    c.uleb("a change's seq")?;
    if c.uleb("a change's start op")? == 0 {
        return Err(CheckError::Invalid("a change whose start op is zero"));
    }
    c.ileb("a change's time")?;
    let len = c.uleb("a change's message")?;
    let message = c.take(len, "a change's message")?;
    if std::str::from_utf8(message).is_err() {
        return Err(CheckError::Invalid("a change message that is not UTF-8"));
    }
    for _ in 0..c.count("a change's other actors", MAX_ACTORS)? {
        actor(&mut c)?;
    }
    let mut total = 0u64;
    columns(&mut c)?.each(|spec, len| {
        if spec & DEFLATE_BIT != 0 {
            return Err(CheckError::Invalid("a change with a deflated column"));
        }
        total = total.saturating_add(len);
        Ok(())
    })?;
    c.take(total, "a change's ops")?;
    // What is left is the change's extra bytes, kept as they are.
    Ok(())
}

/// A document chunk's data (storage/document.rs `Document::parse`): every
/// deflated column is inflated against the budget.
fn document(data: &[u8], budget: &mut Budget) -> Result<(), CheckError> {
    let mut c = Cursor(data);
    for _ in 0..c.count("a document's actors", MAX_ACTORS)? {
        actor(&mut c)?;
    }
    let heads = hashes(&mut c, "a document's heads")?.len() / 32;
    let change_cols = columns(&mut c)?;
    let ops_cols = columns(&mut c)?;
    for cols in [change_cols, ops_cols] {
        cols.each(|spec, len| {
            let col = c.take(len, "a document's column")?;
            if spec & DEFLATE_BIT != 0 {
                budget.inflate(col)?;
            }
            Ok(())
        })?;
    }
    if !c.0.is_empty() {
        for _ in 0..heads {
            c.uleb("a document's head index")?;
        }
    }
    c.end("a document chunk")
}

/// A column list: count, then (spec, length) pairs in Automerge's normal
/// order (by spec, the deflate bit aside).
fn columns<'a>(c: &mut Cursor<'a>) -> Result<Columns<'a>, CheckError> {
    let start = c.0;
    let n = c.count("columns", MAX_COLUMNS)?;
    let mut prev = 0;
    for _ in 0..n {
        let spec = c.u32("a column spec")?;
        c.uleb("a column length")?;
        if spec & !DEFLATE_BIT < prev {
            return Err(CheckError::Invalid("columns out of Automerge's order"));
        }
        prev = spec & !DEFLATE_BIT;
    }
    Ok(Columns(&start[..start.len() - c.0.len()]))
}

/// A column list already checked by [`columns`], read again when its
/// columns' data is reached (rather than held in an allocation).
struct Columns<'a>(&'a [u8]);

impl Columns<'_> {
    /// Each column's spec and length.
    fn each(
        &self,
        mut f: impl FnMut(u32, u64) -> Result<(), CheckError>,
    ) -> Result<(), CheckError> {
        let mut c = Cursor(self.0);
        for _ in 0..c.uleb("columns")? {
            let spec = c.u32("a column spec")?;
            f(spec, c.uleb("a column length")?)?;
        }
        Ok(())
    }
}

fn actor(c: &mut Cursor<'_>) -> Result<(), CheckError> {
    let len = c.uleb("an actor id")?;
    c.take(len, "an actor id")?;
    Ok(())
}

/// `hashes` (32 bytes each) in strictly increasing order, or `why`.
fn sorted(hashes: &[u8], why: &'static str) -> Result<(), CheckError> {
    let mut pairs = hashes.chunks_exact(32).zip(hashes.chunks_exact(32).skip(1));
    match pairs.all(|(a, b)| a < b) {
        true => Ok(()),
        false => Err(CheckError::Invalid(why)),
    }
}

/// A count, then that many 32-byte hashes; returns their bytes.
fn hashes<'a>(c: &mut Cursor<'a>, what: &'static str) -> Result<&'a [u8], CheckError> {
    let n = c.count(what, MAX_HASHES)?;
    c.take(n as u64 * 32, what)
}

/// The unread rest of some bytes. Reads follow Automerge's own parsers
/// (storage/parse.rs, parse/leb128.rs), so whatever they accept, this does.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: u64, what: &'static str) -> Result<&'a [u8], CheckError> {
        if n > self.0.len() as u64 {
            return Err(CheckError::Truncated(what));
        }
        let (head, rest) = self.0.split_at(n as usize);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, CheckError> {
        Ok(self.take(1, what)?[0])
    }

    fn bytes(&mut self, what: &'static str) -> Result<&'a [u8], CheckError> {
        let len = self.uleb(what)?;
        self.take(len, what)
    }

    fn count(&mut self, what: &'static str, limit: usize) -> Result<usize, CheckError> {
        let count = self.uleb(what)?;
        if count > limit as u64 {
            return Err(CheckError::TooMany { what, count, limit });
        }
        Ok(count as usize)
    }

    fn end(&self, what: &'static str) -> Result<(), CheckError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(CheckError::Trailing(what))
        }
    }

    /// Automerge's `leb128_u64`: at most ten bytes, no overflow, and no
    /// trailing zero byte.
    fn uleb(&mut self, what: &'static str) -> Result<u64, CheckError> {
        let mut value = 0u64;
        let mut shift = 0u32;
        loop {
            let byte = self.u8(what)?;
            if shift < 64 {
                value |= u64::from(byte & 0x7f) << shift;
            }
            shift += 7;
            if byte & 0x80 == 0 {
                if (shift > 64 && byte > 1) || (shift > 7 && byte == 0) {
                    return Err(CheckError::Varint(what));
                }
                return Ok(value);
            }
            if shift > 64 {
                return Err(CheckError::Varint(what));
            }
        }
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, CheckError> {
        u32::try_from(self.uleb(what)?).map_err(|_| CheckError::Varint(what))
    }

    /// Automerge's `leb128_i64`.
    fn ileb(&mut self, what: &'static str) -> Result<i64, CheckError> {
        let mut value = 0i64;
        let mut shift = 0u32;
        let mut prev = 0u8;
        loop {
            let byte = self.u8(what)?;
            if shift < 64 {
                value |= i64::from(byte & 0x7f) << shift;
            }
            shift += 7;
            if byte & 0x80 == 0 {
                let overlong =
                    (byte == 0 && prev & 0x40 == 0) || (byte == 0x7f && prev & 0x40 != 0);
                if (shift > 64 && byte != 0 && byte != 0x7f) || (shift > 7 && overlong) {
                    return Err(CheckError::Varint(what));
                }
                if shift < 64 && byte & 0x40 != 0 {
                    value |= -1i64 << shift;
                }
                return Ok(value);
            }
            if shift > 64 {
                return Err(CheckError::Varint(what));
            }
            prev = byte;
        }
    }
}

mod actors;
pub use actors::check_actor_indices;

#[cfg(test)]
mod tests;
