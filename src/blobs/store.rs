//! Blobs on disk (protocol/storage.md §6): one file per blob under
//! `blobs/`, chunk-aligned, named by a keyed hash of the blob's hash (a
//! device key of its own, `blobs/key`, or in an encrypted data directory
//! one derived from the data key), so a file name says nothing about which
//! file it holds. In an encrypted data directory each chunk is sealed in
//! place (`store/disk.rs`, storage.md §8.3), keeping range reads.
//!
//! Per blob: `<name>.data` (its bytes at their offsets; a chunk not yet
//! fetched reads as zeros), `<name>.outline` (the chaining values, once
//! known), `<name>.meta` (size, and whether it is our own and has reached
//! another device).
//!
//! Invariants:
//! - what a blob holds is never taken on trust from the disk: when a blob
//!   is first used after start, every chunk is read and verified, and only
//!   those that verify count as held (so a chunk cut short by a crash is
//!   fetched again, and needs no fsync);
//! - our own blobs (attached here) are written whole and fsynced before the
//!   message that carries them can be sent, and are never removed by a
//!   quota;
//! - the sum of blob sizes stays under the quota: a fetch that would pass
//!   it is refused before any byte is written.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use disk::Disk;

pub use super::meta::Key;
use super::meta::{BlobHash, MAX_BLOB_LEN};
use super::tree::{chunk_count, outline, verify_chunk, Cv, CHUNK_LEN};
use crate::ids::{ConversationId, MessageId};

/// The default total of blob bytes a device keeps.
pub const DEFAULT_QUOTA: u64 = 4 * 1024 * 1024 * 1024;
const KEY_FILE: &str = "key";

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("the attachments would pass this device's quota of {quota} bytes ({used} in use)")]
    Quota { quota: u64, used: u64 },
    #[error("an attachment of {size} bytes is over the limit of {limit} bytes")]
    TooLarge { size: u64, limit: u64 },
    #[error("an empty file cannot be attached")]
    Empty,
    #[error("this device does not hold that attachment")]
    NotHeld,
    #[error("the attachment's size does not match the copy this conversation already holds")]
    SizeMismatch,
    #[error("the attachment store: {0}")]
    Io(#[from] io::Error),
}

/// What this device holds of one blob.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Status {
    pub size: u64,
    pub chunks: u64,
    pub held_chunks: u64,
    /// Attached on this device.
    pub own: bool,
    /// Every chunk of it has been sent to another device (our own blobs).
    pub reached: bool,
}

impl Status {
    pub fn complete(&self) -> bool {
        self.held_chunks == self.chunks
    }
}

struct Held {
    size: u64,
    outline: Option<Vec<Cv>>,
    have: Vec<bool>,
    own: bool,
    reached: bool,
    /// The message it was first fetched for (not for our own).
    origin: Option<MessageId>,
}

/// The place a `.meta` file is sealed under (its contents name its blob
/// and conversation, checked on every read).
const META_PLACE: &[u8] = b"meta";
/// Bytes of a `.meta` file: size, flags, hash, conversation, and the
/// message it was first fetched for (zeros for our own).
const META_LEN: usize = 8 + 1 + 32 + 16 + 16;
/// Most bytes of an outline file (that of a 256 MiB blob).
const MAX_OUTLINE_FILE: u64 = (MAX_BLOB_LEN / CHUNK_LEN) * 32;

impl Held {
    fn status(&self) -> Status {
        Status {
            size: self.size,
            chunks: self.have.len() as u64,
            held_chunks: self.have.iter().filter(|h| **h).count() as u64,
            own: self.own,
            reached: self.reached,
        }
    }
}

struct Inner {
    used: u64,
    quota: u64,
    held: HashMap<Key, Held>,
}

