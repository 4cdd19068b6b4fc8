//! Traffic accounting at the network layer: frames and bytes sent, the
//! changes inside sync messages (decoded with automerge) and who holds
//! each, reassembly buffers, and the round trips of each pairwise sync.
//!
//! "Bytes of changes that had to move" is measured, not estimated: every
//! change is sized once (its standalone encoding) and counted once for each
//! device that obtains it for the first time. A perfect protocol would send
//! exactly that many bytes.

use std::collections::{BTreeMap, BTreeSet};

use automerge::{Automerge, Change};

use crate::net::Dev;

struct ChangeInfo {
    size: u64,
    holders: BTreeSet<Dev>,
    /// Holders when the last heal happened.
    at_heal: usize,
}

/// Where a delivered sync frame belongs.
pub struct SyncPart {
    pub session: u64,
    pub dir: usize,
    pub from: Dev,
    pub to: Dev,
    pub doc: [u8; 16],
    pub more: bool,
}

/// One (session, document) sync: messages exchanged until it fell silent.
#[derive(Default)]
struct Episode {
    msgs: u32,
    in_flight: u32,
    done: bool,
}

#[derive(Default)]
pub struct Accounting {
    pub frames: u64,
    pub bytes: u64,
    pub sync_bytes: u64,
    frames_at_heal: u64,
    bytes_at_heal: u64,
    /// Counters at the last heal: redundant change bytes, whole-document
    /// bytes, Heads frames.
    at_heal_counts: (u64, u64, u64),
    changes: BTreeMap<[u8; 32], ChangeInfo>,
    /// Partial sync messages per (session, direction, document).
    parts: BTreeMap<(u64, usize, [u8; 16]), Vec<u8>>,
    pub peak_reassembly: usize,
    episodes: BTreeMap<(u64, [u8; 16]), Episode>,
    /// Round trips of each first sync of a document on a session.
    pub round_trips: Vec<u32>,
    /// Messages delivered to devices other than their author.
    pub deliveries: BTreeSet<(Dev, [u8; 16])>,
    pub undecodable_sync: u64,
    /// Frames sent, by wire tag (1 Hello … 6 Heads).
    pub by_tag: [u64; 7],
    /// Bytes sent, by wire tag, and their values at the last heal.
    pub bytes_by_tag: [u64; 7],
    bytes_by_tag_at_heal: [u64; 7],
    /// Frames and bytes of sealed relaying (wire tags 11 Sealed, 12
    /// MailIds, 13 MailDone, 14 MailWant), and the bytes at the last heal.
    pub mail_frames: [u64; 4],
    pub mail_bytes: [u64; 4],
    mail_bytes_at_heal: [u64; 4],
    /// Bytes of change chunks inside delivered sync messages (the rest of
    /// a sync message is heads, needs and Bloom filters), and at the heal.
    pub chunk_bytes: u64,
    chunk_bytes_at_heal: u64,
    /// Complete sync messages delivered without / with changes.
    pub sync_empty: u64,
    pub sync_with_changes: u64,
    /// Change bytes delivered to a device that already had the change.
    pub redundant_change_bytes: u64,
    /// Sync bytes spent on the team document (the rest is conversations).
    pub team_sync_bytes: u64,
    /// Sync messages that carried a whole document (automerge sends one
    /// when more than a third of it is missing).
    pub whole_docs: u64,
    pub whole_doc_bytes: u64,
}

/// Splits concatenated Automerge change chunks (magic, checksum, type 1,
/// or 2 for a deflated change, LEB128 length, body); `None` if `bytes` is
/// not such a run.
fn split_changes(bytes: &[u8]) -> Option<Vec<&[u8]>> {
    const MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let rest = &bytes[at..];
        if rest.len() < 10 || rest[..4] != MAGIC || !matches!(rest[8], 1 | 2) {
            return None;
        }
        let (mut len, mut shift, mut i) = (0usize, 0u32, 9);
        loop {
            let b = *rest.get(i)?;
            len |= usize::from(b & 0x7f).checked_shl(shift)?;
            i += 1;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 56 {
                return None;
            }
        }
        let end = i.checked_add(len)?;
        out.push(rest.get(..end)?);
        at += end;
    }
    Some(out)
}

