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
use std::sync::Arc;

use thiserror::Error;

mod memory;
mod meta;
pub mod peers;
#[cfg(feature = "store-sled")]
#[doc(hidden)]
pub mod sealed;
#[cfg(feature = "store-sled")]
mod sled_store;
#[cfg(feature = "store-sled")]
pub(crate) mod upgrade_sealed;

pub use memory::MemoryStore;
pub use meta::{DocMeta, LastEntry};
#[cfg(feature = "store-sled")]
pub use sled_store::SledStore;

/// The data format this binary reads and writes. Version 2 added the
/// document index (`idx/`), 3 the upgrade pass of append-only documents,
/// 4 remembered peers (`peer/`), 5 the list's badges in the index, 6 held
/// times (`held/`) and the version-2 team document (which the node fills
/// from version 1 at its next start), 7 the audit trail (`trail/`,
/// `trailh/`, `trailx/`), 8 the mailbox of sealed envelopes (`mail/`); an
/// older store is upgraded on open.
pub const FORMAT_VERSION: u32 = 8;

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
    /// The data directory is not private to this user and was not made so
    /// (`private_dir::PrivateDirError`, as its sentence).
    #[error("{0}")]
    NotPrivate(String),
    /// The store is encrypted and was opened without its key.
    #[error("the data directory is encrypted: unlock it with its passphrase")]
    Encrypted,
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

mod records;
use records::{read_held, read_mail, read_trails};

/// The key layout (protocol/storage.md).
pub mod keys {
    pub const FORMAT: &[u8] = b"meta/format";
    pub const DOC_PREFIX: &[u8] = b"doc/";
    pub const INDEX_PREFIX: &[u8] = b"idx/";
    pub const REVOCATION_PREFIX: &[u8] = b"rev/";
    pub const PEER_PREFIX: &[u8] = b"peer/";
    pub const HELD_PREFIX: &[u8] = b"held/";
    /// Audit entries: `trail/<device><seq u64 BE>` (sync.md §8).
    pub const TRAIL_PREFIX: &[u8] = b"trail/";
    /// How much of each trail is held: `trailh/<device>` → len ‖ head.
    pub const TRAIL_HEAD_PREFIX: &[u8] = b"trailh/";
    /// What one device showed of a trail that a held copy contradicts:
    /// `trailx/<device><holder>` → a `trail::Finding`.
    pub const TRAIL_FINDING_PREFIX: &[u8] = b"trailx/";
    /// The mailbox of sealed envelopes: `mail/<envelope id>` → a record
    /// (sealed.md §4).
    pub const MAIL_PREFIX: &[u8] = b"mail/";
    /// Changes written to a conversation and not sealed yet:
    /// `mailq/<id>` → the document's heads before them (sealed.md §3).
    pub const MAIL_QUEUE_PREFIX: &[u8] = b"mailq/";
    /// Present while the team document awaits the upgrade pass (format 3).
    pub const AUDIT_TEAM: &[u8] = b"meta/audit-team";

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

    /// A stored change the upgrade pass set aside (it breaks the rules of
    /// sync.md §7.5, or was built on one that does), kept by its hash.
    pub fn aside(id: &[u8; 16], change: &[u8; 32]) -> Vec<u8> {
        doc(id, &[b"/x/".as_slice(), change].concat())
    }

    /// Marks an entry of a document as rejected (it failed verification).
    pub fn rejected(id: &[u8; 16], entry: &[u8; 16]) -> Vec<u8> {
        doc(id, &[b"/r/".as_slice(), entry].concat())
    }

    /// Where a device that proved membership was reached (`peers.rs`).
    pub fn peer(device: &crate::ids::DeviceId) -> Vec<u8> {
        [PEER_PREFIX, device.as_bytes().as_slice()].concat()
    }

    /// When this device first held an urgent or STAT message still open
    /// (node/clinical.rs): `held/<conversation><message>` → u64 ms.
    pub fn held(conversation: &[u8; 16], message: &[u8; 16]) -> Vec<u8> {
        [HELD_PREFIX, conversation.as_slice(), message.as_slice()].concat()
    }

    pub fn trail(device: &crate::ids::DeviceId, seq: u64) -> Vec<u8> {
        [
            TRAIL_PREFIX,
            device.as_bytes().as_slice(),
            &seq.to_be_bytes(),
        ]
        .concat()
    }

    /// The entries of `device`'s trail from `seq`, 256 at a time: every key
    /// with the same first seven bytes of its sequence number.
    pub fn trail_block(device: &crate::ids::DeviceId, seq: u64) -> Vec<u8> {
        let mut k = trail(device, seq);
        k.pop();
        k
    }

