//! The frames two huddle nodes exchange over `/huddle/sync/2`. This is the
//! only code that knows their byte layout; `protocol/wire.md` specifies it
//! and `protocol/vectors/` holds test vectors checked by `tests/vectors/`.
//!
//! Invariant: decoding never panics and never allocates beyond the frame it
//! was given; anything unexpected is a [`DecodeError`], which the node turns
//! into a disconnect with a logged reason.

use crate::codec::{DecodeError, Reader, Writer};
use crate::header::ConversationHeader;
use crate::membership::{Pass, Revocation, Secret};

/// The protocol version carried in `Hello`: 9 since team devices carry
/// sealed envelopes for conversations they are not in (`Sealed`,
/// `MailIds`, `MailWant`, `MailDone`: sealed.md; a version-8 node would
/// refuse them),
/// 8 since administrators ask
/// members for their audit trails (`TrailAsk`, `Trail`: sync.md §8; a
/// version-7 node would refuse both frames), 7 since messages may carry
/// attachments (field 4, wire.md §7c) fetched over `/huddle/blob/1`
/// (blobs.md), and an entry may be 32 KiB (a version-6 node would refuse
/// both), 6 since messages may carry
/// tagged fields (version-2 messages: who must acknowledge, escalation
/// entries, reminders), receipts mark reminders done or snoozed, and the
/// team document (a new id) carries the clinical policy and the on-call
/// roster (sync.md §7.6; a version-5 node would refuse them all as breaking
/// the rules), 5 since a node refused because
/// it is revoked is shown the signed revocation first (`Revoked`, sync.md
/// §2.1; a version-4 device never learnt it), 4 since a hello carries only a
/// certificate's pass and the rest follows in `Identify` to proven members
/// (wire.md §4.2; a version-3 hello told anyone our name and roles), 3 since
/// group and role ids are derived from their headers (wire.md §2; a version-2 node would take a
/// header claiming any id), 2 since conversations' message lists are paged
/// (sync.md §7.1; a version-1 node would read only page 0).
pub const PROTOCOL_VERSION: u8 = 9;
/// The libp2p protocol id for frames.
pub const PROTOCOL_ID: &str = "/huddle/sync/2";
/// Hard upper bound on one frame, enforced by the transport and again here.
pub const MAX_FRAME_LEN: usize = 1024 * 1024;
/// Sync messages larger than this are split into several `Sync` frames.
/// A frame is written whole, so this is also the most a STAT frame queued
/// behind a catch-up waits for beyond what the transport already holds:
/// 2 s of a 256 kbit/s link (transport.md §5.1).
pub const SYNC_CHUNK_LEN: usize = 64 * 1024;
/// Most catalog entries in one frame (the catalog may span frames).
pub const MAX_CATALOG_ENTRIES: usize = 16 * 1024;
/// Heads listed for one document in a `Heads` frame; a document with more is
/// announced with none, which tells the receiver to pull.
pub const MAX_ANNOUNCED_HEADS: usize = 4096;
/// A sender starts a new `Heads` frame once one reaches this many bytes.
pub const HEADS_FRAME_SOFT_LEN: usize = 256 * 1024;

const TAG_HELLO: u8 = 1;
const TAG_REFUSE: u8 = 2;
const TAG_CATALOG: u8 = 3;
const TAG_HEADER: u8 = 4;
const TAG_SYNC: u8 = 5;
const TAG_HEADS: u8 = 6;
const TAG_IDENTIFY: u8 = 7;
const TAG_REVOKED: u8 = 8;
const TAG_TRAIL_ASK: u8 = 9;
const TAG_TRAIL: u8 = 10;
const TAG_SEALED: u8 = 11;
const TAG_MAIL_IDS: u8 = 12;
const TAG_MAIL_DONE: u8 = 13;
const TAG_MAIL_WANT: u8 = 14;
/// Most envelopes one `Sealed` frame carries.
pub const MAX_SEALED_PER_FRAME: usize = 64;
/// Most ids a `MailIds` or `MailWant` frame lists.
pub const MAX_MAIL_IDS: usize = 24 * 1024;
/// Most done secrets in one `MailDone` frame.
pub const MAX_MAIL_DONE: usize = 8 * 1024;
/// Most audit entries in one `Trail` frame (each at most
/// [`crate::trail::MAX_ENTRY_LEN`] bytes).
pub const MAX_TRAIL_ENTRIES: usize = 256;
/// Most trails a `TrailAsk` lists.
pub const MAX_TRAIL_CHAINS: usize = 4096;
/// Bytes of a revocation in a `Revoked` frame (one is 122 or 138).
const MAX_REVOCATION_LEN: usize = 256;

