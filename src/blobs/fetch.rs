//! Fetching blobs, pure (protocol/blobs.md §4): which chunk to ask which
//! device for, and what to make of the answer. The shell sends the
//! requests and writes the chunks; the simulator or a test can drive this
//! alone.
//!
//! Invariants:
//! - a chunk is kept only once it verified against the outline, and the
//!   outline only once it merged to the blob's hash; a device that sends
//!   either wrong is cut and asked for nothing more by this node;
//! - what is in flight is bounded per transfer ([`PER_TRANSFER`]), per
//!   device ([`PER_DEVICE`]) and in all ([`IN_ALL`]), so memory for
//!   responses is bounded by those times one chunk;
//! - a transfer resumes from the chunks it holds: nothing verified is asked
//!   for again.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::ids::{ConversationId, DeviceId, MessageId, Millis};

use super::meta::{Attachment, Key};
use super::tree::{chunk_count, verify_chunk, Cv};
use super::wire::{BlobRequest, BlobResponse, Want};

/// Requests in flight for one blob.
pub const PER_TRANSFER: usize = 4;
/// Requests in flight to one device, over all blobs.
pub const PER_DEVICE: usize = 2;
/// A chunk that took longer than this to come marks its device's link as
/// slow: it is then asked for one chunk at a time, so that little of a
/// blob waits in that link's queues ahead of a text message.
pub const SLOW_MS: Millis = 300;
/// Requests in flight in all.
pub const IN_ALL: usize = 16;
/// How long a device that lacked a part, or was busy, is not asked again
/// for this blob.
pub const RETRY_MS: Millis = 1_000;

/// One blob being fetched.
#[derive(Debug)]
pub struct Fetch {
    pub conversation: ConversationId,
    pub message: MessageId,
    pub attachment: Attachment,
    /// Checked against the hash (empty for a one-chunk blob).
    outline: Option<Vec<Cv>>,
    have: Vec<bool>,
    /// Each request in flight: to whom, and when it was sent.
    inflight: HashMap<Want, (DeviceId, Millis)>,
    /// Devices not to ask again before the time given.
    resting: HashMap<DeviceId, Millis>,
    /// When it started, last kept a chunk or the outline, or last had no
    /// device to ask.
    progress_at: Millis,
}

impl Fetch {
    pub fn held(&self) -> u64 {
        self.have.iter().filter(|h| **h).count() as u64
    }

    pub fn is_done(&self) -> bool {
        self.outline.is_some() && self.have.iter().all(|h| *h)
    }

    pub fn outline(&self) -> Option<&[Cv]> {
        self.outline.as_deref()
    }

    fn wants(&self) -> impl Iterator<Item = Want> + '_ {
        let outline = self.outline.is_none().then_some(Want::Outline);
        let chunks = self
            .outline
            .is_some()
            .then(|| {
                self.have
                    .iter()
                    .enumerate()
                    .filter(|(_, h)| !**h)
                    .map(|(i, _)| Want::Chunk(i as u32))
            })
            .into_iter()
            .flatten();
        outline.into_iter().chain(chunks)
    }
}

/// What to do with an answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing to keep (a refusal, or an answer nobody waits for).
    Nothing,
    /// Keep this verified outline.
    Outline(Key, Vec<Cv>),
    /// Keep this verified chunk; `done` if it was the last one missing.
    Chunk {
        key: Key,
        index: u32,
        bytes: Vec<u8>,
        done: bool,
    },
    /// The device sent what does not verify: cut it; nothing is kept.
    Cut(DeviceId),
}

/// Every fetch under way.
#[derive(Debug, Default)]
pub struct Fetches {
    fetches: BTreeMap<Key, Fetch>,
    per_device: HashMap<DeviceId, usize>,
    /// Devices whose last chunk took longer than [`SLOW_MS`].
    slow: HashSet<DeviceId>,
    in_all: usize,
    /// Devices that sent what does not verify.
    cut: HashSet<DeviceId>,
}