impl Accounting {
    pub fn on_send(&mut self, tag: u8, len: usize, sync: Option<(u64, [u8; 16], bool)>) {
        if (11..=14).contains(&tag) {
            self.mail_frames[usize::from(tag - 11)] += 1;
            self.mail_bytes[usize::from(tag - 11)] += len as u64;
        } else {
            self.by_tag[usize::from(tag).min(6)] += 1;
            self.bytes_by_tag[usize::from(tag).min(6)] += len as u64;
        }
        self.frames += 1;
        self.bytes += len as u64;
        if let Some((session, doc, more)) = sync {
            self.sync_bytes += len as u64;
            if doc == huddle::team::TEAM_DOC_ID {
                self.team_sync_bytes += len as u64;
            }
            if !more {
                let e = self.episodes.entry((session, doc)).or_default();
                if !e.done {
                    e.msgs += 1;
                    e.in_flight += 1;
                }
            }
        }
    }

    /// A sync frame was delivered. Returns the reassembly buffer's size
    /// (for the bounded check).
    pub fn on_sync_delivered(&mut self, part: SyncPart, data: &[u8]) -> usize {
        let SyncPart {
            session,
            dir,
            from,
            to,
            doc,
            more,
        } = part;
        let key = (session, dir, doc);
        let buf = self.parts.entry(key).or_default();
        buf.extend_from_slice(data);
        let size = buf.len();
        self.peak_reassembly = self.peak_reassembly.max(size);
        if more {
            return size;
        }
        let msg = self.parts.remove(&key).unwrap_or_default();
        if let Some(e) = self.episodes.get_mut(&(session, doc)) {
            e.in_flight = e.in_flight.saturating_sub(1);
        }
        match automerge::sync::Message::decode(&msg) {
            Ok(m) => {
                if m.changes.is_empty() {
                    self.sync_empty += 1;
                } else {
                    self.sync_with_changes += 1;
                }
                for chunk in m.changes.iter() {
                    self.chunk_bytes += chunk.len() as u64;
                    self.count_chunk(chunk, from, to);
                }
            }
            Err(_) => self.undecodable_sync += 1,
        }
        size
    }

    /// Counts one element of a sync message's change list: a change, a
    /// run of concatenated changes (how version-2 sync messages carry
    /// several), or a whole document.
    fn count_chunk(&mut self, chunk: &[u8], from: Dev, to: Dev) {
        match split_changes(chunk) {
            Some(parts) if parts.len() > 1 => {
                for part in parts {
                    self.count_one(part, from, to);
                }
            }
            _ => self.count_one(chunk, from, to),
        }
    }

    fn count_one(&mut self, chunk: &[u8], from: Dev, to: Dev) {
        let mut note = |hash: [u8; 32], size: usize| {
            let info = self.changes.entry(hash).or_insert_with(|| ChangeInfo {
                size: size as u64,
                holders: BTreeSet::from([from]),
                at_heal: 1,
            });
            if !info.holders.insert(to) {
                self.redundant_change_bytes += size as u64;
            }
        };
        if let Ok(c) = Change::from_bytes(chunk.to_vec()) {
            note(c.hash().0, c.raw_bytes().len());
        } else if let Ok(doc) = Automerge::load(chunk) {
            self.whole_docs += 1;
            self.whole_doc_bytes += chunk.len() as u64;
            // A whole document sent at once (automerge does this when more
            // than a third of it is missing): count its changes.
            for c in doc.get_changes(&[]) {
                note(c.hash().0, c.raw_bytes().len());
            }
        } else {
            self.undecodable_sync += 1;
        }
    }

    /// After the receiver of a sync message on `session` has answered: a
    /// (session, document) sync with nothing in flight has fallen silent.
    pub fn settle_episode(&mut self, session: u64, doc: [u8; 16]) {
        if let Some(e) = self.episodes.get_mut(&(session, doc)) {
            if !e.done && e.in_flight == 0 {
                e.done = true;
                self.round_trips.push(e.msgs.div_ceil(2));
            }
        }
    }

