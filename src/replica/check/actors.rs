//! The actor indices in a change's op columns. Automerge 0.12 parses a
//! change without checking that an op's object, key or predecessor names
//! an actor the change lists, and `Change::decode` then unwraps a lookup
//! that fails (change.rs:331, fuzz finding `member_peer/crash-actor-index`).
//! The append-only rules decode every change a peer sends, so they run this
//! walk first (protocol/sync.md §7.5).
//!
//! Invariant: reads only the run lengths and values of the actor columns,
//! in one pass over bytes already held; allocates nothing.

use super::{actor, columns, hashes, CheckError, Cursor, MAGIC, MAX_ACTORS};

/// The column type of a column of actor indices (Automerge's
/// `ColumnType::Actor`, the spec's low three bits).
const ACTOR_COLUMN: u32 = 1;
const COLUMN_TYPE_BITS: u32 = 0b111;
/// An uncompressed change chunk (what `Change::raw_bytes` holds, whether
/// the change came compressed or not).
const CHANGE_CHUNK: u8 = 1;

/// Checks that every actor index in the change chunk `chunk` (header
/// included) names one of the change's actors: its own (0) or one of the
/// others it lists.
pub fn check_actor_indices(chunk: &[u8]) -> Result<(), CheckError> {
    let mut c = Cursor(chunk);
    if c.take(4, "a change's magic bytes")? != MAGIC {
        return Err(CheckError::Invalid(
            "a change without Automerge's magic bytes",
        ));
    }
    c.take(4, "a change's checksum")?;
    if c.u8("a change's chunk type")? != CHANGE_CHUNK {
        return Err(CheckError::Invalid("not an uncompressed change chunk"));
    }
    let len = c.uleb("a change's length")?;
    let mut c = Cursor(c.take(len, "a change's data")?);
    hashes(&mut c, "a change's dependencies")?;
    actor(&mut c)?;
    c.uleb("a change's seq")?;
    c.uleb("a change's start op")?;
    c.ileb("a change's time")?;
    let len = c.uleb("a change's message")?;
    c.take(len, "a change's message")?;
    let others = c.count("a change's other actors", MAX_ACTORS)?;
    for _ in 0..others {
        actor(&mut c)?;
    }
    let actors = others as u64 + 1;
    columns(&mut c)?.each(|spec, len| {
        let column = c.take(len, "a change's ops")?;
        if spec & COLUMN_TYPE_BITS == ACTOR_COLUMN {
            indices_below(column, actors)?;
        }
        Ok(())
    })
}

/// An RLE column of unsigned integers (Automerge's `RleDecoder`): runs of
/// one repeated value (a positive length), of literal values (a negative
/// length), or of nulls (zero, then how many). Every value read must be
/// below `limit`. Each value takes a byte at least, so the loop ends
/// within the column's length however long a run claims to be.
fn indices_below(column: &[u8], limit: u64) -> Result<(), CheckError> {
    let mut c = Cursor(column);
    while !c.0.is_empty() {
        let run = c.ileb("an actor column's run")?;
        let values = match run {
            0 => {
                c.uleb("an actor column's nulls")?;
                0
            }
            n if n > 0 => 1,
            n => n.unsigned_abs(),
        };
        for _ in 0..values {
            if c.uleb("an actor index")? >= limit {
                return Err(CheckError::Invalid(
                    "an op names an actor the change does not list",
                ));
            }
        }
    }
    Ok(())
}