impl Fetches {
    /// Starts fetching `attachment` (of `message` in `conversation`),
    /// holding `have` already (and the outline, if known). False if it is
    /// already under way.
    pub fn start(
        &mut self,
        now: Millis,
        conversation: ConversationId,
        message: MessageId,
        attachment: Attachment,
        outline: Option<Vec<Cv>>,
        mut have: Vec<bool>,
    ) -> bool {
        let key = Key::new(conversation, attachment.hash);
        if self.fetches.contains_key(&key) {
            return false;
        }
        have.resize(chunk_count(attachment.size) as usize, false);
        let outline = outline.or_else(|| (have.len() == 1).then(Vec::new));
        self.fetches.insert(
            key,
            Fetch {
                conversation,
                message,
                attachment,
                outline,
                have,
                inflight: HashMap::new(),
                resting: HashMap::new(),
                progress_at: now,
            },
        );
        true
    }

    pub fn get(&self, key: &Key) -> Option<&Fetch> {
        self.fetches.get(key)
    }

    pub fn len(&self) -> usize {
        self.fetches.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fetches.is_empty()
    }

    pub fn in_flight(&self) -> usize {
        self.in_all
    }

    /// Stops a fetch (done, or given up); what is in flight for it is
    /// forgotten, and its answers will find nobody waiting.
    pub fn stop(&mut self, key: &Key) -> Option<Fetch> {
        let f = self.fetches.remove(key)?;
        for (d, _) in f.inflight.values() {
            self.release(d);
        }
        Some(f)
    }

    fn release(&mut self, d: &DeviceId) {
        if let Some(n) = self.per_device.get_mut(d) {
            *n -= 1;
            if *n == 0 {
                self.per_device.remove(d);
            }
        }
        self.in_all -= 1;
    }

    /// The requests to send now, each marked in flight. `sources(c)` lists
    /// the connected devices that conversation `c` admits.
    pub fn plan(
        &mut self,
        now: Millis,
        mut sources: impl FnMut(&ConversationId) -> Vec<DeviceId>,
    ) -> Vec<(DeviceId, BlobRequest)> {
        let mut out = Vec::new();
        for f in self.fetches.values_mut() {
            if self.in_all >= IN_ALL {
                break;
            }
            let mut devices = sources(&f.conversation);
            if devices.is_empty() {
                // Nobody to ask is not a stall: offline, a fetch waits for
                // a link (bounded by the number of fetches).
                f.progress_at = now;
                continue;
            }
            devices.retain(|d| {
                !self.cut.contains(d) && f.resting.get(d).is_none_or(|until| *until <= now)
            });
            if devices.is_empty() {
                continue;
            }
            // Spread a blob's chunks over its sources, starting where the
            // chunk index falls, so that fetchers of one blob ask different
            // devices for different parts.
            let wants: Vec<Want> = f.wants().filter(|w| !f.inflight.contains_key(w)).collect();
            for w in wants {
                if f.inflight.len() >= PER_TRANSFER || self.in_all >= IN_ALL {
                    break;
                }
                let start = match w {
                    Want::Outline => 0,
                    Want::Chunk(i) => i as usize,
                };
                let slow = &self.slow;
                let limit = |d: &DeviceId| if slow.contains(d) { 1 } else { PER_DEVICE };
                let pick = (0..devices.len())
                    .map(|k| devices[(start + k) % devices.len()])
                    .find(|d| self.per_device.get(d).copied().unwrap_or(0) < limit(d));
                let Some(d) = pick else { break };
                f.inflight.insert(w, (d, now));
                *self.per_device.entry(d).or_default() += 1;
                self.in_all += 1;
                out.push((
                    d,
                    BlobRequest {
                        conversation: f.conversation,
                        message: f.message,
                        hash: f.attachment.hash,
                        want: w,
                    },
                ));
            }
        }
        out
    }

