//! An attachment's metadata as a message carries it (message field 4,
//! protocol/wire.md §7c): the blob's hash and size, its media type and file
//! name, and for an image a small thumbnail, so the history renders before
//! the blob arrives. It is signed with the message like every field.
//!
//! Invariant: every length is bounded before anything is allocated, a
//! name is a plain file name (no path, no control character), and a
//! thumbnail is a JPEG, PNG or WebP of at most [`MAX_THUMBNAIL`] bytes on an
//! image's attachment only.

use crate::codec::{DecodeError, Reader, Writer};
use crate::ids::ConversationId;

use super::tree::{chunk_count, Cv};

/// The largest blob the protocol carries, whatever a team allows.
pub const MAX_BLOB_LEN: u64 = 256 * 1024 * 1024;
/// Most values in an outline (chunks of a [`MAX_BLOB_LEN`] blob).
pub const MAX_OUTLINE: usize = (MAX_BLOB_LEN / super::tree::CHUNK_LEN) as usize;
/// Most attachments on one message.
pub const MAX_ATTACHMENTS: usize = 4;
/// Most bytes of an inline thumbnail.
pub const MAX_THUMBNAIL: usize = 3 * 1024;
pub const MAX_NAME: usize = 255;
pub const MAX_MEDIA_TYPE: usize = 100;
/// Most bytes the attachments field may take.
pub const MAX_FIELD_LEN: usize = 16 * 1024;

/// A blob's address: the BLAKE3 hash of its bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobHash(pub [u8; 32]);

impl BlobHash {
    pub fn of(bytes: &[u8]) -> BlobHash {
        BlobHash(*blake3::hash(bytes).as_bytes())
    }

    pub fn to_hex(&self) -> String {
        data_encoding::HEXLOWER.encode(&self.0)
    }

    pub fn from_hex(s: &str) -> Option<BlobHash> {
        let v = data_encoding::HEXLOWER_PERMISSIVE
            .decode(s.as_bytes())
            .ok()?;
        Some(BlobHash(v.try_into().ok()?))
    }

    /// Whether `outline` is the outline of this blob at `size` bytes.
    pub fn outlines(&self, outline: &[Cv], size: u64) -> bool {
        if chunk_count(size) < 2 {
            return outline.is_empty();
        }
        super::tree::root(outline, size) == Some(self.0)
    }
}

impl std::fmt::Debug for BlobHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BlobHash({})", &self.to_hex()[..16])
    }
}

impl std::fmt::Display for BlobHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// A blob as one conversation holds it. The same bytes attached in two
/// conversations are two entries (two files): a device serves a blob for a
/// conversation only if it holds it *for that conversation*, so a member of
/// one conversation cannot learn by asking, or by how we fetch, whether we
/// hold a file of another (protocol/blobs.md §3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub conversation: ConversationId,
    pub hash: BlobHash,
}

impl Key {
    pub fn new(conversation: ConversationId, hash: BlobHash) -> Key {
        Key { conversation, hash }
    }

    /// An upload not yet attached to a message (`put_own`, then `adopt`).
    pub fn staged(hash: BlobHash) -> Key {
        Key::new(ConversationId([0; 16]), hash)
    }
}

/// One attachment of a message.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Attachment {
    pub hash: BlobHash,
    /// 1..=[`MAX_BLOB_LEN`].
    pub size: u64,
    /// `type/subtype`, lowercase.
    pub media_type: String,
    pub name: String,
    /// Empty, or an image's thumbnail (JPEG, PNG or WebP).
    pub thumbnail: Vec<u8>,
}

/// The media type of a thumbnail's bytes, if it is one we render.
pub fn image_kind(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        Some("image/jpeg")
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some("image/webp")
    } else {
        None
    }
}

/// Whether `s` is a media type we carry: `type/subtype`, each a token of
/// lowercase letters, digits and `!#$&^_.+-`.
pub fn valid_media_type(s: &str) -> bool {
    let token = |t: &str| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$&^_.+-".contains(&b))
    };
    s.len() <= MAX_MEDIA_TYPE && s.split_once('/').is_some_and(|(a, b)| token(a) && token(b))
}

