//! The on-disk [`Store`]: one sled database in `<data dir>/db`, guarded by an
//! exclusive lock on `<data dir>/huddle.lock`.
//!
//! Invariants:
//! - a write is durable only after [`Store::flush`] returns (sled may make it
//!   durable earlier, never later); a batch given to [`Store::apply`] survives
//!   a crash whole or not at all;
//! - the data directory is private to its owner (`crate::private_dir`),
//!   checked before the lock is taken and tightened again once sled has
//!   created its files;
//! - one process per data directory: the lock is taken before sled is opened
//!   and held for as long as the [`SledStore`] lives, and a second opener is
//!   told the pid of the holder (the file holds it only while the lock is
//!   held; a refused opener gives the holder a moment to write it).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use std::sync::Arc;

use super::{sealed, Store, StoreError, StoreOp};
use crate::atrest::Keys;

const LOCK_FILE: &str = "huddle.lock";
/// The plain database (an unencrypted data directory, or one from before
/// encryption at rest, until it is upgraded).
pub(super) const DB_DIR: &str = "db";
/// The encrypted database.
pub(super) const SEALED_DIR: &str = "sealed";
const BLOB_DIR: &str = "blobs";
/// The file inside the sled directory that sled itself `flock`s.
const SLED_LOCKED_FILE: &str = "db";
/// How long `open` waits for a previous sled instance of this process to let
/// go of its files (see [`wait_for_sled_release`]).
const SLED_RELEASE_DEADLINE: Duration = Duration::from_secs(2);

/// A [`Store`] backed by sled.
pub struct SledStore {
    // Field order matters: sled is dropped before the lock is released.
    db: sled::Db,
    /// The data key's keys when the data directory is encrypted.
    seal: Option<Arc<Keys>>,
    /// The attachments' files, under the same lock (`blobs/store.rs`).
    blobs: std::sync::Arc<crate::blobs::store::BlobStore>,
    /// Holds the exclusive lock on `huddle.lock` for the life of the store.
    _lock: Lock,
}

/// The locked `huddle.lock`, holding our pid while we hold the lock.
struct Lock(File);

impl Drop for Lock {
    /// Our pid goes before the lock does, so that the file names a holder
    /// only while it holds the lock (a crash leaves it, and the next holder
    /// writes over it).
    fn drop(&mut self) {
        let _ = self.0.set_len(0);
    }
}

impl SledStore {
    /// Opens (creating if needed) the store in `dir`.
    ///
    /// Fails with [`StoreError::Locked`] if another process (or another
    /// `SledStore` in this one) has the directory open, and with
    /// [`StoreError::NewerFormat`] if the data was written by a newer huddle.
    pub fn open(dir: &Path) -> Result<SledStore, StoreError> {
        if dir.join(crate::atrest::WRAP_FILE).exists() {
            return Err(StoreError::Encrypted);
        }
        SledStore::open_as(dir, None)
    }

    /// Opens (creating if needed) the encrypted store in `dir` with the
    /// data key's `keys` (storage.md §8). A plain store left in `db/` is
    /// first rewritten, encrypted, into a new database, and its files are
    /// removed: this is the upgrade of a data directory from before
    /// encryption at rest, and it goes on after a crash from where it was.
    pub fn open_sealed(dir: &Path, keys: Arc<Keys>) -> Result<SledStore, StoreError> {
        SledStore::open_as(dir, Some(keys))
    }

    /// Encrypts this plain store in `dir` with `keys` (as
    /// [`SledStore::open_sealed`] does a plain store it finds), without
    /// letting go of the data directory's lock in between: `huddle
    /// passphrase set` writes `key.wrap` while it holds this store, so no
    /// other command can open the plain store meanwhile.
    pub fn encrypt(self, dir: &Path, keys: Arc<Keys>) -> Result<SledStore, StoreError> {
        let SledStore {
            db, blobs, _lock, ..
        } = self;
        drop(blobs);
        drop(db);
        SledStore::open_locked(dir, Some(keys), _lock)
    }

    fn open_as(dir: &Path, seal: Option<Arc<Keys>>) -> Result<SledStore, StoreError> {
        create_private_dir(dir)?;
        // Before anything of ours goes in: a directory someone else could
        // write is refused, and what an earlier huddle left readable is
        // made owner-only.
        protect(dir)?;
        let lock = take_lock(&dir.join(LOCK_FILE))?;
        SledStore::open_locked(dir, seal, lock)
    }

    fn open_locked(
        dir: &Path,
        seal: Option<Arc<Keys>>,
        lock: Lock,
    ) -> Result<SledStore, StoreError> {
        let db_dir = match &seal {
            None => dir.join(DB_DIR),
            Some(keys) => {
                super::upgrade_sealed::finish(dir, keys)?;
                dir.join(SEALED_DIR)
            }
        };
        let db = open_sled(&db_dir)?;

        // sled creates its files with the process's umask, which only the
        // binary sets (`private_dir::owner_only_umask`); a library user
        // gets them tightened here.
        protect(dir)?;

        let blob_dir = dir.join(BLOB_DIR);
        let blobs =
            crate::blobs::store::BlobStore::open(&blob_dir, seal.as_deref()).map_err(|e| {
                io_error(
                    "cannot open the attachments",
                    &blob_dir,
                    std::io::Error::other(e.to_string()),
                )
            })?;
        let mut store = SledStore {
            db,
            seal,
            blobs: std::sync::Arc::new(blobs),
            _lock: lock,
        };
        super::check_format(&mut store)?;
        Ok(store)
    }