    /// Takes `from`'s answer to `req`.
    pub fn on_response(
        &mut self,
        now: Millis,
        from: DeviceId,
        req: &BlobRequest,
        resp: BlobResponse,
    ) -> Outcome {
        let key = Key::new(req.conversation, req.hash);
        let Some(f) = self.fetches.get_mut(&key) else {
            return Outcome::Nothing;
        };
        let sent = match f.inflight.get(&req.want) {
            Some((d, at)) if *d == from => *at,
            _ => return Outcome::Nothing,
        };
        f.inflight.remove(&req.want);
        if matches!(req.want, Want::Chunk(_)) {
            if now.saturating_sub(sent) > SLOW_MS {
                self.slow.insert(from);
            } else {
                self.slow.remove(&from);
            }
        }
        if self.cut.contains(&from) {
            // Already cut: whatever else it sent is not looked at.
            self.release(&from);
            return Outcome::Nothing;
        }
        let size = f.attachment.size;
        let outcome = match (req.want, resp) {
            (Want::Outline, BlobResponse::Outline(cvs)) => {
                if f.attachment.hash.outlines(&cvs, size) {
                    f.outline = Some(cvs.clone());
                    f.progress_at = now;
                    Outcome::Outline(key, cvs)
                } else {
                    Outcome::Cut(from)
                }
            }
            (Want::Chunk(i), BlobResponse::Chunk(bytes)) => {
                let outline = f.outline.as_deref().unwrap_or_default();
                if f.outline.is_some() && verify_chunk(&req.hash.0, size, outline, i.into(), &bytes)
                {
                    let fresh = !f.have[i as usize];
                    f.have[i as usize] = true;
                    f.progress_at = now;
                    if fresh {
                        Outcome::Chunk {
                            key,
                            index: i,
                            bytes,
                            done: f.is_done(),
                        }
                    } else {
                        Outcome::Nothing
                    }
                } else {
                    Outcome::Cut(from)
                }
            }
            (_, BlobResponse::NotHeld | BlobResponse::Busy | BlobResponse::Unavailable) => {
                f.resting.insert(from, now + RETRY_MS);
                Outcome::Nothing
            }
            // An answer of the wrong kind is as wrong as a bad chunk.
            _ => Outcome::Cut(from),
        };
        self.release(&from);
        if let Outcome::Cut(d) = &outcome {
            self.cut.insert(*d);
        }
        outcome
    }

    /// `req` to `from` failed (stream error, timeout, the connection gone).
    pub fn on_failure(&mut self, now: Millis, from: DeviceId, req: &BlobRequest) {
        if let Some(f) = self.fetches.get_mut(&Key::new(req.conversation, req.hash)) {
            if f.inflight.get(&req.want).is_some_and(|(d, _)| *d == from) {
                f.inflight.remove(&req.want);
                f.resting.insert(from, now + RETRY_MS);
                self.release(&from);
            }
        }
    }

    /// The fetches that kept nothing for `after` ms.
    pub fn stalled(&self, now: Millis, after: Millis) -> Vec<Key> {
        self.fetches
            .iter()
            .filter(|(_, f)| now.saturating_sub(f.progress_at) >= after)
            .map(|(k, _)| *k)
            .collect()
    }