    /// A session ended: forget its partial messages and open episodes.
    pub fn session_closed(&mut self, session: u64) {
        self.parts.retain(|(s, _, _), _| *s != session);
        let doomed: Vec<_> = self
            .episodes
            .range((session, [0; 16])..=(session, [0xff; 16]))
            .map(|(k, _)| *k)
            .collect();
        for k in doomed {
            self.episodes.remove(&k);
        }
    }

    /// Marks the moment of a heal: what moves after it is counted apart.
    pub fn heal(&mut self) {
        self.frames_at_heal = self.frames;
        self.bytes_by_tag_at_heal = self.bytes_by_tag;
        self.mail_bytes_at_heal = self.mail_bytes;
        self.chunk_bytes_at_heal = self.chunk_bytes;
        self.bytes_at_heal = self.bytes;
        self.at_heal_counts = (
            self.redundant_change_bytes,
            self.whole_doc_bytes,
            self.by_tag[6],
        );
        for c in self.changes.values_mut() {
            c.at_heal = c.holders.len();
        }
    }

    /// Bytes of changes that had to move: (whole run, since the last heal).
    pub fn change_bytes(&self) -> (u64, u64) {
        let mut all = 0;
        let mut since = 0;
        for c in self.changes.values() {
            let n = c.holders.len() as u64;
            all += c.size * (n - 1);
            since += c.size * (n - (c.at_heal as u64).min(n));
        }
        (all, since)
    }

    /// Since the last heal: (redundant change bytes, whole-document bytes,
    /// Heads frames).
    pub fn heal_breakdown(&self) -> (u64, u64, u64) {
        let (r, w, h) = self.at_heal_counts;
        (
            self.redundant_change_bytes - r,
            self.whole_doc_bytes - w,
            self.by_tag[6] - h,
        )
    }

    /// Since the last heal: bytes sent per wire tag (index 1 Hello … 6
    /// Heads), and the change-chunk bytes inside delivered sync messages.
    pub fn heal_bytes_by_kind(&self) -> ([u64; 6], u64) {
        let mut out = [0; 6];
        for (i, o) in out.iter_mut().enumerate() {
            *o = self.bytes_by_tag[i + 1] - self.bytes_by_tag_at_heal[i + 1];
        }
        (out, self.chunk_bytes - self.chunk_bytes_at_heal)
    }

    /// Since the last heal: bytes of sealed relaying, per tag as in
    /// `mail_bytes`.
    pub fn heal_mail_bytes(&self) -> [u64; 4] {
        let mut out = [0; 4];
        for (i, o) in out.iter_mut().enumerate() {
            *o = self.mail_bytes[i] - self.mail_bytes_at_heal[i];
        }
        out
    }

    pub fn since_heal(&self) -> (u64, u64) {
        (
            self.frames - self.frames_at_heal,
            self.bytes - self.bytes_at_heal,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::transaction::Transactable;

    #[test]
    fn concatenated_changes_are_split_and_counted_one_by_one() {
        let mut doc = Automerge::new();
        for i in 0..3 {
            let mut tx = doc.transaction();
            tx.put(automerge::ROOT, "k", i as i64).unwrap();
            tx.commit();
        }
        let changes: Vec<Vec<u8>> = doc
            .get_changes(&[])
            .iter()
            .map(|c| c.raw_bytes().to_vec())
            .collect();
        let run = changes.concat();
        let parts = split_changes(&run).expect("a run of changes");
        assert_eq!(parts, changes.iter().map(Vec::as_slice).collect::<Vec<_>>());
        assert!(split_changes(&run[..run.len() - 1]).is_none(), "truncated");
        assert!(
            split_changes(&doc.save()).is_none(),
            "a document is not a run"
        );

        let mut acct = Accounting::default();
        acct.count_chunk(&run, 0, 1);
        let total: u64 = changes.iter().map(|c| c.len() as u64).sum();
        assert_eq!(acct.change_bytes().0, total, "every change counted");
        acct.count_chunk(&run, 0, 1);
        assert_eq!(acct.redundant_change_bytes, total, "and every one again");
    }
}
