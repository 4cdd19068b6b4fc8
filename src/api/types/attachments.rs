//! The API's attachment types (protocol/blobs.md §6 and the README).

use serde::{Deserialize, Serialize};

/// `Status::blobs`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobUse {
    #[serde(flatten)]
    pub traffic: crate::net::BlobStats,
    /// Bytes the blobs take on this device, and its quota.
    pub stored: u64,
    pub quota: u64,
}

/// An attachment as the history shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentView {
    /// Its place on the message (the API's paths name it by this).
    pub index: usize,
    pub hash: String,
    pub size: u64,
    pub media_type: String,
    pub name: String,
    /// It has an inline thumbnail (`…/attachments/{index}/thumbnail`).
    pub thumbnail: bool,
    /// Held whole on this device.
    pub held: bool,
    pub held_chunks: u64,
    pub chunks: u64,
    /// Attached on this device.
    pub own: bool,
    /// Our own attachment has reached another device (every chunk of it
    /// was sent to one).
    pub reached: bool,
}

impl AttachmentView {
    pub fn of(index: usize, a: &crate::blobs::Attachment) -> AttachmentView {
        AttachmentView {
            index,
            hash: a.hash.to_hex(),
            size: a.size,
            media_type: a.media_type.clone(),
            name: a.name.clone(),
            thumbnail: !a.thumbnail.is_empty(),
            held: false,
            held_chunks: 0,
            chunks: crate::blobs::tree::chunk_count(a.size),
            own: false,
            reached: false,
        }
    }
}

/// An attachment to send: a blob this device holds whole (uploaded with
/// `POST /v1/blobs`), named by its hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentRequest {
    pub hash: String,
    pub name: String,
    pub media_type: String,
    /// An image's thumbnail (JPEG, PNG or WebP, at most 3 KiB), hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thumbnail: Option<String>,
}

/// What `POST /v1/blobs` answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Uploaded {
    pub hash: String,
    pub size: u64,
    pub name: String,
    pub media_type: String,
    /// Photo metadata (location, camera) was removed.
    pub stripped: bool,
}