    pub fn mail(id: &[u8; 32]) -> Vec<u8> {
        [MAIL_PREFIX, id.as_slice()].concat()
    }

    pub fn mail_queue(conversation: &[u8; 16]) -> Vec<u8> {
        [MAIL_QUEUE_PREFIX, conversation.as_slice()].concat()
    }

    pub fn trail_head(device: &crate::ids::DeviceId) -> Vec<u8> {
        [TRAIL_HEAD_PREFIX, device.as_bytes().as_slice()].concat()
    }

    pub fn trail_finding(device: &crate::ids::DeviceId, holder: &crate::ids::DeviceId) -> Vec<u8> {
        [
            TRAIL_FINDING_PREFIX,
            device.as_bytes().as_slice(),
            holder.as_bytes().as_slice(),
        ]
        .concat()
    }

    pub fn revocation(key: &[u8; 16]) -> Vec<u8> {
        [REVOCATION_PREFIX, key.as_slice()].concat()
    }

    /// A conversation's index entry ([`super::DocMeta`]).
    pub fn index(id: &[u8; 16]) -> Vec<u8> {
        [INDEX_PREFIX, id.as_slice()].concat()
    }

    /// Every key of one document, for a prefix scan.
    pub fn doc_prefix(id: &[u8; 16]) -> Vec<u8> {
        doc(id, b"/")
    }
}

/// Checks (and on a new store, writes) the format version, upgrading an
/// older store first.
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
            if found < 3 {
                read_whole_at_next_start(store)?;
            } else if found < FORMAT_VERSION {
                // 3 → 4 added a key form (`peer/`); 4 → 5 grew the index
                // entry, so every entry becomes "unknown" and is written
                // anew when its document is read at the next start; 5 → 6
                // added a key form (`held/`) and a team document id; 6 → 7
                // key forms (`trail/`, `trailh/`, `trailx/`); 7 → 8 one
                // (`mail/`).
                let mut ops = Vec::new();
                if found < 5 {
                    ops.extend(unknown_index_entries(store)?);
                }
                ops.push(StoreOp::Put {
                    key: keys::FORMAT.to_vec(),
                    value: FORMAT_VERSION.to_be_bytes().to_vec(),
                });
                store.apply(&ops)?;
                store.flush()?;
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

/// 1 → 2 and 2 → 3 (and on to 4): every conversation gets an index entry that says
/// "unknown", in the same batch as the new version. Its document is then
/// read whole at the next start, where the node writes a real entry (2) and
/// replays its changes through the append-only rules, setting aside what
/// breaks them (3: `replica/audit.rs`).
fn read_whole_at_next_start(store: &mut dyn Store) -> Result<(), StoreError> {
    let mut ops = unknown_index_entries(store)?;
    ops.push(StoreOp::Put {
        key: keys::AUDIT_TEAM.to_vec(),
        value: Vec::new(),
    });
    ops.push(StoreOp::Put {
        key: keys::FORMAT.to_vec(),
        value: FORMAT_VERSION.to_be_bytes().to_vec(),
    });
    store.apply(&ops)?;
    store.flush()
}

/// An empty ("unknown") index entry for every conversation.
fn unknown_index_entries(store: &mut dyn Store) -> Result<Vec<StoreOp>, StoreError> {
    let mut ops = Vec::new();
    for (k, _) in store.scan_prefix(keys::DOC_PREFIX)? {
        if let (id, b"/h") = split_doc_key(&k)? {
            ops.push(StoreOp::Put {
                key: keys::index(&id),
                value: Vec::new(),
            });
        }
    }
    Ok(ops)
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
    /// The index entry, if it is there and known.
    pub meta: Option<DocMeta>,
    /// Only `header` and `meta` were read: the rest is read through
    /// [`Stored::loader`] when the document is first used.
    pub deferred: bool,
    /// How many changes the upgrade pass set aside (kept, never read).
    pub aside: usize,
    /// The team document awaits the upgrade pass ([`keys::AUDIT_TEAM`]).
    pub audit: bool,
}

/// Reads documents left unread at start ([`StoredDoc::deferred`]).
///
/// Invariant the node keeps: a deferred document is read before anything
/// writes to it, so a reader sees exactly what was there at start.
pub trait DocLoader: Send + Sync {
    fn load_doc(&self, id: &[u8; 16]) -> Result<StoredDoc, StoreError>;
    /// Every pair under `prefix` (the node reads older audit entries so).
    fn scan(&self, prefix: &[u8]) -> Result<KeyValues, StoreError>;
}

/// A shared [`DocLoader`].
#[derive(Clone)]
pub struct Loader(pub Arc<dyn DocLoader>);

impl std::fmt::Debug for Loader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Loader")
    }
}