/// Whether `s` is a plain file name: no path separator, no control
/// character, not `.` or `..`, not empty.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME
        && s != "."
        && s != ".."
        && !s.chars().any(|c| c == '/' || c == '\\' || c.is_control())
}

/// `name` made into a valid file name (the path dropped, controls replaced).
pub fn clean_name(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let mut s: String = base
        .chars()
        .map(|c| if c.is_control() { '_' } else { c })
        .collect();
    while s.len() > MAX_NAME {
        s.pop();
    }
    if valid_name(&s) {
        s
    } else {
        "attachment".into()
    }
}

impl Attachment {
    /// Checks what decoding checks.
    pub fn check(&self) -> Result<(), DecodeError> {
        if self.size == 0 || self.size > MAX_BLOB_LEN {
            return Err(DecodeError::Invalid("an attachment's size out of bounds"));
        }
        if !valid_media_type(&self.media_type) {
            return Err(DecodeError::Invalid("an attachment's media type"));
        }
        if !valid_name(&self.name) {
            return Err(DecodeError::Invalid("an attachment's file name"));
        }
        if !self.thumbnail.is_empty()
            && (!self.media_type.starts_with("image/")
                || self.thumbnail.len() > MAX_THUMBNAIL
                || image_kind(&self.thumbnail).is_none())
        {
            return Err(DecodeError::Invalid("an attachment's thumbnail"));
        }
        Ok(())
    }

    pub(crate) fn write(&self, w: &mut Writer) {
        w.raw(&self.hash.0)
            .u64_be(self.size)
            .str(&self.media_type)
            .str(&self.name)
            .bytes(&self.thumbnail);
    }

    pub(crate) fn read(r: &mut Reader) -> Result<Attachment, DecodeError> {
        let a = Attachment {
            hash: BlobHash(r.array("blob hash")?),
            size: r.u64_be("blob size")?,
            media_type: r.str(MAX_MEDIA_TYPE, "media type")?.to_owned(),
            name: r.str(MAX_NAME, "file name")?.to_owned(),
            thumbnail: r.bytes(MAX_THUMBNAIL, "thumbnail")?.to_vec(),
        };
        a.check()?;
        Ok(a)
    }
}

/// Writes the attachments field's content.
pub(crate) fn write_all(w: &mut Writer, all: &[Attachment]) {
    w.varint(all.len() as u64);
    for a in all {
        a.write(w);
    }
}

/// Reads the attachments field's content: 1..=[`MAX_ATTACHMENTS`], no blob
/// twice.
pub(crate) fn read_all(r: &mut Reader) -> Result<Vec<Attachment>, DecodeError> {
    let n = r.count(MAX_ATTACHMENTS, 44, "attachments")?;
    if n == 0 {
        return Err(DecodeError::Invalid("an attachments field without any"));
    }
    let mut out: Vec<Attachment> = Vec::with_capacity(n);
    for _ in 0..n {
        let a = Attachment::read(r)?;
        if out.iter().any(|b| b.hash == a.hash) {
            return Err(DecodeError::Invalid("the same blob attached twice"));
        }
        out.push(a);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_types_are_checked_and_cleaned() {
        assert!(valid_media_type("image/jpeg"));
        assert!(valid_media_type("application/vnd.ms-excel"));
        assert!(!valid_media_type("image/"));
        assert!(!valid_media_type("Image/JPEG"));
        assert!(!valid_media_type("text/html; charset=utf-8"));
        assert_eq!(clean_name("/home/ana/wound.jpg"), "wound.jpg");
        assert_eq!(clean_name("C:\\scans\\ecg.pdf"), "ecg.pdf");
        assert_eq!(clean_name("a\nb"), "a_b");
        assert_eq!(clean_name(".."), "attachment");
        assert_eq!(clean_name(""), "attachment");
        assert!(clean_name(&"é".repeat(300)).len() <= MAX_NAME);
    }
}
