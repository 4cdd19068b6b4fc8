//! Sealing the blobs of a data directory as it is encrypted (storage.md
//! §8.4): each blob kept plain is written again sealed, under its new name,
//! and fsynced before its plain files are overwritten and removed; the
//! plain store's naming key goes last (`BlobStore::open`).
//!
//! Invariant: a crash at any point loses no blob. The sealed `.meta` is
//! written last, after the sealed data and outline are fsynced, so a blob
//! whose sealed `.meta` loads is whole sealed and its plain files are only
//! removed (never read again); one without is sealed again from its plain
//! files, which are all still there (the plain `.meta` is removed first,
//! and only after the sealed copy is whole). Files of no blob (an upload
//! cut before its `.meta`, a temporary file) are removed, so nothing plain
//! is left once the naming key goes.

use std::fs::{self, File, OpenOptions};
use std::io;

use crate::store::upgrade_sealed::scrub_file;

use super::{BlobError, BlobStore, Key, META_LEN, META_PLACE};
use crate::blobs::meta::BlobHash;
use crate::ids::ConversationId;

/// Seals every blob `plain` holds into `sealed` (the same directory), then
/// removes every file that is not part of a sealed blob.
pub(super) fn seal_all(plain: &BlobStore, sealed: &BlobStore) -> Result<(), BlobError> {
    let mut n = 0;
    for e in fs::read_dir(&plain.dir)? {
        let path = e?.path();
        if path.extension().is_none_or(|x| x != "meta") {
            continue;
        }
        let Some(key) = key_of(plain, &path)? else {
            continue;
        };
        // A sealed `.meta` is written last, so one that loads means the
        // sealed copy is whole (a crash came after it): only the plain
        // files are left to go.
        if sealed.load(&key)?.is_none() {
            match plain.load(&key) {
                Ok(Some(held)) => {
                    seal_one(plain, sealed, &key, &held)?;
                    n += 1;
                }
                Ok(None) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        // The sealed copy's names on disk before a plain byte goes (also
        // when an earlier run wrote it and a crash came before this).
        File::open(&plain.dir)?.sync_all()?;
        // The plain `.meta` goes first: without it, nothing plain is read
        // as a blob again.
        for ext in ["meta", "data", "outline"] {
            scrub_file(&plain.path(&key, ext))?;
        }
    }
    remove_unsealed(sealed)?;
    if n > 0 {
        tracing::info!("encrypted {n} attachments");
    }
    Ok(())
}

/// The blob a `.meta` file of `store` names, if it is one of its own:
/// `None` for a file that is not (missing, too long, does not open, of
/// another length or name); any other error is returned, so a read that
/// failed for a moment never makes a blob look like a stray file.
fn key_of(store: &BlobStore, path: &std::path::Path) -> io::Result<Option<Key>> {
    let meta = match store.disk.read_small(path, META_PLACE, META_LEN as u64) {
        Ok(meta) => meta,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::InvalidData
            ) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    if meta.len() != META_LEN {
        return Ok(None);
    }
    let key = Key::new(
        ConversationId(meta[41..57].try_into().expect("16")),
        BlobHash(meta[9..41].try_into().expect("32")),
    );
    Ok((store.path(&key, "meta") == path).then_some(key))
}

/// Removes (overwritten first) every file in the directory that is not a
/// sealed blob's: an upload cut before its `.meta` was written, a blob of
/// an older format, temporary files. What is left holds no plain byte.
fn remove_unsealed(sealed: &BlobStore) -> Result<(), BlobError> {
    let mut keep = std::collections::HashSet::new();
    let mut all = Vec::new();
    for e in fs::read_dir(&sealed.dir)? {
        let path = e?.path();
        if path.extension().is_some_and(|x| x == "meta") {
            if let Some(key) = key_of(sealed, &path)? {
                for ext in ["meta", "data", "outline"] {
                    keep.insert(sealed.path(&key, ext));
                }
            }
        }
        all.push(path);
    }
    for path in all {
        let name = path.file_name().unwrap_or_default();
        if path.is_file() && name != super::KEY_FILE && !keep.contains(&path) {
            scrub_file(&path)?;
        }
    }
    Ok(())
}

pub(super) fn seal_one(
    plain: &BlobStore,
    sealed: &BlobStore,
    key: &Key,
    held: &super::Held,
) -> Result<(), BlobError> {
    let from = File::open(plain.path(key, "data"))?;
    let to = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(sealed.path(key, "data"))?;
    to.set_len(sealed.disk.data_len(held.size))?;
    for (i, have) in held.have.iter().enumerate() {
        if !have {
            continue;
        }
        if let Some(chunk) = plain
            .disk
            .read_chunk(&from, &key.hash.0, held.size, i as u64)?
        {
            sealed
                .disk
                .write_chunk(&to, &key.hash.0, i as u64, &chunk)?;
        }
    }
    to.sync_all()?;
    if let Some(outline) = held.outline.as_ref().filter(|o| !o.is_empty()) {
        sealed.disk.write_small(
            &sealed.path(key, "outline"),
            &BlobStore::outline_place(&key.hash),
            &outline.concat(),
            true,
        )?;
    }
    sealed.write_meta(key, held)?;
    Ok(())
}
