//! The attachment decoders and checks (protocol/blobs.md): the blob
//! protocol's requests and responses, a peer's answers fed to a fetch of a
//! genuine blob, and photo metadata stripping on any file a user attaches.
//!
//! Promises checked: decoders never panic and round-trip; a fetch keeps
//! only chunks that are the genuine blob's (whatever a peer answers), and
//! finishes only holding the genuine blob whole; stripping never panics,
//! and what it returns is stripped already (stripping it again changes
//! nothing).

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use huddle::blobs::fetch::{Fetches, Outcome};
use huddle::blobs::strip::strip;
use huddle::blobs::tree::{outline, Cv, CHUNK_LEN};
use huddle::blobs::wire::{BlobRequest, BlobResponse, Want};
use huddle::blobs::{Attachment, BlobHash};
use huddle::ids::{ConversationId, DeviceId, MessageId};

use super::structured;

/// A genuine blob of four chunks, its outline.
fn genuine() -> &'static (Vec<u8>, Vec<Cv>) {
    static G: OnceLock<(Vec<u8>, Vec<Cv>)> = OnceLock::new();
    G.get_or_init(|| {
        let b: Vec<u8> = (0..(3 * CHUNK_LEN as usize + 77))
            .map(|i| (i % 251) as u8)
            .collect();
        let o = outline(&b);
        (b, o)
    })
}

#[derive(Arbitrary, Debug)]
enum Answer {
    /// The genuine part asked for.
    Genuine,
    /// The genuine part with one byte changed.
    Flipped(u16),
    Outline(Vec<[u8; 32]>),
    Chunk(Vec<u8>),
    Unavailable,
    NotHeld,
    Busy,
    /// The stream failed.
    Failed,
}

#[derive(Arbitrary, Debug)]
enum Input {
    Request(Vec<u8>),
    Response(Vec<u8>),
    Strip(Vec<u8>),
    /// Rounds of answers from three peers to whatever the fetch asks.
    Fetch(Vec<(u8, Answer)>),
}

pub fn blobs(data: &[u8]) {
    let Some(input) = structured::<Input>(data) else {
        return;
    };
    match input {
        Input::Request(b) => {
            if let Ok(r) = BlobRequest::decode(&b) {
                assert_eq!(BlobRequest::decode(&r.encode()).as_ref(), Ok(&r));
            }
        }
        Input::Response(b) => {
            if let Ok(r) = BlobResponse::decode(&b) {
                assert_eq!(BlobResponse::decode(&r.encode()).as_ref(), Ok(&r));
            }
        }
        Input::Strip(b) => {
            if let Ok((once, _)) = strip(&b) {
                let (twice, changed) = strip(&once).expect("what strip returns, it reads again");
                assert!(!changed && twice == once, "stripping is idempotent");
            }
        }
        Input::Fetch(rounds) => fetch(rounds),
    }
}

fn fetch(rounds: Vec<(u8, Answer)>) {
    let (data, cvs) = genuine();
    let hash = BlobHash::of(data);
    let att = Attachment {
        hash,
        size: data.len() as u64,
        media_type: "application/pdf".into(),
        name: "lab.pdf".into(),
        thumbnail: vec![],
    };
    let peers = [DeviceId([1; 32]), DeviceId([2; 32]), DeviceId([3; 32])];
    let mut fs = Fetches::default();
    fs.start(
        0,
        ConversationId([1; 16]),
        MessageId([2; 16]),
        att,
        None,
        vec![],
    );
    let mut now = 0;
    let mut pending: Vec<(DeviceId, BlobRequest)> = Vec::new();
    let mut kept = [false; 4];
    for (pick, answer) in rounds {
        now += 500;
        pending.extend(fs.plan(now, |_| peers.to_vec()));
        if pending.is_empty() {
            continue;
        }
        let (peer, req) = pending.remove(pick as usize % pending.len());
        let genuine_part = match req.want {
            Want::Outline => BlobResponse::Outline(cvs.clone()),
            Want::Chunk(i) => {
                let at = i as usize * CHUNK_LEN as usize;
                BlobResponse::Chunk(data[at..(at + CHUNK_LEN as usize).min(data.len())].to_vec())
            }
        };
        let resp = match answer {
            Answer::Genuine => genuine_part,
            Answer::Flipped(at) => match genuine_part {
                BlobResponse::Outline(mut o) => {
                    let n = o.len();
                    o[at as usize % n][at as usize % 32] ^= 1;
                    BlobResponse::Outline(o)
                }
                BlobResponse::Chunk(mut c) => {
                    let n = c.len();
                    c[at as usize % n] ^= 1;
                    BlobResponse::Chunk(c)
                }
                r => r,
            },
            Answer::Outline(o) => BlobResponse::Outline(o),
            Answer::Chunk(c) => BlobResponse::Chunk(c),
            Answer::Unavailable => BlobResponse::Unavailable,
            Answer::NotHeld => BlobResponse::NotHeld,
            Answer::Busy => BlobResponse::Busy,
            Answer::Failed => {
                fs.on_failure(now, peer, &req);
                continue;
            }
        };
        match fs.on_response(now, peer, &req, resp) {
            Outcome::Outline(h, o) => {
                assert_eq!(h.hash, hash);
                assert_eq!(&o, cvs, "only the genuine outline is kept");
            }
            Outcome::Chunk {
                index, bytes, done, ..
            } => {
                let at = index as usize * CHUNK_LEN as usize;
                assert_eq!(
                    &bytes[..],
                    &data[at..(at + CHUNK_LEN as usize).min(data.len())],
                    "only genuine chunks are kept"
                );
                assert!(!kept[index as usize], "a chunk is kept once");
                kept[index as usize] = true;
                assert_eq!(done, kept.iter().all(|k| *k));
            }
            Outcome::Cut(d) => assert_eq!(d, peer),
            Outcome::Nothing => {}
        }
    }
}