/// Why a node refuses or drops a peer. Sent in `Refuse` and logged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// This node has no membership certificate yet.
    NotAMember,
    WrongTeam,
    BadSignature,
    Expired,
    NotYetValid,
    Revoked,
    /// The certificate names a different device key than Noise authenticated.
    WrongDevice,
    UnsupportedVersion,
    /// A frame arrived that is not allowed in the current state.
    ProtocolViolation,
    /// A frame did not decode.
    Malformed,
    /// A frame, buffer or queue limit was exceeded.
    LimitExceeded,
    /// No hello arrived in time.
    HelloTimeout,
    /// Anything this version does not know.
    Other(u8),
}

impl Reason {
    pub fn code(self) -> u8 {
        match self {
            Reason::NotAMember => 1,
            Reason::WrongTeam => 2,
            Reason::BadSignature => 3,
            Reason::Expired => 4,
            Reason::NotYetValid => 5,
            Reason::Revoked => 6,
            Reason::WrongDevice => 7,
            Reason::UnsupportedVersion => 8,
            Reason::ProtocolViolation => 9,
            Reason::Malformed => 10,
            Reason::LimitExceeded => 11,
            Reason::HelloTimeout => 12,
            Reason::Other(c) => c,
        }
    }

    pub fn from_code(c: u8) -> Reason {
        match c {
            1 => Reason::NotAMember,
            2 => Reason::WrongTeam,
            3 => Reason::BadSignature,
            4 => Reason::Expired,
            5 => Reason::NotYetValid,
            6 => Reason::Revoked,
            7 => Reason::WrongDevice,
            8 => Reason::UnsupportedVersion,
            9 => Reason::ProtocolViolation,
            10 => Reason::Malformed,
            11 => Reason::LimitExceeded,
            12 => Reason::HelloTimeout,
            c => Reason::Other(c),
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Reason::NotAMember => "no membership certificate",
            Reason::WrongTeam => "certificate of another team",
            Reason::BadSignature => "certificate signature does not verify",
            Reason::Expired => "certificate expired",
            Reason::NotYetValid => "certificate not valid yet",
            Reason::Revoked => "device or member revoked",
            Reason::WrongDevice => "certificate is for another device key",
            Reason::UnsupportedVersion => "unsupported protocol version",
            Reason::ProtocolViolation => "protocol violation",
            Reason::Malformed => "malformed frame",
            Reason::LimitExceeded => "limit exceeded",
            Reason::HelloTimeout => "no hello in time",
            Reason::Other(c) => return write!(f, "reason {c}"),
        };
        f.write_str(s)
    }
}

/// One catalog entry: a document the sender shares with the receiver, and a
/// digest of the sender's heads for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatalogEntry {
    pub doc: [u8; 16],
    pub heads: [u8; 16],
}

/// One `Heads` entry: a document and the sender's heads for it (Automerge
/// change hashes, sorted), so the receiver can tell whether it lacks any.
/// No heads means "more than [`MAX_ANNOUNCED_HEADS`]": pull to find out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeadsEntry {
    pub doc: [u8; 16],
    pub heads: Vec<[u8; 32]>,
}

