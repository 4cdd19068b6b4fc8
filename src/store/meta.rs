//! A conversation's index entry (`idx/<id>`): what a node needs to list a
//! conversation and to know its heads without reading the document.

use super::StoreError;

/// What the index keeps for a conversation, rewritten in every batch that
/// writes the document, so that a node can start, list its conversations
/// and compare catalogs without loading the documents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DocMeta {
    /// The document's heads as this batch leaves it (Automerge change
    /// hashes, sorted); a document read back must reach exactly these.
    pub heads: Vec<[u8; 32]>,
    /// The writer's hybrid logical clock when it wrote the batch: at least
    /// every timestamp it had issued, so a restart never issues a lower one.
    pub clock: u64,
    /// For the conversation list: messages, messages unread by this
    /// device's member, and the newest message's time (0: none).
    pub messages: u32,
    pub unread: u32,
    pub last_activity: u64,
    /// Urgent and STAT messages from others awaiting this member's
    /// acknowledgement, and how many of those are STAT.
    pub to_ack: u32,
    pub stat_to_ack: u32,
    /// The newest message, for the list's preview.
    pub last: Option<LastEntry>,
}

/// The newest message as the index keeps it ([`DocMeta::last`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastEntry {
    pub author: [u8; 16],
    /// [`crate::message::Priority`] as its wire byte.
    pub priority: u8,
    pub time_ms: u64,
    /// At most [`LastEntry::MAX_PREVIEW`] bytes of UTF-8.
    pub preview: String,
}

impl LastEntry {
    /// 140 characters of up to 4 bytes each.
    pub const MAX_PREVIEW: usize = 560;
}

impl DocMeta {
    /// The bytes before the heads.
    const FIXED: usize = 26;

    /// The entry's bytes; an empty ("unknown") entry if there are more heads
    /// than the format can list (the document is then read at start).
    pub fn encode(&self) -> Vec<u8> {
        let Ok(n) = u16::try_from(self.heads.len()) else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(Self::FIXED + 32 * self.heads.len());
        out.extend_from_slice(&self.clock.to_be_bytes());
        out.extend_from_slice(&self.messages.to_be_bytes());
        out.extend_from_slice(&self.unread.to_be_bytes());
        out.extend_from_slice(&self.last_activity.to_be_bytes());
        out.extend_from_slice(&n.to_be_bytes());
        for h in &self.heads {
            out.extend_from_slice(h);
        }
        out.extend_from_slice(&self.to_ack.to_be_bytes());
        out.extend_from_slice(&self.stat_to_ack.to_be_bytes());
        match &self.last {
            None => out.push(0),
            Some(l) => {
                let preview = truncate_utf8(&l.preview, LastEntry::MAX_PREVIEW);
                out.push(1);
                out.extend_from_slice(&l.author);
                out.push(l.priority);
                out.extend_from_slice(&l.time_ms.to_be_bytes());
                out.extend_from_slice(&(preview.len() as u16).to_be_bytes());
                out.extend_from_slice(preview.as_bytes());
            }
        }
        out
    }

    /// `None` for an empty value: an entry a format upgrade wrote, whose
    /// document must be loaded to learn its heads.
    pub fn decode(bytes: &[u8]) -> Result<Option<DocMeta>, StoreError> {
        if bytes.is_empty() {
            return Ok(None);
        }
        let bad = || StoreError::Corrupt(format!("an index entry of {} bytes", bytes.len()));
        if bytes.len() < Self::FIXED {
            return Err(bad());
        }
        let u32_at = |i: usize| u32::from_be_bytes(bytes[i..i + 4].try_into().expect("4"));
        let u64_at = |i: usize| u64::from_be_bytes(bytes[i..i + 8].try_into().expect("8"));
        let n = usize::from(u16::from_be_bytes(bytes[24..26].try_into().expect("2")));
        let heads_end = Self::FIXED + 32 * n;
        let tail = bytes.get(heads_end..).ok_or_else(bad)?;
        if tail.len() < 9 {
            return Err(bad());
        }
        let last = match tail[8] {
            0 if tail.len() == 9 => None,
            1 if tail.len() >= 9 + 27 => {
                let t = &tail[9..];
                let len = usize::from(u16::from_be_bytes([t[25], t[26]]));
                if len > LastEntry::MAX_PREVIEW
                    || t.len() != 27 + len
                    || crate::message::Priority::from_byte(t[16]).is_err()
                {
                    return Err(bad());
                }
                Some(LastEntry {
                    author: t[..16].try_into().expect("16"),
                    priority: t[16],
                    time_ms: u64::from_be_bytes(t[17..25].try_into().expect("8")),
                    preview: String::from_utf8(t[27..].to_vec()).map_err(|_| bad())?,
                })
            }
            _ => return Err(bad()),
        };
        Ok(Some(DocMeta {
            heads: bytes[Self::FIXED..heads_end]
                .chunks_exact(32)
                .map(|h| h.try_into().expect("32 bytes"))
                .collect(),
            clock: u64_at(0),
            messages: u32_at(8),
            unread: u32_at(12),
            last_activity: u64_at(16),
            to_ack: u32::from_be_bytes(tail[..4].try_into().expect("4")),
            stat_to_ack: u32::from_be_bytes(tail[4..8].try_into().expect("4")),
            last,
        }))
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a
/// character boundary.
fn truncate_utf8(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