    /// Whether this store encrypts what it keeps.
    pub fn is_sealed(&self) -> bool {
        self.seal.is_some()
    }

    /// The attachments' files.
    pub fn blobs(&self) -> &std::sync::Arc<crate::blobs::store::BlobStore> {
        &self.blobs
    }

    /// A reader of documents for [`super::load_lazy`]: it shares the
    /// database, so it reads what this store has written.
    pub fn loader(&self) -> super::Loader {
        super::Loader(Arc::new(SledReader(self.db.clone(), self.seal.clone())))
    }

    /// Whether another process holds the store of `dir` open now, and its
    /// pid if it has written it: `None` if the store is free (or was never
    /// made). Creates nothing; takes the lock for a moment only to look, so
    /// an opener that tries in that moment is told it is locked.
    pub fn holder(dir: &Path) -> Result<Option<Option<u32>>, StoreError> {
        let path = dir.join(LOCK_FILE);
        let mut file = match OpenOptions::new().read(true).open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error("cannot open the lock file", &path, e)),
        };
        match file.try_lock() {
            // Dropping `file` lets go at once.
            Ok(()) => Ok(None),
            Err(TryLockError::WouldBlock) => Ok(Some(holder_pid(&mut file))),
            Err(TryLockError::Error(e)) => Err(io_error("cannot lock", &path, e)),
        }
    }

    /// Bytes the database occupies on disk (for benchmarks); 0 if sled
    /// cannot read its own file sizes.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}

impl Store for SledStore {
    fn apply(&mut self, ops: &[StoreOp]) -> Result<(), StoreError> {
        // The ops are folded into one key -> final value map first, so that
        // a range delete also removes keys put earlier in the same batch
        // (which the tree cannot see yet) and a later put overrides it.
        let sealed_ops;
        let ops = match &self.seal {
            None => ops,
            Some(keys) => {
                sealed_ops = seal_ops(keys, ops);
                &sealed_ops
            }
        };
        let mut writes: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
        for op in ops {
            match op {
                StoreOp::Put { key, value } => {
                    writes.insert(key.clone(), Some(value.clone()));
                }
                StoreOp::Delete { key } => {
                    writes.insert(key.clone(), None);
                }
                StoreOp::DeleteRange { from, to } => {
                    if from >= to {
                        continue;
                    }
                    for key in self.db.range(from.as_slice()..to.as_slice()).keys() {
                        let key = key.map_err(|e| sled_error("cannot read the database", e))?;
                        writes.insert(key.to_vec(), None);
                    }
                    for (_, value) in writes.range_mut(from.clone()..to.clone()) {
                        *value = None;
                    }
                }
            }
        }

        let mut batch = sled::Batch::default();
        for (key, value) in writes {
            match value {
                Some(value) => batch.insert(key, value),
                None => batch.remove(key),
            }
        }
        self.db
            .apply_batch(batch)
            .map_err(|e| sled_error("cannot write to the database", e))
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        self.db
            .flush()
            .map(|_| ())
            .map_err(|e| sled_error("cannot flush the database to disk", e))
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let read = |key: &[u8]| {
            self.db
                .get(key)
                .map(|v| v.map(|v| v.to_vec()))
                .map_err(|e| sled_error("cannot read the database", e))
        };
        match &self.seal {
            None => read(key),
            Some(keys) => {
                let stored = keys.names.physical(key);
                read(&stored)?
                    .map(|v| sealed::open_value(keys, key, &stored, &v))
                    .transpose()
            }
        }
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
        scan(&self.db, self.seal.as_deref(), prefix)
    }
}

/// The batch as stored in an encrypted database: hashed keys, sealed
/// values (a range over one document maps to a range: `atrest::names`).
fn seal_ops(keys: &Keys, ops: &[StoreOp]) -> Vec<StoreOp> {
    ops.iter()
        .map(|op| match op {
            StoreOp::Put { key, value } => {
                let (key, value) = sealed::seal(keys, key, value);
                StoreOp::Put { key, value }
            }
            StoreOp::Delete { key } => StoreOp::Delete {
                key: keys.names.physical(key),
            },
            StoreOp::DeleteRange { from, to } => StoreOp::DeleteRange {
                from: keys.names.physical(from),
                to: keys.names.physical(to),
            },
        })
        .collect()
}

