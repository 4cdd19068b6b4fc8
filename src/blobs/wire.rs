//! The blob protocol's messages (protocol/blobs.md §3): one request, one
//! response, on a stream of their own (`/huddle/blob/1`), never on the
//! frame stream that carries text.
//!
//! Invariant: a request names the conversation and message whose
//! attachment it wants as well as the blob, and every response length is
//! bounded by what was asked for before anything is allocated.

use crate::codec::{DecodeError, Reader, Writer};
use crate::ids::{ConversationId, MessageId};

use super::meta::{BlobHash, MAX_OUTLINE};
use super::tree::{Cv, CHUNK_LEN};

/// The libp2p protocol id.
pub const PROTOCOL: &str = "/huddle/blob/1";
/// Most bytes of an encoded request.
pub const MAX_REQUEST_LEN: usize = 128;
/// Most bytes of an encoded response (a whole outline, or one chunk).
pub const MAX_RESPONSE_LEN: usize = 16 + max(MAX_OUTLINE * 32, CHUNK_LEN as usize);

const fn max(a: usize, b: usize) -> usize {
    if a > b {
        a
    } else {
        b
    }
}
const VERSION: u8 = 1;

/// What a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Want {
    /// The blob's outline (every chunk's chaining value).
    Outline,
    /// One chunk.
    Chunk(u32),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobRequest {
    pub conversation: ConversationId,
    pub message: MessageId,
    pub hash: BlobHash,
    pub want: Want,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlobResponse {
    Outline(Vec<Cv>),
    Chunk(Vec<u8>),
    /// The same answer whether the requester is not admitted, the message
    /// is unknown, it references no such blob, or the blob is over the
    /// limit: nothing to learn by probing.
    Unavailable,
    /// Admitted, but this device does not hold that part (yet).
    NotHeld,
    /// Too many transfers served at once; ask another device or later.
    Busy,
}

impl BlobRequest {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(72);
        w.u8(VERSION)
            .raw(&self.conversation.0)
            .raw(&self.message.0)
            .raw(&self.hash.0);
        match self.want {
            Want::Outline => w.u8(1),
            Want::Chunk(i) => w.u8(2).varint(i.into()),
        };
        w.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<BlobRequest, DecodeError> {
        let mut r = Reader::new(bytes);
        let v = r.u8("blob request version")?;
        if v != VERSION {
            return Err(DecodeError::Unknown("blob request version", v.into()));
        }
        let conversation = ConversationId(r.array("conversation")?);
        let message = MessageId(r.array("message")?);
        let hash = BlobHash(r.array("blob hash")?);
        let want = match r.u8("want")? {
            1 => Want::Outline,
            2 => {
                let i = r.varint("chunk index")?;
                if i >= MAX_OUTLINE as u64 {
                    return Err(DecodeError::Invalid("a chunk index past any blob"));
                }
                Want::Chunk(i as u32)
            }
            k => return Err(DecodeError::Unknown("want", k.into())),
        };
        r.finish()?;
        Ok(BlobRequest {
            conversation,
            message,
            hash,
            want,
        })
    }
}

impl BlobResponse {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        match self {
            BlobResponse::Outline(cvs) => {
                w.u8(1).varint(cvs.len() as u64);
                for cv in cvs {
                    w.raw(cv);
                }
            }
            BlobResponse::Chunk(b) => {
                w.u8(2).bytes(b);
            }
            BlobResponse::Unavailable => {
                w.u8(3);
            }
            BlobResponse::NotHeld => {
                w.u8(4);
            }
            BlobResponse::Busy => {
                w.u8(5);
            }
        }
        w.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<BlobResponse, DecodeError> {
        let mut r = Reader::new(bytes);
        let out = match r.u8("blob response")? {
            1 => {
                let n = r.count(MAX_OUTLINE, 32, "outline")?;
                let mut cvs = Vec::with_capacity(n);
                for _ in 0..n {
                    cvs.push(r.array("chaining value")?);
                }
                BlobResponse::Outline(cvs)
            }
            2 => BlobResponse::Chunk(r.bytes(CHUNK_LEN as usize, "chunk")?.to_vec()),
            3 => BlobResponse::Unavailable,
            4 => BlobResponse::NotHeld,
            5 => BlobResponse::Busy,
            k => return Err(DecodeError::Unknown("blob response", k.into())),
        };
        r.finish()?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_responses_round_trip_and_bounds_hold() {
        let req = BlobRequest {
            conversation: ConversationId([1; 16]),
            message: MessageId([2; 16]),
            hash: BlobHash([3; 32]),
            want: Want::Chunk(79),
        };
        let b = req.encode();
        assert!(b.len() <= MAX_REQUEST_LEN);
        assert_eq!(BlobRequest::decode(&b).unwrap(), req);
        let mut long = b.clone();
        long.push(0);
        assert!(BlobRequest::decode(&long).is_err());
        for resp in [
            BlobResponse::Outline(vec![[7; 32]; 3]),
            BlobResponse::Chunk(vec![9; 1000]),
            BlobResponse::Unavailable,
            BlobResponse::NotHeld,
            BlobResponse::Busy,
        ] {
            assert_eq!(BlobResponse::decode(&resp.encode()).unwrap(), resp);
        }
        let big = BlobResponse::Outline(vec![[0; 32]; MAX_OUTLINE]).encode();
        assert!(big.len() <= MAX_RESPONSE_LEN);
        let chunk = BlobResponse::Chunk(vec![0; CHUNK_LEN as usize]).encode();
        assert!(chunk.len() <= MAX_RESPONSE_LEN);
        // A count past the bound is refused before anything is allocated.
        let mut w = Writer::new();
        w.u8(1).varint(MAX_OUTLINE as u64 + 1);
        assert!(BlobResponse::decode(&w.finish()).is_err());
    }
}