    /// Whether `d` sent what does not verify.
    pub fn is_cut(&self, d: &DeviceId) -> bool {
        self.cut.contains(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blobs::tree::{outline, CHUNK_LEN};
    use crate::blobs::BlobHash;

    fn att(data: &[u8]) -> Attachment {
        Attachment {
            hash: BlobHash::of(data),
            size: data.len() as u64,
            media_type: "application/pdf".into(),
            name: "lab.pdf".into(),
            thumbnail: vec![],
        }
    }

    /// A fetch of `data` whose outline is already known.
    fn with_outline(data: &[u8]) -> Fetches {
        let mut fs = Fetches::default();
        let c = ConversationId([5; 16]);
        fs.start(
            0,
            c,
            MessageId([6; 16]),
            att(data),
            Some(outline(data)),
            vec![],
        );
        fs
    }

    fn answer(data: &[u8], req: &BlobRequest) -> BlobResponse {
        match req.want {
            Want::Outline => BlobResponse::Outline(outline(data)),
            Want::Chunk(i) => {
                let c = CHUNK_LEN as usize;
                let s = i as usize * c;
                BlobResponse::Chunk(data[s..(s + c).min(data.len())].to_vec())
            }
        }
    }

    #[test]
    fn a_blob_is_fetched_from_two_devices_within_the_bounds() {
        let data: Vec<u8> = (0..(10 * CHUNK_LEN as usize + 9))
            .map(|i| i as u8)
            .collect();
        let (a, b) = (DeviceId([1; 32]), DeviceId([2; 32]));
        let mut fs = Fetches::default();
        let c = ConversationId([5; 16]);
        assert!(fs.start(0, c, MessageId([6; 16]), att(&data), None, vec![]));
        let mut kept = vec![None; 11];
        let mut asked = HashMap::<DeviceId, usize>::new();
        for round in 0..100 {
            let reqs = fs.plan(round, |_| vec![a, b]);
            assert!(fs.in_flight() <= PER_TRANSFER);
            if reqs.is_empty() {
                break;
            }
            for (d, req) in reqs {
                *asked.entry(d).or_default() += 1;
                match fs.on_response(round, d, &req, answer(&data, &req)) {
                    Outcome::Chunk { index, bytes, .. } => kept[index as usize] = Some(bytes),
                    Outcome::Outline(..) | Outcome::Nothing => {}
                    Outcome::Cut(d) => panic!("cut {d:?}"),
                }
            }
        }
        assert!(fs.get(&Key::new(c, BlobHash::of(&data))).unwrap().is_done());
        let whole: Vec<u8> = kept.into_iter().flat_map(Option::unwrap).collect();
        assert_eq!(whole, data);
        assert!(asked[&a] > 1 && asked[&b] > 1, "{asked:?}");
    }

    #[test]
    fn a_bad_chunk_cuts_its_sender_keeps_nothing_and_others_finish() {
        let data: Vec<u8> = (0..(3 * CHUNK_LEN as usize))
            .map(|i| (i / 7) as u8)
            .collect();
        let (liar, honest) = (DeviceId([1; 32]), DeviceId([2; 32]));
        let mut fs = with_outline(&data);
        let mut cut = 0;
        for round in 0..50 {
            for (d, req) in fs.plan(round, |_| vec![liar, honest]) {
                let mut resp = answer(&data, &req);
                if d == liar {
                    if let BlobResponse::Chunk(b) = &mut resp {
                        b[100] ^= 0x40;
                    }
                }
                match fs.on_response(round, d, &req, resp) {
                    Outcome::Cut(who) => {
                        assert_eq!(who, liar);
                        cut += 1;
                    }
                    Outcome::Chunk { .. } => assert_eq!(d, honest),
                    _ => {}
                }
            }
        }
        assert_eq!(cut, 1);
        assert!(fs.is_cut(&liar));
        assert!(fs
            .get(&Key::new(ConversationId([5; 16]), BlobHash::of(&data)))
            .unwrap()
            .is_done());
    }

    #[test]
    fn a_device_whose_chunks_come_slowly_is_asked_for_one_at_a_time() {
        let data = vec![1u8; 8 * CHUNK_LEN as usize];
        let d = DeviceId([1; 32]);
        let mut fs = with_outline(&data);
        let first = fs.plan(0, |_| vec![d]);
        assert_eq!(first.len(), PER_DEVICE);
        // The first answer takes a second: the link is slow.
        fs.on_response(1_000, d, &first[0].1, answer(&data, &first[0].1));
        fs.on_response(1_000, d, &first[1].1, answer(&data, &first[1].1));
        let next = fs.plan(1_000, |_| vec![d]);
        assert_eq!(next.len(), 1, "one at a time over a slow link");
        // Quick again: back to two.
        fs.on_response(1_050, d, &next[0].1, answer(&data, &next[0].1));
        assert_eq!(fs.plan(1_050, |_| vec![d]).len(), PER_DEVICE);
    }

    #[test]
    fn a_fetch_nobody_supplies_stalls_but_one_with_nobody_to_ask_waits() {
        let data = vec![1u8; 3 * CHUNK_LEN as usize];
        let d = DeviceId([1; 32]);
        let mut fs = with_outline(&data);
        // Offline for ten minutes: waiting, not stalled.
        for t in (0..600_000).step_by(1_000) {
            assert!(fs.plan(t, |_| vec![]).is_empty());
        }
        assert!(fs.stalled(600_000, 120_000).is_empty());
        // A device that never has it: stalled two minutes later.
        for t in (600_000..721_000).step_by(1_000) {
            for (dev, req) in fs.plan(t, |_| vec![d]) {
                fs.on_response(t, dev, &req, BlobResponse::NotHeld);
            }
        }
        assert_eq!(fs.stalled(721_000, 120_000).len(), 1);
    }

    #[test]
    fn a_resumed_fetch_asks_only_for_what_it_lacks() {
        let data = vec![3u8; 4 * CHUNK_LEN as usize];
        let mut fs = Fetches::default();
        let have = vec![true, false, true, false];
        fs.start(
            0,
            ConversationId([5; 16]),
            MessageId([6; 16]),
            att(&data),
            Some(outline(&data)),
            have,
        );
        let asked: Vec<Want> = fs
            .plan(0, |_| vec![DeviceId([1; 32]), DeviceId([2; 32])])
            .into_iter()
            .map(|(_, r)| r.want)
            .collect();
        assert_eq!(asked, vec![Want::Chunk(1), Want::Chunk(3)]);
    }
}