/// Every key-value pair under `prefix`, for the store and its reader alike.
fn scan(db: &sled::Db, seal: Option<&Keys>, prefix: &[u8]) -> Result<super::KeyValues, StoreError> {
    let stored = |prefix: &[u8]| {
        db.scan_prefix(prefix).map(|kv| {
            kv.map(|(k, v)| (k.to_vec(), v.to_vec()))
                .map_err(|e| sled_error("cannot read the database", e))
        })
    };
    match seal {
        None => stored(prefix).collect(),
        Some(keys) => sealed::open_scan(keys, prefix, stored(&keys.names.physical(prefix))),
    }
}

struct SledReader(sled::Db, Option<Arc<Keys>>);

impl super::DocLoader for SledReader {
    fn load_doc(&self, id: &[u8; 16]) -> Result<super::StoredDoc, StoreError> {
        super::doc_from_records(scan(
            &self.0,
            self.1.as_deref(),
            &super::keys::doc_prefix(id),
        )?)
    }

    fn scan(&self, prefix: &[u8]) -> Result<super::KeyValues, StoreError> {
        scan(&self.0, self.1.as_deref(), prefix)
    }
}

/// Opens the sled database in `db_dir`.
pub(super) fn open_sled(db_dir: &Path) -> Result<sled::Db, StoreError> {
    wait_for_sled_release(&db_dir.join(SLED_LOCKED_FILE))?;
    sled::Config::new().path(db_dir).open().map_err(|e| {
        sled_error(
            &format!("cannot open the database in {}", db_dir.display()),
            e,
        )
    })
}

/// Turns a sled error into one sentence: `doing` says what we were doing.
pub(super) fn sled_error(doing: &str, e: sled::Error) -> StoreError {
    match e {
        sled::Error::Io(e) => StoreError::Io(format!("{doing}: {e}")),
        sled::Error::Corruption { at, .. } => StoreError::Corrupt(match at {
            Some(at) => format!("the database file is corrupt at {at:?}"),
            None => "the database file is corrupt".into(),
        }),
        sled::Error::Unsupported(why) => StoreError::Io(format!("{doing}: {why}")),
        sled::Error::ReportableBug(why) => {
            StoreError::Io(format!("{doing}: internal sled error: {why}"))
        }
        sled::Error::CollectionNotFound(_) => {
            StoreError::Io(format!("{doing}: a sled tree is missing"))
        }
    }
}

pub(super) fn io_error(doing: &str, path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Io(format!("{doing} {}: {e}", path.display()))
}

/// Creates `dir` (and its parents) readable by its owner only.
fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .map_err(|e| io_error("cannot create the data directory", dir, e))
}

fn protect(dir: &Path) -> Result<(), StoreError> {
    crate::private_dir::protect(dir).map_err(|e| StoreError::NotPrivate(e.to_string()))
}

/// Takes the exclusive lock on `path` and records our pid in it.
fn take_lock(path: &Path) -> Result<Lock, StoreError> {
    // No truncate: the file may hold the pid of a live holder, which a
    // refused opener reads back.
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .map_err(|e| io_error("cannot open the lock file", path, e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            return Err(StoreError::Locked {
                pid: holder_pid(&mut file),
            })
        }
        Err(TryLockError::Error(e)) => return Err(io_error("cannot lock", path, e)),
    }
    let write_pid = |file: &mut File| -> std::io::Result<()> {
        file.set_len(0)?;
        file.seek(SeekFrom::Start(0))?;
        writeln!(file, "{}", std::process::id())?;
        file.flush()
    };
    write_pid(&mut file).map_err(|e| io_error("cannot write our pid to", path, e))?;
    Ok(Lock(file))
}

/// How long a refused opener waits for the holder to write its pid.
const PID_WRITE_DEADLINE: Duration = Duration::from_millis(200);

/// The pid the holder of the lock on `file` wrote into it.
///
/// The holder can write it only once it has the lock, so an opener that
/// was refused at the same moment (two commands started together, the
/// common case) finds the file empty: it reads again until the pid is
/// there, for a moment at most, rather than name no one.
fn holder_pid(file: &mut File) -> Option<u32> {
    let deadline = Instant::now() + PID_WRITE_DEADLINE;
    loop {
        if let Some(pid) = read_pid(file) {
            return Some(pid);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The pid a holder wrote into the lock file, if it is there and readable.
fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

/// Waits until no open file holds sled's own lock on `path`.
///
/// sled 0.34 releases that lock from background threads some time after the
/// `Db` is dropped (spacejam/sled#1289), so reopening a store this process
/// just closed can fail spuriously. We hold `huddle.lock`, so no other huddle
/// can be the holder: whoever has it is on its way out, and we wait for that
/// (the lock, not a guessed delay) up to a deadline.
fn wait_for_sled_release(path: &Path) -> Result<(), StoreError> {
    let file = match File::open(path) {
        Ok(file) => file,
        // A new store: nothing to wait for.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error("cannot open", path, e)),
    };
    let deadline = Instant::now() + SLED_RELEASE_DEADLINE;
    loop {
        match file.try_lock() {
            // Dropping `file` releases the probe lock.
            Ok(()) => return Ok(()),
            Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(TryLockError::WouldBlock) => return Err(StoreError::Locked { pid: None }),
            Err(TryLockError::Error(e)) => return Err(io_error("cannot lock", path, e)),
        }
    }
}