/// Any store can read a document back, through its own prefix scan (the
/// simulator hands the node a copy of its in-memory store as it was at
/// start, which by the invariant above is all a loader ever needs).
impl<S: Store + Send + Sync> DocLoader for S {
    fn load_doc(&self, id: &[u8; 16]) -> Result<StoredDoc, StoreError> {
        doc_from_records(self.scan_prefix(&keys::doc_prefix(id))?)
    }

    fn scan(&self, prefix: &[u8]) -> Result<KeyValues, StoreError> {
        self.scan_prefix(prefix)
    }
}

/// One document from its records (the result of a scan of its prefix).
pub fn doc_from_records(records: KeyValues) -> Result<StoredDoc, StoreError> {
    let mut doc = StoredDoc::default();
    for (k, v) in records {
        let (_, suffix) = split_doc_key(&k)?;
        add_doc_record(&mut doc, suffix, v)?;
    }
    Ok(doc)
}

/// What a node needs at start.
#[derive(Clone, Debug, Default)]
pub struct Stored {
    pub docs: BTreeMap<[u8; 16], StoredDoc>,
    pub revocations: Vec<Vec<u8>>,
    /// (conversation, message, ms): when this device first held each open
    /// urgent or STAT message ([`keys::held`]).
    pub held: Vec<([u8; 16], [u8; 16], u64)>,
    /// How much of each audit trail is held: (device, entries, last hash).
    pub trails: Vec<(crate::ids::DeviceId, u64, [u8; 32])>,
    /// What devices showed of trails that held copies contradict.
    pub findings: Vec<crate::trail::Finding>,
    /// The mailbox's records, by envelope id (a key of another length is
    /// skipped: nothing we wrote).
    pub mail: Vec<([u8; 32], Vec<u8>)>,
    /// Conversations with changes written and not sealed, and the heads
    /// before them.
    pub mail_queue: Vec<([u8; 16], Vec<u8>)>,
    /// Reads the documents marked [`StoredDoc::deferred`].
    pub loader: Option<Loader>,
}

/// `doc/<id><suffix>` → (id, suffix).
fn split_doc_key(k: &[u8]) -> Result<([u8; 16], &[u8]), StoreError> {
    let rest = &k[keys::DOC_PREFIX.len()..];
    if rest.len() < 18 {
        return Err(StoreError::Corrupt(format!(
            "short document key ({} bytes)",
            k.len()
        )));
    }
    Ok((rest[..16].try_into().expect("16 bytes"), &rest[16..]))
}

fn add_doc_record(doc: &mut StoredDoc, suffix: &[u8], v: Vec<u8>) -> Result<(), StoreError> {
    match suffix {
        b"/h" => doc.header = Some(v),
        b"/s" => doc.snapshot = Some(v),
        s if s.len() == 11 && s.starts_with(b"/c/") => {
            let seq = u64::from_be_bytes(s[3..].try_into().expect("8 bytes"));
            doc.chunks.push((seq, v));
        }
        s if s.len() == 19 && s.starts_with(b"/r/") => {
            doc.rejected.insert(s[3..].try_into().expect("16 bytes"));
        }
        s if s.len() == 35 && s.starts_with(b"/x/") => doc.aside += 1,
        _ => return Err(StoreError::Corrupt("unknown document key".into())),
    }
    Ok(())
}

/// The index: conversation id → entry (`None`: unknown, load to learn).
///
/// An entry that does not decode is read as unknown: the entry is derived
/// from the document, so the document is read whole at start and the node
/// writes a good entry back (storage.md §2.1).
fn read_index(store: &dyn Store) -> Result<BTreeMap<[u8; 16], Option<DocMeta>>, StoreError> {
    let mut out = BTreeMap::new();
    for (k, v) in store.scan_prefix(keys::INDEX_PREFIX)? {
        let id: [u8; 16] = k[keys::INDEX_PREFIX.len()..]
            .try_into()
            .map_err(|_| StoreError::Corrupt("an index key is not 20 bytes".into()))?;
        let meta = DocMeta::decode(&v).unwrap_or_else(|e| {
            tracing::error!(conversation = %crate::ConversationId(id), "{e}; reading the conversation whole to rebuild it");
            None
        });
        out.insert(id, meta);
    }
    Ok(out)
}