impl HeadsEntry {
    pub fn encoded_len(&self) -> usize {
        16 + 3 + 32 * self.heads.len()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// First frame on a connection, both ways: protocol version and the
    /// pass of the sender's membership certificate (no name, member, roles
    /// or team: sync.md §2).
    Hello { version: u8, pass: Pass },
    /// The rest of the sender's certificate, sent only once the receiver's
    /// pass verified under the sender's team key.
    Identify { secret: Secret },
    /// The sender refuses the connection; it closes right after.
    Refuse { reason: Reason },
    /// Sent just before `Refuse(Revoked)`: the authority's signed
    /// revocation of the receiver's device or member, so that the revoked
    /// device learns it (and can tell its user) though it syncs nothing.
    Revoked { revocation: Revocation },
    /// The documents the sender shares with the receiver; `last` is set on
    /// the final frame of the catalog.
    Catalog {
        entries: Vec<CatalogEntry>,
        last: bool,
    },
    /// A conversation header the receiver is a member of but lacks.
    Header { header: ConversationHeader },
    /// Part of an Automerge sync message for document `doc`; `more` is set
    /// on every part but the last.
    Sync {
        doc: [u8; 16],
        more: bool,
        data: Vec<u8>,
    },
    /// The sender's heads of these documents changed: a receiver that lacks
    /// any of them pulls (a sync round).
    /// This is how changes travel past the first hop without every node
    /// pushing every change it hears to every peer.
    Heads { entries: Vec<HeadsEntry> },
    /// An administrator asks for the audit trails the receiver holds
    /// (sync.md §8): `proof` is the team authority's signature naming the
    /// sender, `have` how much of each trail the sender holds already.
    TrailAsk {
        proof: [u8; 64],
        have: Vec<TrailHave>,
    },
    /// Audit entries for an administrator, in trail order per device; `len`
    /// and `head` are the sender's own trail as it stands; `answer` is set
    /// on the answer to a `TrailAsk` (else the frame pushes one new entry);
    /// `more` when the sender held back entries to stay within the bound.
    Trail {
        len: u64,
        head: [u8; 32],
        answer: bool,
        more: bool,
        entries: Vec<Vec<u8>>,
    },
    /// Sealed envelopes for the receiver to carry (sealed.md §4): any team
    /// device may receive them; only their recipients can open them.
    Sealed { envelopes: Vec<Vec<u8>> },
    /// Envelopes the sender holds or deleted as delivered: all of them when
    /// a session starts, then each one it takes. The receiver asks for
    /// those it lacks (`MailWant`), from one peer at a time.
    MailIds { ids: Vec<[u8; 32]> },
    /// Send me these envelopes (answered with `Sealed`, each at most once
    /// a session).
    MailWant { ids: Vec<[u8; 32]> },
    /// Recipients' done secrets: a carrier deletes an envelope once every
    /// slot's secret is shown.
    MailDone { done: Vec<MailDoneEntry> },
}

/// Slot `slot` of envelope `id` was opened by its recipient, which showed
/// `secret` (its commitment is in the slot).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MailDoneEntry {
    pub id: [u8; 32],
    pub slot: u16,
    pub secret: [u8; 32],
}

/// How much of one device's audit trail the sender of a `TrailAsk` holds:
/// `len` entries, the last of them hashing to `head` (zeros when none).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrailHave {
    pub device: [u8; 32],
    pub len: u64,
    pub head: [u8; 32],
}

