//! The upgrade of a plain store to an encrypted one (storage.md §8.4): the
//! plain database in `db/` is rewritten, pair by pair, into a new encrypted
//! database, which replaces it only once it is whole and on disk; then the
//! plain files are overwritten and removed. Upgrading in place would leave
//! the plaintext in sled's log.
//!
//! Invariants: at every moment one of the two databases is whole (the new
//! one is built under `sealed.new/` and renamed to `sealed/` after a flush;
//! `db/` goes only after that), so a crash loses nothing and the next open
//! goes on from where it stopped; it runs under the data directory's lock.

use std::fs;
use std::io::Write;
use std::path::Path;

use super::sled_store::{io_error, open_sled, sled_error, DB_DIR, SEALED_DIR};
use super::StoreError;
use crate::atrest::Keys;

const BUILDING: &str = "sealed.new";
/// Pairs per batch while copying.
const BATCH: usize = 4096;

/// Finishes an upgrade of the store in `dir` if a plain database is there.
pub(super) fn finish(dir: &Path, keys: &Keys) -> Result<(), StoreError> {
    let plain = dir.join(DB_DIR);
    if !plain.exists() {
        return Ok(());
    }
    let sealed = dir.join(SEALED_DIR);
    if !sealed.exists() {
        let building = dir.join(BUILDING);
        if building.exists() {
            fs::remove_dir_all(&building).map_err(|e| io_error("cannot remove", &building, e))?;
        }
        let copied = copy(&plain, &building, keys)?;
        fs::rename(&building, &sealed).map_err(|e| io_error("cannot rename", &building, e))?;
        sync_dir(dir)?;
        tracing::info!("encrypted {copied} stored records into a new database");
    }
    scrub_and_remove(&plain)?;
    sync_dir(dir)?;
    tracing::info!("removed the unencrypted database");
    Ok(())
}

/// Copies every pair of the plain database into a new encrypted one.
fn copy(plain: &Path, building: &Path, keys: &Keys) -> Result<usize, StoreError> {
    let from = open_sled(plain)?;
    let to = open_sled(building)?;
    let mut batch = sled::Batch::default();
    let (mut n, mut pending) = (0, 0);
    for pair in from.iter() {
        let (k, v) = pair.map_err(|e| sled_error("cannot read the unencrypted database", e))?;
        let (k, v) = super::sealed::seal(keys, &k, &v);
        batch.insert(k, v);
        n += 1;
        pending += 1;
        if pending == BATCH {
            to.apply_batch(std::mem::take(&mut batch))
                .map_err(|e| sled_error("cannot write the encrypted database", e))?;
            pending = 0;
        }
    }
    to.apply_batch(batch)
        .map_err(|e| sled_error("cannot write the encrypted database", e))?;
    to.flush()
        .map_err(|e| sled_error("cannot flush the encrypted database", e))?;
    Ok(n)
}

/// Overwrites each file under `dir` with zeros, then removes the
/// directory. On a copy-on-write file system or an SSD the old blocks may
/// survive the overwrite: full-disk encryption is what covers those
/// (README, "Encryption at rest").
fn scrub_and_remove(dir: &Path) -> Result<(), StoreError> {
    let entries = fs::read_dir(dir).map_err(|e| io_error("cannot read", dir, e))?;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            scrub_and_remove(&path)?;
            continue;
        }
        if let Err(e) = zero(&path) {
            tracing::warn!(
                "could not overwrite {} before removing it: {e}",
                path.display()
            );
        }
    }
    fs::remove_dir_all(dir).map_err(|e| io_error("cannot remove", dir, e))
}

/// Overwrites a file with zeros (and fsyncs it), leaving it in place. A
/// stretch that reads as zeros already (a sparse file's holes among them)
/// is not written, so a hole is never made real.
fn zero(path: &Path) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = fs::OpenOptions::new().read(true).write(true).open(path)?;
    let zeros = vec![0u8; 1 << 20];
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    loop {
        f.seek(SeekFrom::Start(at))?;
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().any(|b| *b != 0) {
            f.seek(SeekFrom::Start(at))?;
            f.write_all(&zeros[..n])?;
        }
        at += n as u64;
    }
    f.sync_all()
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error("cannot sync", dir, e))
}

/// Overwrites a plain file with zeros, then removes it (a missing file is
/// fine; the overwrite is best effort, as in [`finish`]: a failure to
/// overwrite is logged and the file still removed).
pub(crate) fn scrub_file(path: &Path) -> std::io::Result<()> {
    match zero(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => tracing::warn!(
            "could not overwrite {} before removing it: {e}",
            path.display()
        ),
    }
    match fs::remove_file(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}