/// Reads a node's whole state from a store: every document.
pub fn load(store: &dyn Store) -> Result<Stored, StoreError> {
    let mut out = Stored::default();
    for (k, v) in store.scan_prefix(keys::DOC_PREFIX)? {
        let (id, suffix) = split_doc_key(&k)?;
        let doc = out.docs.entry(id).or_default();
        add_doc_record(doc, suffix, v)?;
    }
    for (id, meta) in read_index(store)? {
        if let Some(doc) = out.docs.get_mut(&id) {
            doc.meta = meta;
        }
    }
    for (_, v) in store.scan_prefix(keys::REVOCATION_PREFIX)? {
        out.revocations.push(v);
    }
    read_held(store, &mut out)?;
    read_trails(store, &mut out)?;
    read_mail(store, &mut out)?;
    mark_team_audit(store, &mut out)?;
    Ok(out)
}

fn mark_team_audit(store: &dyn Store, out: &mut Stored) -> Result<(), StoreError> {
    if store.get(keys::AUDIT_TEAM)?.is_some() {
        out.docs.entry(crate::team::TEAM_DOC_ID).or_default().audit = true;
    }
    Ok(())
}

/// Reads what a node needs to start, leaving conversations for `loader` to
/// read on first use: the team document, revocations, and each
/// conversation's header and index entry. A conversation whose index entry
/// is unknown (after an upgrade) is read whole.
pub fn load_lazy(store: &dyn Store, loader: Loader) -> Result<Stored, StoreError> {
    let mut out = Stored::default();
    for team in [crate::team::TEAM_DOC_ID, crate::team::TEAM_DOC_V1_ID] {
        out.docs.insert(team, loader.0.load_doc(&team)?);
    }
    for (id, meta) in read_index(store)? {
        let doc = match meta {
            Some(meta) => StoredDoc {
                header: store.get(&keys::header(&id))?,
                meta: Some(meta),
                deferred: true,
                ..StoredDoc::default()
            },
            None => loader.0.load_doc(&id)?,
        };
        out.docs.insert(id, doc);
    }
    for (_, v) in store.scan_prefix(keys::REVOCATION_PREFIX)? {
        out.revocations.push(v);
    }
    read_held(store, &mut out)?;
    read_trails(store, &mut out)?;
    read_mail(store, &mut out)?;
    mark_team_audit(store, &mut out)?;
    out.loader = Some(loader);
    Ok(out)
}

/// The contract every [`Store`] must meet, as a reusable test suite.
#[doc(hidden)]
pub mod contract;

#[cfg(test)]
mod tests {
    use super::{DocMeta, LastEntry};

    #[test]
    fn index_entries_round_trip_and_too_many_heads_read_as_unknown() {
        let mut meta = DocMeta {
            heads: vec![[1; 32], [2; 32]],
            clock: 7,
            messages: 3,
            unread: 1,
            last_activity: 9,
            to_ack: 2,
            stat_to_ack: 1,
            last: None,
        };
        assert_eq!(
            DocMeta::decode(&meta.encode()).expect("decodes"),
            Some(meta.clone())
        );
        meta.last = Some(LastEntry {
            author: [5; 16],
            priority: 2,
            time_ms: 11,
            preview: "Bed 12 lactate 4.1 ✓".into(),
        });
        let bytes = meta.encode();
        assert_eq!(DocMeta::decode(&bytes).expect("decodes"), Some(meta));
        for cut in 1..bytes.len() - 26 {
            assert!(
                DocMeta::decode(&bytes[..bytes.len() - cut]).is_err(),
                "{cut} bytes short"
            );
        }
        let crowded = DocMeta {
            heads: vec![[0; 32]; usize::from(u16::MAX) + 1],
            clock: 0,
            messages: 0,
            unread: 0,
            last_activity: 0,
            to_ack: 0,
            stat_to_ack: 0,
            last: None,
        };
        assert!(crowded.encode().is_empty());
        assert_eq!(DocMeta::decode(&crowded.encode()).expect("decodes"), None);
    }

    #[test]
    fn a_long_preview_is_cut_on_a_character_boundary() {
        let meta = DocMeta {
            heads: vec![],
            clock: 0,
            messages: 1,
            unread: 0,
            last_activity: 1,
            to_ack: 0,
            stat_to_ack: 0,
            last: Some(LastEntry {
                author: [0; 16],
                priority: 0,
                time_ms: 1,
                preview: "é".repeat(LastEntry::MAX_PREVIEW),
            }),
        };
        let back = DocMeta::decode(&meta.encode()).unwrap().unwrap();
        assert_eq!(
            back.last.unwrap().preview,
            "é".repeat(LastEntry::MAX_PREVIEW / 2)
        );
    }
}
