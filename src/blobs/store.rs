//! Blobs on disk (protocol/storage.md §6): one file per blob under
//! `blobs/`, chunk-aligned, named by a keyed hash of the blob's hash (a
//! device key of its own, `blobs/key`), so a file name says nothing about
//! which file it holds and the security officer's encryption can seal each
//! chunk in place and keep range reads.
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
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::meta::{BlobHash, MAX_BLOB_LEN};
use super::tree::{chunk_count, chunk_len, outline, verify_chunk, Cv, CHUNK_LEN};
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
    origin: Option<Origin>,
}

/// A conversation and one of its messages that references a blob.
pub type Origin = (ConversationId, MessageId);

/// Bytes of a `.meta` file: size, flags, hash, and an origin or zeros.
const META_LEN: usize = 8 + 1 + 32 + 16 + 16;

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
    held: HashMap<BlobHash, Held>,
}

pub struct BlobStore {
    dir: PathBuf,
    key: [u8; 32],
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
    /// Opens (creating) the blob directory `dir`.
    pub fn open(dir: &Path) -> Result<BlobStore, BlobError> {
        fs::create_dir_all(dir)?;
        let key_path = dir.join(KEY_FILE);
        let key = match fs::read(&key_path) {
            Ok(k) if k.len() == 32 => k.try_into().expect("32 bytes"),
            Ok(_) => return Err(io::Error::other("blobs/key is damaged").into()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let mut k = [0u8; 32];
                getrandom(&mut k)?;
                let tmp = dir.join("key.tmp");
                let mut f = File::create(&tmp)?;
                f.write_all(&k)?;
                f.sync_all()?;
                fs::rename(&tmp, &key_path)?;
                sync_dir(dir)?;
                k
            }
            Err(e) => return Err(e.into()),
        };
        let mut used = 0;
        for e in fs::read_dir(dir)? {
            let e = e?;
            if e.file_name().to_string_lossy().ends_with(".data") {
                used += e.metadata()?.len();
            }
        }
        Ok(BlobStore {
            dir: dir.to_owned(),
            key,
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

    fn path(&self, hash: &BlobHash, ext: &str) -> PathBuf {
        let name = blake3::keyed_hash(&self.key, &hash.0);
        let hex = data_encoding::HEXLOWER.encode(&name.as_bytes()[..16]);
        self.dir.join(format!("{hex}.{ext}"))
    }

    fn write_meta(&self, hash: &BlobHash, h: &Held) -> io::Result<()> {
        let mut b = h.size.to_be_bytes().to_vec();
        b.push(u8::from(h.own) | (u8::from(h.reached) << 1));
        b.extend_from_slice(&hash.0);
        let (c, m) = h
            .origin
            .unwrap_or((ConversationId([0; 16]), MessageId([0; 16])));
        b.extend_from_slice(&c.0);
        b.extend_from_slice(&m.0);
        let tmp = self.path(hash, "meta.tmp");
        fs::write(&tmp, &b)?;
        File::open(&tmp)?.sync_all()?;
        fs::rename(&tmp, self.path(hash, "meta"))
    }

    /// Reads what the disk holds of `hash`, verifying every chunk.
    fn load(&self, hash: &BlobHash) -> io::Result<Option<Held>> {
        let meta = match fs::read(self.path(hash, "meta")) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        if meta.len() != META_LEN || meta[9..41] != hash.0 {
            return Ok(None);
        }
        let size = u64::from_be_bytes(meta[..8].try_into().expect("8"));
        if size == 0 || size > MAX_BLOB_LEN {
            return Ok(None);
        }
        let n = chunk_count(size) as usize;
        let outline = if n == 1 {
            Some(Vec::new())
        } else {
            match fs::read(self.path(hash, "outline")) {
                Ok(b) if b.len() == n * 32 => {
                    let cvs: Vec<Cv> = b.chunks(32).map(|c| c.try_into().expect("32")).collect();
                    hash.outlines(&cvs, size).then_some(cvs)
                }
                _ => None,
            }
        };
        let mut have = vec![false; n];
        if let Some(o) = &outline {
            let f = File::open(self.path(hash, "data"))?;
            let mut buf = vec![0u8; CHUNK_LEN as usize];
            for (i, h) in have.iter_mut().enumerate() {
                let len = chunk_len(size, i as u64) as usize;
                if f.read_exact_at(&mut buf[..len], i as u64 * CHUNK_LEN)
                    .is_ok()
                {
                    *h = verify_chunk(&hash.0, size, o, i as u64, &buf[..len]);
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
    fn with<R>(&self, hash: &BlobHash, f: impl FnOnce(&mut Held) -> R) -> io::Result<Option<R>> {
        let mut i = self.lock();
        if !i.held.contains_key(hash) {
            match self.load(hash)? {
                Some(h) => {
                    i.held.insert(*hash, h);
                }
                None => return Ok(None),
            }
        }
        Ok(i.held.get_mut(hash).map(f))
    }

    pub fn status(&self, hash: &BlobHash) -> io::Result<Option<Status>> {
        self.with(hash, |h| h.status())
    }

    /// Attaches `bytes` on this device: written whole and fsynced, ours.
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
        if let Some(s) = self.status(&hash)? {
            if s.complete() {
                if !s.own {
                    self.with(&hash, |h| h.own = true)?;
                    let i = self.lock();
                    self.write_meta(&hash, &i.held[&hash])?;
                }
                return Ok(hash);
            }
        }
        self.reserve(&hash, size, None)?;
        let o = outline(bytes);
        let data = self.path(&hash, "data");
        let mut f = OpenOptions::new().write(true).truncate(false).open(&data)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        if !o.is_empty() {
            let tmp = self.path(&hash, "outline.tmp");
            fs::write(&tmp, o.concat())?;
            File::open(&tmp)?.sync_all()?;
            fs::rename(&tmp, self.path(&hash, "outline"))?;
        }
        let held = Held {
            size,
            outline: Some(o),
            have: vec![true; chunk_count(size) as usize],
            own: true,
            reached: false,
            origin: None,
        };
        self.write_meta(&hash, &held)?;
        sync_dir(&self.dir)?;
        self.lock().held.insert(hash, held);
        Ok(hash)
    }

    /// Makes room for `hash` of `size` bytes if it is new: counted against
    /// the quota, its data file made at its full length (sparse).
    fn reserve(&self, hash: &BlobHash, size: u64, origin: Option<Origin>) -> Result<(), BlobError> {
        if self.status(hash)?.is_some() {
            return Ok(());
        }
        {
            let mut i = self.lock();
            if i.used.saturating_add(size) > i.quota {
                return Err(BlobError::Quota {
                    quota: i.quota,
                    used: i.used,
                });
            }
            i.used += size;
        }
        let f = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(self.path(hash, "data"))?;
        f.set_len(size)?;
        let held = Held {
            size,
            outline: (chunk_count(size) == 1).then(Vec::new),
            have: vec![false; chunk_count(size) as usize],
            own: false,
            reached: false,
            origin,
        };
        self.write_meta(hash, &held)?;
        self.lock().held.insert(*hash, held);
        Ok(())
    }

    /// Begins (or resumes) holding `hash` of `size` bytes, fetched for
    /// `origin`: the outline if known, and which chunks are held.
    pub fn begin(
        &self,
        hash: &BlobHash,
        size: u64,
        origin: Origin,
    ) -> Result<(Option<Vec<Cv>>, Vec<bool>), BlobError> {
        self.reserve(hash, size, Some(origin))?;
        self.with(hash, |h| (h.outline.clone(), h.have.clone()))?
            .ok_or(BlobError::NotHeld)
    }

    /// Keeps a verified outline.
    pub fn put_outline(&self, hash: &BlobHash, cvs: &[Cv]) -> Result<(), BlobError> {
        fs::write(self.path(hash, "outline"), cvs.concat())?;
        self.with(hash, |h| h.outline = Some(cvs.to_vec()))?;
        Ok(())
    }

    /// Keeps a verified chunk.
    pub fn put_chunk(&self, hash: &BlobHash, index: u32, bytes: &[u8]) -> Result<(), BlobError> {
        let f = OpenOptions::new()
            .write(true)
            .open(self.path(hash, "data"))?;
        f.write_all_at(bytes, u64::from(index) * CHUNK_LEN)?;
        self.with(hash, |h| {
            if let Some(x) = h.have.get_mut(index as usize) {
                *x = true;
            }
        })?;
        Ok(())
    }

    /// The outline, if held.
    pub fn outline_of(&self, hash: &BlobHash) -> io::Result<Option<Vec<Cv>>> {
        Ok(self.with(hash, |h| h.outline.clone())?.flatten())
    }

    /// Chunk `index`, if held (read and verified again).
    pub fn chunk(&self, hash: &BlobHash, index: u32) -> io::Result<Option<Vec<u8>>> {
        let Some((size, outline, held)) = self.with(hash, |h| {
            let held = h.have.get(index as usize).copied().unwrap_or(false);
            (h.size, h.outline.clone(), held)
        })?
        else {
            return Ok(None);
        };
        let (Some(outline), true) = (outline, held) else {
            return Ok(None);
        };
        let mut buf = vec![0u8; chunk_len(size, index.into()) as usize];
        File::open(self.path(hash, "data"))?
            .read_exact_at(&mut buf, u64::from(index) * CHUNK_LEN)?;
        if !verify_chunk(&hash.0, size, &outline, index.into(), &buf) {
            // The disk changed under us: held no longer.
            self.with(hash, |h| h.have[index as usize] = false)?;
            return Ok(None);
        }
        Ok(Some(buf))
    }

    /// Bytes `start..end` of a wholly held blob.
    pub fn read_range(&self, hash: &BlobHash, start: u64, end: u64) -> Result<Vec<u8>, BlobError> {
        let s = self.status(hash)?.ok_or(BlobError::NotHeld)?;
        if !s.complete() || start > end || end > s.size {
            return Err(BlobError::NotHeld);
        }
        let mut buf = vec![0u8; (end - start) as usize];
        let mut f = File::open(self.path(hash, "data"))?;
        std::io::Seek::seek(&mut f, io::SeekFrom::Start(start))?;
        f.read_exact(&mut buf)?;
        Ok(buf)
    }

    /// Marks our own blob as having reached another device.
    pub fn mark_reached(&self, hash: &BlobHash) -> Result<(), BlobError> {
        let changed = self.with(hash, |h| !std::mem::replace(&mut h.reached, true))?;
        if changed == Some(true) {
            let i = self.lock();
            if let Some(h) = i.held.get(hash) {
                self.write_meta(hash, h)?;
            }
        }
        Ok(())
    }

    /// Blobs fetched in part (a fetch cut by a stop or a crash), with the
    /// message each was fetched for: to resume at start.
    pub fn unfinished(&self) -> io::Result<Vec<(BlobHash, Origin)>> {
        let mut out = Vec::new();
        for e in fs::read_dir(&self.dir)? {
            let path = e?.path();
            if path.extension().is_none_or(|x| x != "meta") {
                continue;
            }
            let Ok(meta) = fs::read(&path) else { continue };
            if meta.len() != META_LEN || meta[8] & 1 == 1 {
                continue;
            }
            let hash = BlobHash(meta[9..41].try_into().expect("32"));
            let (Some(origin), Some(s)) = (origin_of(&meta), self.status(&hash)?) else {
                continue;
            };
            if !s.complete() {
                out.push((hash, origin));
            }
        }
        Ok(out)
    }

    /// Removes what we hold of a blob that is not our own (a fetch given
    /// up); returns whether anything went.
    pub fn remove(&self, hash: &BlobHash) -> Result<bool, BlobError> {
        let Some(s) = self.status(hash)? else {
            return Ok(false);
        };
        if s.own {
            return Ok(false);
        }
        for ext in ["data", "outline", "meta"] {
            match fs::remove_file(self.path(hash, ext)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        let mut i = self.lock();
        i.held.remove(hash);
        i.used = i.used.saturating_sub(s.size);
        Ok(true)
    }
}

fn origin_of(meta: &[u8]) -> Option<Origin> {
    let c = ConversationId(meta.get(41..57)?.try_into().ok()?);
    let m = MessageId(meta.get(57..73)?.try_into().ok()?);
    (c.0 != [0; 16]).then_some((c, m))
}

fn getrandom(buf: &mut [u8]) -> io::Result<()> {
    use rand_core::RngCore;
    rand_core::OsRng
        .try_fill_bytes(buf)
        .map_err(|e| io::Error::other(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "huddle-blobs-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_fetched_blob_survives_a_reopen_and_a_damaged_chunk_is_fetched_again() {
        let dir = tmp();
        let data: Vec<u8> = (0..(3 * CHUNK_LEN as usize + 10))
            .map(|i| (i % 97) as u8)
            .collect();
        let hash = BlobHash::of(&data);
        let s = BlobStore::open(&dir).unwrap();
        let origin = (ConversationId([1; 16]), MessageId([2; 16]));
        let (o, have) = s.begin(&hash, data.len() as u64, origin).unwrap();
        assert!(o.is_none() && have == vec![false; 4]);
        s.put_outline(&hash, &outline(&data)).unwrap();
        for i in [0u32, 2, 3] {
            let c = CHUNK_LEN as usize;
            let at = i as usize * c;
            s.put_chunk(&hash, i, &data[at..(at + c).min(data.len())])
                .unwrap();
        }
        assert_eq!(s.status(&hash).unwrap().unwrap().held_chunks, 3);
        // No file is named by the hash.
        for e in fs::read_dir(&dir).unwrap() {
            assert!(!e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains(&hash.to_hex()[..16]));
        }
        drop(s);
        // Damage chunk 2 on disk: after a reopen it is not held.
        let s = BlobStore::open(&dir).unwrap();
        let f = OpenOptions::new()
            .write(true)
            .open(s.path(&hash, "data"))
            .unwrap();
        f.write_all_at(b"X", 2 * CHUNK_LEN + 5).unwrap();
        let (_, have) = s.begin(&hash, data.len() as u64, origin).unwrap();
        assert_eq!(have, vec![true, false, false, true]);
        assert_eq!(s.unfinished().unwrap(), vec![(hash, origin)]);
        assert_eq!(s.usage().0, data.len() as u64);
        assert!(s.remove(&hash).unwrap());
        assert_eq!(s.usage().0, 0);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn own_blobs_are_whole_at_once_and_the_quota_and_limit_hold() {
        let dir = tmp();
        let s = BlobStore::open(&dir).unwrap();
        s.set_quota(1_000_000);
        let data = vec![7u8; 600_000];
        let h = s.put_own(&data, 25 << 20).unwrap();
        let st = s.status(&h).unwrap().unwrap();
        assert!(st.complete() && st.own && !st.reached);
        assert_eq!(s.read_range(&h, 10, 20).unwrap(), vec![7u8; 10]);
        assert!(matches!(
            s.put_own(&[1u8; 500_000], 25 << 20),
            Err(BlobError::Quota { .. })
        ));
        assert!(matches!(
            s.put_own(&[1u8; 2000], 1000),
            Err(BlobError::TooLarge { .. })
        ));
        assert!(!s.remove(&h).unwrap(), "our own blob is never removed");
        s.mark_reached(&h).unwrap();
        drop(s);
        let s = BlobStore::open(&dir).unwrap();
        assert!(s.status(&h).unwrap().unwrap().reached);
        fs::remove_dir_all(&dir).unwrap();
    }
}
