//! Attachments: blobs addressed by their BLAKE3 hash, carried beside the
//! documents, never inside them (protocol/blobs.md).
//!
//! The pure part lives here — the tree cut at chunk boundaries
//! (`tree.rs`), the metadata a message carries (`meta.rs`), the blob
//! protocol's messages (`wire.rs`) and what to fetch from whom
//! (`fetch.rs`); the files on disk (`store.rs`), photo metadata
//! stripping (`strip.rs`) and the transfers (`net/blobs.rs`) are the
//! shell's.

pub mod fetch;
pub mod meta;
pub mod tree;
pub mod wire;

#[cfg(feature = "store-sled")]
pub mod store;
#[cfg(feature = "net")]
pub mod strip;

pub use meta::{Attachment, BlobHash, Key, MAX_ATTACHMENTS, MAX_BLOB_LEN};

/// The largest attachment a team allows unless its policy says otherwise.
pub const DEFAULT_LIMIT: u64 = 25 * 1024 * 1024;
/// Attachments up to this size are fetched as soon as their message
/// arrives; larger ones when someone opens them.
pub const DEFAULT_AUTO_FETCH: u64 = 2 * 1024 * 1024;