impl Frame {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        match self {
            Frame::Hello { version, pass } => {
                w.u8(TAG_HELLO).u8(*version).raw(&pass.encode());
            }
            Frame::Identify { secret } => {
                w.u8(TAG_IDENTIFY);
                secret.write(&mut w);
            }
            Frame::Refuse { reason } => {
                w.u8(TAG_REFUSE).u8(reason.code());
            }
            Frame::Revoked { revocation } => {
                w.u8(TAG_REVOKED).bytes(&revocation.encode());
            }
            Frame::Catalog { entries, last } => {
                w.u8(TAG_CATALOG)
                    .u8(u8::from(*last))
                    .varint(entries.len() as u64);
                for e in entries {
                    w.raw(&e.doc).raw(&e.heads);
                }
            }
            Frame::Header { header } => {
                w.u8(TAG_HEADER).bytes(&header.encode());
            }
            Frame::Sync { doc, more, data } => {
                w.u8(TAG_SYNC).raw(doc).u8(u8::from(*more)).bytes(data);
            }
            Frame::Heads { entries } => {
                w.u8(TAG_HEADS).varint(entries.len() as u64);
                for e in entries {
                    w.raw(&e.doc).varint(e.heads.len() as u64);
                    for h in &e.heads {
                        w.raw(h);
                    }
                }
            }
            Frame::TrailAsk { proof, have } => {
                w.u8(TAG_TRAIL_ASK).raw(proof).varint(have.len() as u64);
                for h in have {
                    w.raw(&h.device).u64_be(h.len).raw(&h.head);
                }
            }
            Frame::Trail {
                len,
                head,
                answer,
                more,
                entries,
            } => {
                w.u8(TAG_TRAIL)
                    .u64_be(*len)
                    .raw(head)
                    .u8(u8::from(*answer))
                    .u8(u8::from(*more))
                    .varint(entries.len() as u64);
                for e in entries {
                    w.bytes(e);
                }
            }
            Frame::Sealed { envelopes } => {
                w.u8(TAG_SEALED).varint(envelopes.len() as u64);
                for e in envelopes {
                    w.bytes(e);
                }
            }
            Frame::MailIds { ids } => {
                w.u8(TAG_MAIL_IDS).varint(ids.len() as u64);
                for id in ids {
                    w.raw(id);
                }
            }
            Frame::MailWant { ids } => {
                w.u8(TAG_MAIL_WANT).varint(ids.len() as u64);
                for id in ids {
                    w.raw(id);
                }
            }
            Frame::MailDone { done } => {
                w.u8(TAG_MAIL_DONE).varint(done.len() as u64);
                for d in done {
                    w.raw(&d.id).raw(&d.slot.to_be_bytes()).raw(&d.secret);
                }
            }
        }
        w.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<Frame, DecodeError> {
        if bytes.len() > MAX_FRAME_LEN {
            return Err(DecodeError::TooLong("frame", MAX_FRAME_LEN));
        }
        let mut r = Reader::new(bytes);
        let frame = match r.u8("frame tag")? {
            TAG_HELLO => {
                let version = r.u8("version")?;
                if version != PROTOCOL_VERSION {
                    // What follows may be in a format this version does not know.
                    return Err(DecodeError::Unknown("protocol version", version.into()));
                }
                Frame::Hello {
                    version,
                    pass: Pass::read(&mut r)?,
                }
            }
            TAG_IDENTIFY => Frame::Identify {
                secret: Secret::read(&mut r)?,
            },
            TAG_REFUSE => Frame::Refuse {
                reason: Reason::from_code(r.u8("reason")?),
            },
            TAG_REVOKED => Frame::Revoked {
                revocation: Revocation::decode(r.bytes(MAX_REVOCATION_LEN, "revocation")?)?,
            },
            TAG_CATALOG => {
                let last = flag(&mut r, "last flag")?;
                let entries = catalog_entries(&mut r)?;
                Frame::Catalog { entries, last }
            }
            TAG_HEADER => Frame::Header {
                header: ConversationHeader::decode(r.bytes(MAX_FRAME_LEN, "header")?)?,
            },
            TAG_SYNC => Frame::Sync {
                doc: r.array("document id")?,
                more: flag(&mut r, "more flag")?,
                data: r.bytes(MAX_FRAME_LEN, "sync data")?.to_vec(),
            },
            TAG_HEADS => {
                let n = r.count(MAX_CATALOG_ENTRIES, 17, "heads entries")?;
                let mut entries = Vec::with_capacity(n);
                for _ in 0..n {
                    let doc = r.array("document id")?;
                    let k = r.count(MAX_ANNOUNCED_HEADS, 32, "heads")?;
                    let mut heads = Vec::with_capacity(k);
                    for _ in 0..k {
                        heads.push(r.array("head")?);
                    }
                    entries.push(HeadsEntry { doc, heads });
                }
                Frame::Heads { entries }
            }
            TAG_TRAIL_ASK => {
                let proof = r.array("admin proof")?;
                let n = r.count(MAX_TRAIL_CHAINS, 72, "trails")?;
                let mut have = Vec::with_capacity(n);
                for _ in 0..n {
                    have.push(TrailHave {
                        device: r.array("device")?,
                        len: r.u64_be("trail length")?,
                        head: r.array("trail head")?,
                    });
                }
                Frame::TrailAsk { proof, have }
            }
            TAG_TRAIL => {
                let len = r.u64_be("trail length")?;
                let head = r.array("trail head")?;
                let answer = flag(&mut r, "answer flag")?;
                let more = flag(&mut r, "more flag")?;
                let n = r.count(MAX_TRAIL_ENTRIES, 1, "audit entries")?;
                let mut entries = Vec::with_capacity(n);
                for _ in 0..n {
                    entries.push(
                        r.bytes(crate::trail::MAX_ENTRY_LEN, "audit entry")?
                            .to_vec(),
                    );
                }
                Frame::Trail {
                    len,
                    head,
                    answer,
                    more,
                    entries,
                }
            }
            TAG_SEALED => {
                let n = r.count(MAX_SEALED_PER_FRAME, 1, "envelopes")?;
                let mut envelopes = Vec::with_capacity(n);
                for _ in 0..n {
                    envelopes.push(
                        r.bytes(crate::sealed::MAX_ENVELOPE_LEN, "envelope")?
                            .to_vec(),
                    );
                }
                Frame::Sealed { envelopes }
            }
            TAG_MAIL_IDS => {
                let n = r.count(MAX_MAIL_IDS, 32, "mailbox ids")?;
                let mut ids = Vec::with_capacity(n);
                for _ in 0..n {
                    ids.push(r.array("envelope id")?);
                }
                Frame::MailIds { ids }
            }
            TAG_MAIL_WANT => {
                let n = r.count(MAX_MAIL_IDS, 32, "wanted ids")?;
                let mut ids = Vec::with_capacity(n);
                for _ in 0..n {
                    ids.push(r.array("envelope id")?);
                }
                Frame::MailWant { ids }
            }
            TAG_MAIL_DONE => {
                let n = r.count(MAX_MAIL_DONE, 66, "done secrets")?;
                let mut done = Vec::with_capacity(n);
                for _ in 0..n {
                    done.push(MailDoneEntry {
                        id: r.array("envelope id")?,
                        slot: u16::from_be_bytes(r.array("slot")?),
                        secret: r.array("done secret")?,
                    });
                }
                Frame::MailDone { done }
            }
            t => return Err(DecodeError::Unknown("frame tag", t.into())),
        };
        r.finish()?;
        Ok(frame)
    }
}

fn catalog_entries(r: &mut Reader<'_>) -> Result<Vec<CatalogEntry>, DecodeError> {
    let n = r.count(MAX_CATALOG_ENTRIES, 32, "catalog entries")?;
    let mut entries = Vec::with_capacity(n);
    for _ in 0..n {
        entries.push(CatalogEntry {
            doc: r.array("document id")?,
            heads: r.array("heads digest")?,
        });
    }
    Ok(entries)
}

fn flag(r: &mut Reader<'_>, what: &'static str) -> Result<bool, DecodeError> {
    match r.u8(what)? {
        0 => Ok(false),
        1 => Ok(true),
        v => Err(DecodeError::Unknown(what, v.into())),
    }
}
