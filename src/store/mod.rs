//! Storage: the [`Store`] trait the shell implements, the key layout, the
//! format version check, and loading a node's state at start.
//!
//! Storage requests are data ([`StoreOp`]); the core never touches a store
//! itself. Two implementations pass the same contract tests: [`MemoryStore`]
//! (used by the simulator, with a faithful flush boundary) and, behind the
//! `store-sled` feature, `SledStore`.
//!
//! Invariant: a write is durable only after [`Store::flush`] returns; the
//! node emits "sent" only after a flush that covers the message.

use std::collections::{BTreeMap, BTreeSet};

use thiserror::Error;

mod memory;
#[cfg(feature = "store-sled")]
mod sled_store;

pub use memory::MemoryStore;
#[cfg(feature = "store-sled")]
pub use sled_store::SledStore;

/// The data format this binary reads and writes.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreOp {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        key: Vec<u8>,
    },
    /// Delete every key in `[from, to)`.
    DeleteRange {
        from: Vec<u8>,
        to: Vec<u8>,
    },
}

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("the data directory is locked by another huddle process{}", pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    Locked { pid: Option<u32> },
    #[error("the data was written by a newer huddle (format {found}, this binary reads up to {supported}); upgrade huddle")]
    NewerFormat { found: u32, supported: u32 },
    #[error("the stored data is damaged: {0}")]
    Corrupt(String),
    #[error("storage error: {0}")]
    Io(String),
}

/// Key-value pairs in key order.
pub type KeyValues = Vec<(Vec<u8>, Vec<u8>)>;

/// A key-value store with ordered keys and an explicit durability point.
pub trait Store {
    /// Applies a batch of writes atomically (all or none survive a crash).
    fn apply(&mut self, ops: &[StoreOp]) -> Result<(), StoreError>;
    /// Makes every write applied so far durable.
    fn flush(&mut self) -> Result<(), StoreError>;
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Every key-value pair whose key starts with `prefix`, in key order.
    fn scan_prefix(&self, prefix: &[u8]) -> Result<KeyValues, StoreError>;
}

/// The key layout (protocol/storage.md).
pub mod keys {
    pub const FORMAT: &[u8] = b"meta/format";
    pub const DOC_PREFIX: &[u8] = b"doc/";
    pub const REVOCATION_PREFIX: &[u8] = b"rev/";

    fn doc(id: &[u8; 16], suffix: &[u8]) -> Vec<u8> {
        [DOC_PREFIX, id.as_slice(), suffix].concat()
    }

    pub fn header(id: &[u8; 16]) -> Vec<u8> {
        doc(id, b"/h")
    }

    pub fn snapshot(id: &[u8; 16]) -> Vec<u8> {
        doc(id, b"/s")
    }

    pub fn chunk(id: &[u8; 16], seq: u64) -> Vec<u8> {
        doc(id, &[b"/c/".as_slice(), &seq.to_be_bytes()].concat())
    }

    /// Marks an entry of a document as rejected (it failed verification).
    pub fn rejected(id: &[u8; 16], entry: &[u8; 16]) -> Vec<u8> {
        doc(id, &[b"/r/".as_slice(), entry].concat())
    }

    pub fn revocation(key: &[u8; 16]) -> Vec<u8> {
        [REVOCATION_PREFIX, key.as_slice()].concat()
    }
}

/// Checks (and on a new store, writes) the format version.
pub fn check_format(store: &mut dyn Store) -> Result<(), StoreError> {
    match store.get(keys::FORMAT)? {
        Some(v) => {
            let found = u32::from_be_bytes(
                v.as_slice()
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("format version is not 4 bytes".into()))?,
            );
            if found > FORMAT_VERSION {
                return Err(StoreError::NewerFormat {
                    found,
                    supported: FORMAT_VERSION,
                });
            }
            Ok(())
        }
        None => {
            store.apply(&[StoreOp::Put {
                key: keys::FORMAT.to_vec(),
                value: FORMAT_VERSION.to_be_bytes().to_vec(),
            }])?;
            store.flush()
        }
    }
}

/// Everything stored for one document.
#[derive(Clone, Debug, Default)]
pub struct StoredDoc {
    pub header: Option<Vec<u8>>,
    pub snapshot: Option<Vec<u8>>,
    /// (seq, bytes) in ascending seq order.
    pub chunks: Vec<(u64, Vec<u8>)>,
    /// Hashes of entries that failed verification when they arrived.
    pub rejected: BTreeSet<[u8; 16]>,
}

/// What a node needs at start.
#[derive(Clone, Debug, Default)]
pub struct Stored {
    pub docs: BTreeMap<[u8; 16], StoredDoc>,
    pub revocations: Vec<Vec<u8>>,
}

/// Reads a node's state from a store.
pub fn load(store: &dyn Store) -> Result<Stored, StoreError> {
    let mut out = Stored::default();
    for (k, v) in store.scan_prefix(keys::DOC_PREFIX)? {
        let rest = &k[keys::DOC_PREFIX.len()..];
        if rest.len() < 18 {
            return Err(StoreError::Corrupt(format!(
                "short document key ({} bytes)",
                k.len()
            )));
        }
        let id: [u8; 16] = rest[..16].try_into().expect("16 bytes");
        let doc = out.docs.entry(id).or_default();
        match &rest[16..] {
            b"/h" => doc.header = Some(v),
            b"/s" => doc.snapshot = Some(v),
            s if s.len() == 11 && s.starts_with(b"/c/") => {
                let seq = u64::from_be_bytes(s[3..].try_into().expect("8 bytes"));
                doc.chunks.push((seq, v));
            }
            s if s.len() == 19 && s.starts_with(b"/r/") => {
                doc.rejected.insert(s[3..].try_into().expect("16 bytes"));
            }
            _ => return Err(StoreError::Corrupt("unknown document key".into())),
        }
    }
    for (_, v) in store.scan_prefix(keys::REVOCATION_PREFIX)? {
        out.revocations.push(v);
    }
    Ok(out)
}

/// The contract every [`Store`] must meet, as a reusable test suite.
#[doc(hidden)]
pub mod contract;