pub struct BlobStore {
    dir: PathBuf,
    /// Names the files (`blobs/key`, or derived from the data key).
    key: zeroize::Zeroizing<[u8; 32]>,
    disk: Disk,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for BlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobStore").field("dir", &self.dir).finish()
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl BlobStore {
    /// Opens (creating) the blob directory `dir`, sealed with `keys` in an
    /// encrypted data directory. Blobs kept plain there (from before the
    /// directory was encrypted) are sealed first, each whole before its
    /// plain files go (`migrate.rs`).
    pub fn open(dir: &Path, keys: Option<&crate::atrest::Keys>) -> Result<BlobStore, BlobError> {
        fs::create_dir_all(dir)?;
        let Some(keys) = keys else {
            let key = disk::plain_name_key(dir, KEY_FILE)?;
            return BlobStore::open_with(dir, key, Disk::new(None));
        };
        let sealed = || {
            BlobStore::open_with(
                dir,
                keys.blob_names.clone(),
                Disk::new(Some(keys.blobs.clone())),
            )
        };
        if !dir.join(KEY_FILE).exists() {
            return sealed();
        }
        let plain =
            BlobStore::open_with(dir, disk::plain_name_key(dir, KEY_FILE)?, Disk::new(None))?;
        migrate::seal_all(&plain, &sealed()?)?;
        fs::remove_file(dir.join(KEY_FILE))?;
        sync_dir(dir)?;
        // Opened again: its usage is counted from the sealed files alone.
        sealed()
    }

    fn open_with(
        dir: &Path,
        key: zeroize::Zeroizing<[u8; 32]>,
        disk: Disk,
    ) -> Result<BlobStore, BlobError> {
        let mut used = 0;
        for e in fs::read_dir(dir)? {
            let e = e?;
            if e.file_name().to_string_lossy().ends_with(".data") {
                used += disk.size_of(e.metadata()?.len());
            }
        }
        Ok(BlobStore {
            dir: dir.to_owned(),
            key,
            disk,
            inner: Mutex::new(Inner {
                used,
                quota: DEFAULT_QUOTA,
                held: HashMap::new(),
            }),
        })
    }

    pub fn set_quota(&self, quota: u64) {
        self.lock().quota = quota;
    }

    /// Bytes the blobs take, and the quota.
    pub fn usage(&self) -> (u64, u64) {
        let i = self.lock();
        (i.used, i.quota)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn path(&self, key: &Key, ext: &str) -> PathBuf {
        let name = blake3::keyed_hash(&self.key, &[&key.conversation.0[..], &key.hash.0].concat());
        // (The same 16 bytes whether the key is plain or derived.)
        let hex = data_encoding::HEXLOWER.encode(&name.as_bytes()[..16]);
        self.dir.join(format!("{hex}.{ext}"))
    }

    fn write_meta(&self, key: &Key, h: &Held) -> io::Result<()> {
        let mut b = h.size.to_be_bytes().to_vec();
        b.push(u8::from(h.own) | (u8::from(h.reached) << 1));
        b.extend_from_slice(&key.hash.0);
        b.extend_from_slice(&key.conversation.0);
        b.extend_from_slice(&h.origin.unwrap_or(MessageId([0; 16])).0);
        self.disk
            .write_small(&self.path(key, "meta"), META_PLACE, &b, true)
    }

    fn outline_place(hash: &BlobHash) -> Vec<u8> {
        [b"outline".as_slice(), &hash.0].concat()
    }

    /// Reads what the disk holds of `key`, verifying every chunk.
    fn load(&self, key: &Key) -> io::Result<Option<Held>> {
        let meta = match self
            .disk
            .read_small(&self.path(key, "meta"), META_PLACE, META_LEN as u64)
        {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => return Ok(None),
            Err(e) => return Err(e),
        };
        if meta.len() != META_LEN || meta[9..41] != key.hash.0 || meta[41..57] != key.conversation.0
        {
            return Ok(None);
        }
        let hash = &key.hash;
        let size = u64::from_be_bytes(meta[..8].try_into().expect("8"));
        if size == 0 || size > MAX_BLOB_LEN {
            return Ok(None);
        }
        let n = chunk_count(size) as usize;
        let outline = if n == 1 {
            Some(Vec::new())
        } else {
            match self.disk.read_small(
                &self.path(key, "outline"),
                &Self::outline_place(hash),
                MAX_OUTLINE_FILE,
            ) {
                Ok(b) if b.len() == n * 32 => {
                    let cvs: Vec<Cv> = b.chunks(32).map(|c| c.try_into().expect("32")).collect();
                    hash.outlines(&cvs, size).then_some(cvs)
                }
                _ => None,
            }
        };
        let mut have = vec![false; n];
        if let Some(o) = &outline {
            let f = File::open(self.path(key, "data"))?;
            for (i, h) in have.iter_mut().enumerate() {
                if let Some(chunk) = self.disk.read_chunk(&f, &hash.0, size, i as u64)? {
                    *h = verify_chunk(&hash.0, size, o, i as u64, &chunk);
                }
            }
        }
        Ok(Some(Held {
            size,
            outline,
            have,
            own: meta[8] & 1 == 1,
            reached: meta[8] & 2 == 2,
            origin: origin_of(&meta),
        }))
    }

    /// Runs `f` on what we hold of `hash`, reading it first if need be.
    fn with<R>(&self, key: &Key, f: impl FnOnce(&mut Held) -> R) -> io::Result<Option<R>> {
        let mut i = self.lock();
        if !i.held.contains_key(key) {
            match self.load(key)? {
                Some(h) => {
                    i.held.insert(*key, h);
                }
                None => return Ok(None),
            }
        }
        Ok(i.held.get_mut(key).map(f))
    }

    pub fn status(&self, key: &Key) -> io::Result<Option<Status>> {
        self.with(key, |h| h.status())
    }

    /// Takes `bytes` to attach (an upload): written whole and fsynced,
    /// ours, staged until a message attaches it ([`BlobStore::adopt`]).
    /// `limit` is the team's largest attachment.
    pub fn put_own(&self, bytes: &[u8], limit: u64) -> Result<BlobHash, BlobError> {
        let size = bytes.len() as u64;
        if size == 0 {
            return Err(BlobError::Empty);
        }
        let limit = limit.min(MAX_BLOB_LEN);
        if size > limit {
            return Err(BlobError::TooLarge { size, limit });
        }
        let hash = BlobHash::of(bytes);
        let key = Key::staged(hash);
        if self.status(&key)?.is_some_and(|s| s.complete()) {
            return Ok(hash);
        }
        self.reserve(&key, size, None, true)?;
        let o = outline(bytes);
        let f = OpenOptions::new()
            .write(true)
            .open(self.path(&key, "data"))?;
        self.disk.write_all(&f, &hash.0, bytes)?;
        f.sync_all()?;
        if !o.is_empty() {
            self.disk.write_small(
                &self.path(&key, "outline"),
                &Self::outline_place(&hash),
                &o.concat(),
                true,
            )?;
        }
        let held = Held {
            size,
            outline: Some(o),
            have: vec![true; chunk_count(size) as usize],
            own: true,
            reached: false,
            origin: None,
        };
        self.write_meta(&key, &held)?;
        sync_dir(&self.dir)?;
        self.lock().held.insert(key, held);
        Ok(hash)
    }

    /// Attaches the staged upload `hash` in `conversation` (its files move
    /// there, durably); `Ok(size)` if held whole there after.
    pub fn adopt(&self, conversation: ConversationId, hash: &BlobHash) -> Result<u64, BlobError> {
        let to = Key::new(conversation, *hash);
        if let Some(s) = self.status(&to)?.filter(|s| s.complete()) {
            return Ok(s.size);
        }
        let from = Key::staged(*hash);
        let s = self
            .status(&from)?
            .filter(|s| s.complete())
            .ok_or(BlobError::NotHeld)?;
        // A partial entry of another size there (fetched for a message that
        // lied about it) is dropped: ours is the genuine one.
        self.remove(&to)?;
        let mut i = self.lock();
        let mut held = i.held.remove(&from).ok_or(BlobError::NotHeld)?;
        for ext in ["data", "outline"] {
            match fs::rename(self.path(&from, ext), self.path(&to, ext)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound && ext == "outline" => {}
                Err(e) => return Err(e.into()),
            }
        }
        held.own = true;
        self.write_meta(&to, &held)?;
        let _ = fs::remove_file(self.path(&from, "meta"));
        sync_dir(&self.dir)?;
        i.held.insert(to, held);
        Ok(s.size)
    }

    /// Makes room for `key` of `size` bytes if it is new: counted against
    /// the quota, its data file made at its full length (sparse). Checked
    /// and counted under one lock, so two callers cannot both make it.
    fn reserve(
        &self,
        key: &Key,
        size: u64,
        origin: Option<MessageId>,
        own: bool,
    ) -> Result<(), BlobError> {
        self.status(key)?;
        let mut i = self.lock();
        if let Some(h) = i.held.get(key) {
            if h.size != size {
                return Err(BlobError::SizeMismatch);
            }
            return Ok(());
        }
        if i.used.saturating_add(size) > i.quota {
            return Err(BlobError::Quota {
                quota: i.quota,
                used: i.used,
            });
        }
        let f = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(self.path(key, "data"))?;
        f.set_len(self.disk.data_len(size))?;
        let held = Held {
            size,
            outline: (chunk_count(size) == 1).then(Vec::new),
            have: vec![false; chunk_count(size) as usize],
            own,
            reached: false,
            origin,
        };
        self.write_meta(key, &held)?;
        i.used += size;
        i.held.insert(*key, held);
        Ok(())
    }

    /// Begins (or resumes) holding `key` of `size` bytes, fetched for
    /// `message`: the outline if known, and which chunks are held. Refused
    /// if this conversation holds the blob under another size.
    pub fn begin(
        &self,
        key: &Key,
        size: u64,
        message: MessageId,
    ) -> Result<(Option<Vec<Cv>>, Vec<bool>), BlobError> {
        // Another size's entry that holds nothing verified was begun for a
        // message that lied about the size (or this one does): the entry
        // that first holds a verified chunk keeps the key.
        if let Some(s) = self.status(key)? {
            if s.size != size && !s.own && s.held_chunks == 0 {
                self.remove(key)?;
            }
        }
        self.reserve(key, size, Some(message), false)?;
        self.with(key, |h| (h.outline.clone(), h.have.clone()))?
            .ok_or(BlobError::NotHeld)
    }

    /// Keeps a verified outline.
    pub fn put_outline(&self, key: &Key, cvs: &[Cv]) -> Result<(), BlobError> {
        self.disk.write_small(
            &self.path(key, "outline"),
            &Self::outline_place(&key.hash),
            &cvs.concat(),
            false,
        )?;
        self.with(key, |h| h.outline = Some(cvs.to_vec()))?;
        Ok(())
    }

    /// Keeps a verified chunk.
    pub fn put_chunk(&self, key: &Key, index: u32, bytes: &[u8]) -> Result<(), BlobError> {
        let f = OpenOptions::new()
            .write(true)
            .open(self.path(key, "data"))?;
        self.disk
            .write_chunk(&f, &key.hash.0, index.into(), bytes)?;
        self.with(key, |h| {
            if let Some(x) = h.have.get_mut(index as usize) {
                *x = true;
            }
        })?;
        Ok(())
    }

    /// The outline, if held.
    pub fn outline_of(&self, key: &Key) -> io::Result<Option<Vec<Cv>>> {
        Ok(self.with(key, |h| h.outline.clone())?.flatten())
    }

    /// Chunk `index`, if held (read and verified again).
    pub fn chunk(&self, key: &Key, index: u32) -> io::Result<Option<Vec<u8>>> {
        let Some((size, outline, held)) = self.with(key, |h| {
            let held = h.have.get(index as usize).copied().unwrap_or(false);
            (h.size, h.outline.clone(), held)
        })?
        else {
            return Ok(None);
        };
        let (Some(outline), true) = (outline, held) else {
            return Ok(None);
        };
        let f = File::open(self.path(key, "data"))?;
        let read = self.disk.read_chunk(&f, &key.hash.0, size, index.into())?;
        let Some(buf) = read.filter(|b| verify_chunk(&key.hash.0, size, &outline, index.into(), b))
        else {
            // The disk changed under us: held no longer.
            self.with(key, |h| h.have[index as usize] = false)?;
            return Ok(None);
        };
        Ok(Some(buf))
    }

    /// Bytes `start..end` of a wholly held blob.
    pub fn read_range(&self, key: &Key, start: u64, end: u64) -> Result<Vec<u8>, BlobError> {
        let s = self.status(key)?.ok_or(BlobError::NotHeld)?;
        if !s.complete() || start > end || end > s.size {
            return Err(BlobError::NotHeld);
        }
        let f = File::open(self.path(key, "data"))?;
        Ok(self.disk.read_range(&f, &key.hash.0, s.size, start, end)?)
    }

    /// Marks our own blob as having reached another device.
    pub fn mark_reached(&self, key: &Key) -> Result<(), BlobError> {
        let changed = self.with(key, |h| !std::mem::replace(&mut h.reached, true))?;
        if changed == Some(true) {
            let i = self.lock();
            if let Some(h) = i.held.get(key) {
                self.write_meta(key, h)?;
            }
        }
        Ok(())
    }

    /// Blobs fetched in part (a fetch cut by a stop or a crash), with the
    /// message each was fetched for: to resume at start.
    pub fn unfinished(&self) -> io::Result<Vec<(Key, MessageId)>> {
        let mut out = Vec::new();
        for e in fs::read_dir(&self.dir)? {
            let path = e?.path();
            if path.extension().is_none_or(|x| x != "meta") {
                continue;
            }
            let Ok(meta) = self.disk.read_small(&path, META_PLACE, META_LEN as u64) else {
                continue;
            };
            if meta.len() != META_LEN || meta[8] & 1 == 1 {
                continue;
            }
            let key = Key::new(
                ConversationId(meta[41..57].try_into().expect("16")),
                BlobHash(meta[9..41].try_into().expect("32")),
            );
            let (Some(message), Some(s)) = (origin_of(&meta), self.status(&key)?) else {
                continue;
            };
            if !s.complete() {
                out.push((key, message));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Removes what we hold of a blob that is not our own (a fetch given
    /// up with nothing received, or another size's partial entry); returns
    /// whether anything went.
    pub fn remove(&self, key: &Key) -> Result<bool, BlobError> {
        let Some(s) = self.status(key)? else {
            return Ok(false);
        };
        if s.own {
            return Ok(false);
        }
        for ext in ["data", "outline", "meta"] {
            match fs::remove_file(self.path(key, ext)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        let mut i = self.lock();
        i.held.remove(key);
        i.used = i.used.saturating_sub(s.size);
        Ok(true)
    }
}

fn origin_of(meta: &[u8]) -> Option<MessageId> {
    let m = MessageId(meta.get(57..73)?.try_into().ok()?);
    (m.0 != [0; 16]).then_some(m)
}

mod disk;
mod migrate;
#[cfg(test)]
mod tests;
