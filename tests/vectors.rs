//! The test vectors of `protocol/vectors/*.json`: their generator and their
//! checks.
//!
//! Every vector is made from fixed secret keys (written in the files), and
//! Ed25519 signatures are deterministic, so the files are reproducible.
//! `HUDDLE_WRITE_VECTORS=1 cargo test --test vectors` (re)writes them; without
//! it, the generator must reproduce the files exactly, and then each file is
//! checked on its own terms, as a second implementation would use it: every
//! hex string is decoded with the public API, compared with the fields written
//! beside it, its signature verified with the public key given (by huddle and
//! independently with `verify_strict`), its derived values recomputed, and it
//! is re-encoded from those fields byte for byte. Every must-reject vector is
//! rejected with the error it names.
//!
//! Invariant: the checks read only the JSON on disk (the generator is not
//! consulted), so a vector file that passes here is a complete, self-standing
//! statement of the format.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{ActorId, Automerge, ObjType, ReadDoc, ROOT};
use huddle::codec::{DecodeError, Reader, Writer};
use huddle::crypto::{self, domain, AuthorityKey, DeviceKey};
use huddle::header::{ConversationHeader, ConversationKind};
use huddle::hlc::Hlc;
use huddle::ids::{ConversationId, DeviceId, MemberId, MessageId, TeamId};
use huddle::membership::{
    Certificate, CertificateRequest, Revocation, RevocationTarget, Revocations, TokenError,
};
use huddle::message::{Draft, Message, Priority, Receipt, ReceiptKind};
use huddle::node::{Command, Input, Node, NodeConfig, Output, Reply, Timer};
use huddle::replica::{Entry, Replica};
use huddle::store::{self, keys, MemoryStore, Store, StoreError, StoreOp, Stored};
use huddle::team::TEAM_DOC_ID;
use huddle::wire::{CatalogEntry, Frame, HeadsEntry, Reason, MAX_FRAME_LEN};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

const T0: u64 = 1_700_000_000_000;
const DAY: u64 = 24 * 3600 * 1000;
const FILES: [&str; 9] = [
    "primitives.json",
    "certificates.json",
    "revocations.json",
    "messages.json",
    "headers.json",
    "frames.json",
    "documents.json",
    "storage.json",
    "session.json",
];

// ---------------------------------------------------------------------------
// Plumbing
// ---------------------------------------------------------------------------

fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("protocol/vectors")
}

fn load(name: &str) -> Value {
    let path = vectors_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}; generate it with HUDDLE_WRITE_VECTORS=1",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name} is not JSON: {e}"))
}

fn hex(b: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(b)
}

fn unhex(s: &str) -> Vec<u8> {
    data_encoding::HEXLOWER
        .decode(s.as_bytes())
        .unwrap_or_else(|e| panic!("not lowercase hex ({e}): {s}"))
}

fn get<'a>(v: &'a Value, k: &str) -> &'a Value {
    v.get(k).unwrap_or_else(|| panic!("no field {k:?} in {v}"))
}

fn st<'a>(v: &'a Value, k: &str) -> &'a str {
    get(v, k)
        .as_str()
        .unwrap_or_else(|| panic!("{k:?} is not a string in {v}"))
}

fn num(v: &Value, k: &str) -> u64 {
    get(v, k)
        .as_u64()
        .unwrap_or_else(|| panic!("{k:?} is not an unsigned integer in {v}"))
}

fn flag(v: &Value, k: &str) -> bool {
    get(v, k)
        .as_bool()
        .unwrap_or_else(|| panic!("{k:?} is not a boolean in {v}"))
}

fn list<'a>(v: &'a Value, k: &str) -> &'a [Value] {
    get(v, k)
        .as_array()
        .unwrap_or_else(|| panic!("{k:?} is not an array in {v}"))
}

fn bytes(v: &Value, k: &str) -> Vec<u8> {
    unhex(st(v, k))
}

fn fixed<const N: usize>(v: &Value, k: &str) -> [u8; N] {
    bytes(v, k)
        .try_into()
        .unwrap_or_else(|b: Vec<u8>| panic!("{k:?} has {} bytes, not {N}", b.len()))
}

/// A vector's bytes: `hex`, then zeroes up to `zero_fill_to` if given (so
/// that megabyte-sized frames need not be spelled out).
fn vector_bytes(v: &Value) -> Vec<u8> {
    let mut b = bytes(v, "hex");
    if let Some(n) = v.get("zero_fill_to") {
        b.resize(n.as_u64().expect("zero_fill_to") as usize, 0);
    }
    b
}

fn label(l: &str) -> [u8; 32] {
    crypto::sha256(&[b"huddle/test-vectors/", l.as_bytes()])
}

/// A JSON list of hex 32-byte hashes.
fn hashes32(v: &Value, key: &str) -> Vec<[u8; 32]> {
    list(v, key)
        .iter()
        .map(|h| {
            unhex(h.as_str().expect("hex"))
                .try_into()
                .expect("32 bytes")
        })
        .collect()
}

fn id16(l: &str) -> [u8; 16] {
    label(l)[..16].try_into().expect("16 bytes")
}

fn decode_error_name(e: &DecodeError) -> &'static str {
    match e {
        DecodeError::Truncated(_) => "Truncated",
        DecodeError::TooLong(..) => "TooLong",
        DecodeError::Unknown(..) => "Unknown",
        DecodeError::Utf8(_) => "Utf8",
        DecodeError::Trailing(_) => "Trailing",
        DecodeError::Varint => "Varint",
        DecodeError::Invalid(_) => "Invalid",
    }
}

fn token_error_name(e: &TokenError) -> &'static str {
    match e {
        TokenError::Prefix => "Prefix",
        TokenError::Encoding => "Encoding",
        TokenError::Checksum => "Checksum",
        TokenError::Decode(_) => "Decode",
    }
}

/// Asserts that `r` failed with the error named by the vector.
fn expect_decode_error<T: std::fmt::Debug>(v: &Value, r: Result<T, DecodeError>) {
    let why = st(v, "why");
    match r {
        Ok(t) => panic!("must-reject vector {why:?} decoded as {t:?}"),
        Err(e) => assert_eq!(
            decode_error_name(&e),
            st(v, "error"),
            "vector {why:?} failed with {e}"
        ),
    }
}

/// Checks `signed_message` = domain ‖ 0x00 ‖ `prefix` ‖ (encoding minus the
/// signature), and that the trailing 64 bytes are a strictly valid Ed25519
/// signature of it by `public` (checked without huddle's code).
fn check_signed(v: &Value, domain: &[u8], prefix: &[u8], encoded: &[u8], public: &[u8; 32]) {
    let (body, sig) = encoded.split_at(encoded.len() - 64);
    let expected = [domain, &[0u8], prefix, body].concat();
    assert_eq!(bytes(v, "signed_message"), expected, "signed_message");
    let key = ed25519_dalek::VerifyingKey::from_bytes(public).expect("a valid public key");
    let sig = ed25519_dalek::Signature::from_bytes(sig.try_into().expect("64 bytes"));
    key.verify_strict(&expected, &sig)
        .expect("the signature verifies strictly");
}

/// The scalar order ℓ of Ed25519, little-endian.
const ELL: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

/// The same signature with S replaced by S + ℓ: it passes the group equation
/// but S is not canonical, so it must be rejected (else ids are malleable).
fn malleate(sig: &[u8; 64]) -> [u8; 64] {
    let mut out = *sig;
    let mut carry = 0u16;
    for i in 0..32 {
        let s = u16::from(sig[32 + i]) + u16::from(ELL[i]) + carry;
        out[32 + i] = s as u8;
        carry = s >> 8;
    }
    assert_eq!(carry, 0);
    out
}

fn with_signature(encoded: &[u8], sig: &[u8; 64]) -> Vec<u8> {
    [&encoded[..encoded.len() - 64], sig.as_slice()].concat()
}

fn last_sig(encoded: &[u8]) -> [u8; 64] {
    encoded[encoded.len() - 64..].try_into().expect("64 bytes")
}

fn splice(b: &[u8], at: usize, remove: usize, insert: &[u8]) -> Vec<u8> {
    [&b[..at], insert, &b[at + remove..]].concat()
}

/// `b` with the varint at `at` re-encoded one byte longer than it must be.
fn nonminimal_varint(b: &[u8], at: usize) -> Vec<u8> {
    let mut r = Reader::new(&b[at..]);
    r.varint("v").expect("a varint");
    let n = r.position();
    let mut longer = b[at..at + n].to_vec();
    longer[n - 1] |= 0x80;
    longer.push(0);
    splice(b, at, n, &longer)
}

// ---------------------------------------------------------------------------
// The cast: keys, members and certificates every file draws on
// ---------------------------------------------------------------------------

const DEVICES: [(&str, &str); 4] = [
    ("ana-phone", "ana"),
    ("ben-tablet", "ben"),
    ("chidi-laptop", "chidi"),
    ("max-device", "max"),
];

struct Cast {
    authority: AuthorityKey,
    other_authority: AuthorityKey,
    devices: BTreeMap<&'static str, DeviceKey>,
}

impl Cast {
    fn new() -> Cast {
        Cast {
            authority: AuthorityKey::from_secret(label("authority:St Mary Ward 7")),
            other_authority: AuthorityKey::from_secret(label("authority:Riverside Clinic")),
            devices: DEVICES
                .iter()
                .map(|(d, _)| (*d, DeviceKey::from_secret(label(&format!("device:{d}")))))
                .collect(),
        }
    }

    fn key(&self, device: &str) -> &DeviceKey {
        &self.devices[device]
    }

    fn dev(&self, device: &str) -> DeviceId {
        self.key(device).device_id()
    }
}

fn member(name: &str) -> MemberId {
    MemberId(id16(&format!("member:{name}")))
}

fn keys_json(c: &Cast) -> Value {
    let authority = |a: &AuthorityKey| {
        json!({
            "secret_key": hex(&a.secret()),
            "team": hex(&a.team_id().0),
            "fingerprint": a.team_id().fingerprint(),
        })
    };
    let devices: serde_json::Map<String, Value> = DEVICES
        .iter()
        .map(|(d, m)| {
            let k = c.key(d);
            (
                d.to_string(),
                json!({
                    "secret_key": hex(&k.secret()),
                    "public_key": hex(&k.device_id().0),
                    "peer_id": k.device_id().to_string(),
                    "member": member(m).to_hex(),
                }),
            )
        })
        .collect();
    json!({
        "authority": authority(&c.authority),
        "other_authority": authority(&c.other_authority),
        "devices": devices,
    })
}

/// Reads the `keys` object of a vector file, checking every public value
/// against its secret, and returns the device keys by name.
fn keys_from_json(v: &Value) -> (TeamId, TeamId, BTreeMap<String, DeviceKey>) {
    let authority = |a: &Value| {
        let k = AuthorityKey::from_secret(fixed(a, "secret_key"));
        assert_eq!(hex(&k.team_id().0), st(a, "team"));
        assert_eq!(k.team_id().fingerprint(), st(a, "fingerprint"));
        k.team_id()
    };
    let devices = get(v, "devices")
        .as_object()
        .expect("devices")
        .iter()
        .map(|(name, d)| {
            let k = DeviceKey::from_secret(fixed(d, "secret_key"));
            assert_eq!(hex(&k.device_id().0), st(d, "public_key"), "{name}");
            assert_eq!(k.device_id().to_string(), st(d, "peer_id"), "{name}");
            (name.clone(), k)
        })
        .collect();
    (
        authority(get(v, "authority")),
        authority(get(v, "other_authority")),
        devices,
    )
}

fn request(
    team_name: &str,
    display_name: &str,
    who: &str,
    roles: &[&str],
    device: DeviceId,
) -> CertificateRequest {
    CertificateRequest {
        team_name: team_name.into(),
        member: member(who),
        display_name: display_name.into(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        device,
        issued: T0 - DAY,
        expires: T0 + 365 * DAY,
    }
}

/// The certificates, by name.
fn certificates(c: &Cast) -> Vec<(&'static str, Certificate)> {
    let ward = "St Mary Ward 7";
    let sign = |r: CertificateRequest| r.sign(&c.authority).expect("valid request");
    let long_name = format!("Dr. Maximiliana {}", "X".repeat(84));
    let long_team = format!("St Mary {}", "W".repeat(92));
    let roles: Vec<String> = (0..16)
        .map(|i| format!("role-{i:02}-{}", "x".repeat(56)))
        .collect();
    let max = CertificateRequest {
        team_name: long_team,
        member: member("max"),
        display_name: long_name,
        roles,
        device: c.dev("max-device"),
        issued: T0,
        expires: T0 + 30 * DAY,
    };
    vec![
        (
            "ana-phone",
            sign(request(
                ward,
                "Ana Silva",
                "ana",
                &["nurse", "charge-nurse"],
                c.dev("ana-phone"),
            )),
        ),
        (
            "ben-tablet",
            sign(request(
                ward,
                "Ben Okafor",
                "ben",
                &["physician", "on-call-surgery"],
                c.dev("ben-tablet"),
            )),
        ),
        (
            "chidi-laptop",
            sign(request(
                ward,
                "Chidi Nwosu-Müller",
                "chidi",
                &[],
                c.dev("chidi-laptop"),
            )),
        ),
        ("max-size", sign(max)),
        (
            "ben-tablet@riverside",
            request(
                "Riverside Clinic",
                "Ben Okafor",
                "ben",
                &["physician"],
                c.dev("ben-tablet"),
            )
            .sign(&c.other_authority)
            .expect("valid request"),
        ),
    ]
}

fn cert(c: &Cast, name: &str) -> Certificate {
    certificates(c)
        .into_iter()
        .find(|(n, _)| *n == name)
        .expect("known certificate")
        .1
}

// ---------------------------------------------------------------------------
// Field codecs between huddle's types and the JSON of the vectors
// ---------------------------------------------------------------------------

fn cert_json(c: &Certificate) -> Value {
    json!({
        "team": hex(&c.team.0),
        "team_name": c.team_name,
        "member": c.member.to_hex(),
        "display_name": c.display_name,
        "roles": c.roles,
        "device": hex(&c.device.0),
        "device_peer_id": c.device.to_string(),
        "issued": c.issued,
        "expires": c.expires,
        "signature": hex(&c.signature),
    })
}

fn cert_from_json(v: &Value) -> Certificate {
    let c = Certificate {
        team: TeamId(fixed(v, "team")),
        team_name: st(v, "team_name").to_owned(),
        member: MemberId(fixed(v, "member")),
        display_name: st(v, "display_name").to_owned(),
        roles: list(v, "roles")
            .iter()
            .map(|r| r.as_str().expect("role").to_owned())
            .collect(),
        device: DeviceId(fixed(v, "device")),
        issued: num(v, "issued"),
        expires: num(v, "expires"),
        signature: fixed(v, "signature"),
    };
    assert_eq!(
        st(v, "device_peer_id")
            .parse::<DeviceId>()
            .expect("peer id"),
        c.device
    );
    c
}

fn hlc_json(h: Hlc) -> Value {
    json!({ "millis": h.millis(), "counter": h.counter() })
}

fn hlc_from_json(v: &Value) -> Hlc {
    let counter = u16::try_from(num(v, "counter")).expect("16-bit counter");
    let millis = num(v, "millis");
    assert!(millis < 1 << 48, "48-bit milliseconds");
    Hlc::new(millis, counter)
}

fn priority_name(p: Priority) -> &'static str {
    match p {
        Priority::Routine => "routine",
        Priority::Urgent => "urgent",
        Priority::Stat => "stat",
    }
}

fn priority_from(s: &str) -> Priority {
    match s {
        "routine" => Priority::Routine,
        "urgent" => Priority::Urgent,
        "stat" => Priority::Stat,
        p => panic!("unknown priority {p}"),
    }
}

fn message_json(m: &Message) -> Value {
    json!({
        "author_member": m.author_member.to_hex(),
        "author_device": hex(&m.author_device.0),
        "hlc": hlc_json(m.hlc),
        "priority": priority_name(m.priority),
        "reply_to": m.reply_to.map(|r| r.to_hex()),
        "body": m.body,
        "signature": hex(&m.signature),
    })
}

fn message_from_json(v: &Value) -> Message {
    Message {
        author_member: MemberId(fixed(v, "author_member")),
        author_device: DeviceId(fixed(v, "author_device")),
        hlc: hlc_from_json(get(v, "hlc")),
        priority: priority_from(st(v, "priority")),
        reply_to: match get(v, "reply_to") {
            Value::Null => None,
            _ => Some(MessageId(fixed(v, "reply_to"))),
        },
        body: st(v, "body").to_owned(),
        signature: fixed(v, "signature"),
    }
}

fn kind_name(k: ReceiptKind) -> &'static str {
    match k {
        ReceiptKind::Delivered => "delivered",
        ReceiptKind::Read => "read",
        ReceiptKind::Ack => "ack",
    }
}

fn receipt_json(r: &Receipt) -> Value {
    json!({
        "kind": kind_name(r.kind),
        "member": r.member.to_hex(),
        "device": hex(&r.device.0),
        "upto": { "hlc": hlc_json(r.upto.0), "message": r.upto.1.to_hex() },
        "at": hlc_json(r.at),
        "signature": hex(&r.signature),
    })
}

fn receipt_from_json(v: &Value) -> Receipt {
    let upto = get(v, "upto");
    Receipt {
        kind: match st(v, "kind") {
            "delivered" => ReceiptKind::Delivered,
            "read" => ReceiptKind::Read,
            "ack" => ReceiptKind::Ack,
            k => panic!("unknown receipt kind {k}"),
        },
        member: MemberId(fixed(v, "member")),
        device: DeviceId(fixed(v, "device")),
        upto: (
            hlc_from_json(get(upto, "hlc")),
            MessageId(fixed(upto, "message")),
        ),
        at: hlc_from_json(get(v, "at")),
        signature: fixed(v, "signature"),
    }
}

fn header_json(h: &ConversationHeader) -> Value {
    let kind = match &h.kind {
        ConversationKind::Direct { members } => json!({
            "type": "direct",
            "members": [members[0].to_hex(), members[1].to_hex()],
        }),
        ConversationKind::Group { title, members } => json!({
            "type": "group",
            "title": title,
            "members": members.iter().map(|m| m.to_hex()).collect::<Vec<_>>(),
        }),
        ConversationKind::Role { role } => json!({ "type": "role", "role": role }),
    };
    json!({
        "id": h.id.to_hex(),
        "kind": kind,
        "creator": hex(&h.creator.0),
        "created": h.created,
        "signature": hex(&h.signature),
    })
}

fn members_from_json(v: &Value) -> Vec<MemberId> {
    list(v, "members")
        .iter()
        .map(|m| m.as_str().expect("member").parse().expect("member id"))
        .collect()
}

fn header_from_json(v: &Value) -> ConversationHeader {
    let k = get(v, "kind");
    let kind = match st(k, "type") {
        "direct" => {
            let m = members_from_json(k);
            ConversationKind::Direct {
                members: [m[0], m[1]],
            }
        }
        "group" => ConversationKind::Group {
            title: st(k, "title").to_owned(),
            members: members_from_json(k).into_iter().collect(),
        },
        "role" => ConversationKind::Role {
            role: st(k, "role").to_owned(),
        },
        t => panic!("unknown conversation kind {t}"),
    };
    ConversationHeader {
        id: ConversationId(fixed(v, "id")),
        kind,
        creator: DeviceId(fixed(v, "creator")),
        created: num(v, "created"),
        signature: fixed(v, "signature"),
    }
}

fn revocation_json(r: &Revocation) -> Value {
    let target = match r.target {
        RevocationTarget::Device(d) => json!({ "type": "device", "device": hex(&d.0) }),
        RevocationTarget::Member(m) => json!({ "type": "member", "member": m.to_hex() }),
    };
    json!({
        "team": hex(&r.team.0),
        "target": target,
        "issued": r.issued,
        "signature": hex(&r.signature),
    })
}

fn revocation_from_json(v: &Value) -> Revocation {
    let t = get(v, "target");
    Revocation {
        team: TeamId(fixed(v, "team")),
        target: match st(t, "type") {
            "device" => RevocationTarget::Device(DeviceId(fixed(t, "device"))),
            "member" => RevocationTarget::Member(MemberId(fixed(t, "member"))),
            x => panic!("unknown revocation target {x}"),
        },
        issued: num(v, "issued"),
        signature: fixed(v, "signature"),
    }
}

fn frame_json(f: &Frame) -> Value {
    match f {
        Frame::Hello {
            version,
            certificate,
        } => json!({
            "type": "hello",
            "version": version,
            "certificate": hex(&certificate.encode()),
        }),
        Frame::Refuse { reason } => json!({ "type": "refuse", "reason": reason.code() }),
        Frame::Catalog { entries, last } => json!({
            "type": "catalog",
            "last": last,
            "entries": entries
                .iter()
                .map(|e| json!({ "doc": hex(&e.doc), "heads": hex(&e.heads) }))
                .collect::<Vec<_>>(),
        }),
        Frame::Header { header } => json!({ "type": "header", "header": hex(&header.encode()) }),
        Frame::Sync { doc, more, data } => json!({
            "type": "sync",
            "doc": hex(doc),
            "more": more,
            "data": hex(data),
        }),
        Frame::Heads { entries } => json!({
            "type": "heads",
            "entries": entries
                .iter()
                .map(|e| json!({
                    "doc": hex(&e.doc),
                    "heads": e.heads.iter().map(|h| hex(h)).collect::<Vec<_>>(),
                }))
                .collect::<Vec<_>>(),
        }),
    }
}

fn frame_from_json(v: &Value) -> Frame {
    match st(v, "type") {
        "hello" => Frame::Hello {
            version: u8::try_from(num(v, "version")).expect("u8"),
            certificate: Certificate::decode(&bytes(v, "certificate")).expect("certificate"),
        },
        "refuse" => Frame::Refuse {
            reason: Reason::from_code(u8::try_from(num(v, "reason")).expect("u8")),
        },
        "catalog" => Frame::Catalog {
            last: flag(v, "last"),
            entries: list(v, "entries")
                .iter()
                .map(|e| CatalogEntry {
                    doc: fixed(e, "doc"),
                    heads: fixed(e, "heads"),
                })
                .collect(),
        },
        "header" => Frame::Header {
            header: ConversationHeader::decode(&bytes(v, "header")).expect("header"),
        },
        "sync" => Frame::Sync {
            doc: fixed(v, "doc"),
            more: flag(v, "more"),
            data: bytes(v, "data"),
        },
        "heads" => Frame::Heads {
            entries: list(v, "entries")
                .iter()
                .map(|e| HeadsEntry {
                    doc: fixed(e, "doc"),
                    heads: hashes32(e, "heads"),
                })
                .collect(),
        },
        t => panic!("unknown frame type {t}"),
    }
}

/// Checks a must-accept vector of any signed object: the fields re-encode to
/// the bytes, the bytes decode to the fields, and the signature verifies.
fn check_round_trip<T: PartialEq + std::fmt::Debug>(
    v: &Value,
    from_fields: T,
    encode: impl Fn(&T) -> Vec<u8>,
    decode: impl Fn(&[u8]) -> Result<T, DecodeError>,
) -> (T, Vec<u8>) {
    let b = bytes(v, "hex");
    assert_eq!(
        hex(&encode(&from_fields)),
        hex(&b),
        "fields re-encode byte for byte"
    );
    let decoded = decode(&b).unwrap_or_else(|e| panic!("{} must decode: {e}", v["name"]));
    assert_eq!(decoded, from_fields, "decoded fields");
    (decoded, b)
}

// ---------------------------------------------------------------------------
// primitives.json
// ---------------------------------------------------------------------------

fn direct_id(a: MemberId, b: MemberId) -> ConversationId {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let h = crypto::sha256(&[b"huddle/direct/v1", &lo.0, &hi.0]);
    ConversationId(h[..16].try_into().expect("16 bytes"))
}

fn gen_primitives(c: &Cast) -> Value {
    let varints: Vec<Value> = [
        0u64,
        1,
        127,
        128,
        255,
        300,
        16_383,
        16_384,
        1_048_555,
        u64::from(u32::MAX),
        (1 << 63) - 1,
        u64::MAX,
    ]
    .iter()
    .map(|v| {
        let mut w = Writer::new();
        w.varint(*v);
        json!({ "value": v.to_string(), "hex": hex(w.as_slice()) })
    })
    .collect();
    let bad_varint = |h: &str, why: &str| json!({ "hex": h, "why": why, "error": "Varint" });
    let varints_invalid = vec![
        bad_varint("8000", "non-minimal: zero in two bytes"),
        bad_varint("ff00", "non-minimal: 127 in two bytes"),
        bad_varint(
            "808080808080808080808000",
            "non-minimal and longer than 10 bytes",
        ),
        bad_varint("ffffffffffffffffff02", "overflows 64 bits (tenth byte > 1)"),
        bad_varint("ffffffffffffffffff8100", "more than 10 bytes"),
        json!({ "hex": "", "why": "empty", "error": "Truncated" }),
        json!({ "hex": "80", "why": "continuation bit on the last byte", "error": "Truncated" }),
        json!({ "hex": "ffffffff", "why": "truncated", "error": "Truncated" }),
    ];
    let device_ids: Vec<Value> = DEVICES
        .iter()
        .map(|(d, _)| {
            let k = c.key(d);
            let id = k.device_id();
            json!({
                "name": d,
                "secret_key": hex(&k.secret()),
                "public_key": hex(&id.0),
                "peer_id_bytes": hex(&id.peer_id_bytes()),
                "peer_id": id.to_string(),
            })
        })
        .collect();
    let device_ids_invalid = vec![
        json!({ "text": "12D3KooWnotreally", "why": "not base58btc of a peer id" }),
        json!({ "text": "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N", "why": "an RSA peer id (SHA-256 multihash), not an Ed25519 identity multihash" }),
        json!({ "text": "", "why": "empty" }),
    ];
    let fingerprints: Vec<Value> = [&c.authority, &c.other_authority]
        .iter()
        .map(|a| {
            json!({
                "team": hex(&a.team_id().0),
                "fingerprint": a.team_id().fingerprint(),
            })
        })
        .collect();
    let pairs = [("ana", "ben"), ("ben", "ana"), ("chidi", "ben")];
    let direct: Vec<Value> = pairs
        .iter()
        .map(|(a, b)| {
            json!({
                "a": member(a).to_hex(),
                "b": member(b).to_hex(),
                "id": direct_id(member(a), member(b)).to_hex(),
            })
        })
        .collect();
    let hlcs: Vec<Value> = [(0u64, 0u16), (T0, 0), (T0, 3), (T0 + 1, 65_535)]
        .iter()
        .map(|(ms, ctr)| {
            let h = Hlc::new(*ms, *ctr);
            json!({ "millis": ms, "counter": ctr, "hex": hex(&h.0.to_be_bytes()) })
        })
        .collect();
    let tags = [
        domain::CERTIFICATE,
        domain::REVOCATION,
        domain::MESSAGE,
        domain::RECEIPT,
        domain::HEADER,
    ];
    json!({
        "description": "Primitive encodings: LEB128 varints (minimal only), device ids and their libp2p PeerId text, team fingerprints, direct conversation ids, HLC timestamps, signature domain tags. See protocol/wire.md.",
        "varints": varints,
        "varints_invalid": varints_invalid,
        "device_ids": device_ids,
        "device_ids_invalid": device_ids_invalid,
        "team_fingerprints": fingerprints,
        "direct_conversation_ids": direct,
        "hlc": hlcs,
        "domain_tags": tags.iter().map(|t| json!({
            "tag": String::from_utf8(t.to_vec()).expect("ASCII"),
            "prefix_hex": hex(&[*t, &[0u8]].concat()),
        })).collect::<Vec<_>>(),
    })
}

#[test]
fn primitives() {
    let v = load("primitives.json");
    for x in list(&v, "varints") {
        let value: u64 = st(x, "value").parse().expect("decimal");
        let mut w = Writer::new();
        w.varint(value);
        assert_eq!(hex(w.as_slice()), st(x, "hex"));
        let b = bytes(x, "hex");
        let mut r = Reader::new(&b);
        assert_eq!(r.varint("v"), Ok(value));
        r.finish().expect("nothing left");
    }
    for x in list(&v, "varints_invalid") {
        let b = bytes(x, "hex");
        let mut r = Reader::new(&b);
        let got = r.varint("v").and_then(|v| r.finish().map(|()| v));
        expect_decode_error(x, got);
    }
    for x in list(&v, "device_ids") {
        let k = DeviceKey::from_secret(fixed(x, "secret_key"));
        let id = k.device_id();
        assert_eq!(hex(&id.0), st(x, "public_key"));
        assert_eq!(hex(&id.peer_id_bytes()), st(x, "peer_id_bytes"));
        assert_eq!(id.to_string(), st(x, "peer_id"));
        assert_eq!(st(x, "peer_id").parse::<DeviceId>(), Ok(id));
        assert_eq!(
            DeviceId::from_peer_id_bytes(&bytes(x, "peer_id_bytes")),
            Some(id)
        );
        let b58 = bs58::encode(bytes(x, "peer_id_bytes")).into_string();
        assert_eq!(
            b58,
            st(x, "peer_id"),
            "PeerId text is base58btc of its bytes"
        );
    }
    for x in list(&v, "device_ids_invalid") {
        assert!(st(x, "text").parse::<DeviceId>().is_err(), "{x}");
    }
    for x in list(&v, "team_fingerprints") {
        let team = TeamId(fixed(x, "team"));
        assert_eq!(team.fingerprint(), st(x, "fingerprint"));
        let d = crypto::sha256(&[b"huddle/team-fingerprint/v1", &team.0]);
        assert_eq!(hex(&d[..8]), st(x, "fingerprint"));
    }
    for x in list(&v, "direct_conversation_ids") {
        let (a, b) = (MemberId(fixed(x, "a")), MemberId(fixed(x, "b")));
        assert_eq!(direct_id(a, b).to_hex(), st(x, "id"));
        assert_eq!(direct_id(b, a).to_hex(), st(x, "id"), "order of members");
        assert_eq!(
            node_direct_id(a, b).to_hex(),
            st(x, "id"),
            "the node derives the same id"
        );
    }
    for x in list(&v, "hlc") {
        let h = Hlc::new(
            num(x, "millis"),
            u16::try_from(num(x, "counter")).expect("u16"),
        );
        assert_eq!(hex(&h.0.to_be_bytes()), st(x, "hex"));
        assert_eq!(h, hlc_from_json(x));
    }
    let tags: Vec<&str> = list(&v, "domain_tags")
        .iter()
        .map(|t| {
            assert_eq!(
                bytes(t, "prefix_hex"),
                [st(t, "tag").as_bytes(), &[0]].concat()
            );
            st(t, "tag")
        })
        .collect();
    assert_eq!(
        tags,
        [
            domain::CERTIFICATE,
            domain::REVOCATION,
            domain::MESSAGE,
            domain::RECEIPT,
            domain::HEADER
        ]
        .map(|t| std::str::from_utf8(t).expect("ASCII"))
    );
}

/// The direct conversation id the node itself derives (its derivation
/// function is not public): a node of member `a` opens a direct conversation.
fn node_direct_id(a: MemberId, b: MemberId) -> ConversationId {
    let c = Cast::new();
    let key = c.key("ana-phone").clone();
    let mut req = request("St Mary Ward 7", "A", "ana", &[], key.device_id());
    req.member = a;
    let cert = req.sign(&c.authority).expect("valid");
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut node = Node::new(
        key,
        Some(cert),
        Stored::default(),
        NodeConfig::default(),
        &mut rng,
    )
    .expect("node");
    let (reply, _) = node.command(
        T0,
        &mut rng,
        Command::CreateConversation {
            kind: ConversationKind::Direct { members: [a, b] },
        },
    );
    match reply {
        Ok(Reply::Conversation(id)) => id,
        r => panic!("unexpected reply {r:?}"),
    }
}

// ---------------------------------------------------------------------------
// certificates.json
// ---------------------------------------------------------------------------

fn gen_certificates(c: &Cast) -> Value {
    let certs = certificates(c);
    let valid: Vec<Value> = certs
        .iter()
        .map(|(name, cert)| {
            let b = cert.encode();
            json!({
                "name": name,
                "fields": cert_json(cert),
                "signed_message": hex(&[domain::CERTIFICATE, &[0], &b[..b.len() - 64]].concat()),
                "hex": hex(&b),
                "token": cert.to_token(),
            })
        })
        .collect();

    let ana = cert(c, "ana-phone");
    let a = ana.encode();
    let name_at = 1 + 32 + 1 + ana.team_name.len() + 16 + 1;
    let bad =
        |b: Vec<u8>, why: &str, error: &str| json!({ "hex": hex(&b), "why": why, "error": error });
    let over = |f: &dyn Fn(&mut Certificate)| {
        let mut x = ana.clone();
        f(&mut x);
        x.encode()
    };
    let invalid = vec![
        bad(vec![], "empty", "Truncated"),
        bad(a[..a.len() - 1].to_vec(), "last byte missing", "Truncated"),
        bad(
            [a.as_slice(), &[0]].concat(),
            "one trailing byte",
            "Trailing",
        ),
        bad(splice(&a, 0, 1, &[0]), "version 0", "Unknown"),
        bad(splice(&a, 0, 1, &[2]), "version 2", "Unknown"),
        bad(
            nonminimal_varint(&a, 33),
            "team name length as a non-minimal varint",
            "Varint",
        ),
        bad(
            over(&|x| x.team_name = "W".repeat(101)),
            "team name of 101 bytes",
            "TooLong",
        ),
        bad(
            over(&|x| x.display_name = "N".repeat(101)),
            "display name of 101 bytes",
            "TooLong",
        ),
        bad(
            over(&|x| x.roles = (0..17).map(|i| format!("r{i}")).collect()),
            "17 roles",
            "TooLong",
        ),
        bad(
            over(&|x| x.roles = vec!["r".repeat(65)]),
            "a role of 65 bytes",
            "TooLong",
        ),
        bad(
            splice(&a, name_at, 1, &[0xff]),
            "display name is not UTF-8",
            "Utf8",
        ),
    ];

    let tampered = over(&|x| x.display_name = "Ana Silva (admin)".into());
    let foreign = {
        // Signed by another authority but claiming this team.
        let mut x = cert(c, "ben-tablet@riverside");
        x.team = c.authority.team_id();
        x.team_name = "St Mary Ward 7".into();
        x.encode()
    };
    let malleated = with_signature(&a, &malleate(&last_sig(&a)));
    let sig_invalid = vec![
        json!({ "hex": hex(&tampered), "why": "display name changed after signing" }),
        json!({ "hex": hex(&foreign), "why": "signed by another team's authority" }),
        json!({ "hex": hex(&malleated), "why": "signature S replaced by S + l (non-canonical)" }),
    ];

    let team = c.authority.team_id();
    let skew = huddle::membership::ISSUE_SKEW_MS;
    let check = |name: &str, now: u64, rd: &[&str], rm: &[&str], team: TeamId, result: &str| {
        json!({
            "certificate": name,
            "team": hex(&team.0),
            "now": now,
            "revoked_devices": rd.iter().map(|d| hex(&c.dev(d).0)).collect::<Vec<_>>(),
            "revoked_members": rm.iter().map(|m| member(m).to_hex()).collect::<Vec<_>>(),
            "result": result,
        })
    };
    let other = c.other_authority.team_id();
    let checks = vec![
        check("ana-phone", T0, &[], &[], team, "ok"),
        check("ana-phone", T0 - DAY - skew, &[], &[], team, "ok"),
        check(
            "ana-phone",
            T0 - DAY - skew - 1,
            &[],
            &[],
            team,
            "NotYetValid",
        ),
        check("ana-phone", ana.expires - 1, &[], &[], team, "ok"),
        check("ana-phone", ana.expires, &[], &[], team, "Expired"),
        check("ana-phone", T0, &[], &[], other, "WrongTeam"),
        check("ben-tablet@riverside", T0, &[], &[], team, "WrongTeam"),
        check("ana-phone", T0, &["ana-phone"], &[], team, "RevokedDevice"),
        check("ana-phone", T0, &[], &["ana"], team, "RevokedMember"),
        check(
            "ana-phone",
            ana.expires,
            &["ana-phone"],
            &[],
            team,
            "Expired",
        ),
        check("chidi-laptop", T0, &["ana-phone"], &["ben"], team, "ok"),
        check("max-size", T0, &[], &[], team, "ok"),
    ];

    let token = ana.to_token();
    let body = token.strip_prefix("HUDDLE1:").expect("prefix");
    let spaced: String = body
        .as_bytes()
        .chunks(40)
        .map(|c| std::str::from_utf8(c).expect("ASCII"))
        .collect::<Vec<_>>()
        .join("\n  ");
    let mut flipped: Vec<char> = body.chars().collect();
    let i = flipped.len() / 2;
    flipped[i] = if flipped[i] == 'A' { 'B' } else { 'A' };
    let flipped: String = flipped.into_iter().collect();
    let garbage = {
        let mut b = b"not a certificate".to_vec();
        let sum = crypto::sha256(&[&b]);
        b.extend_from_slice(&sum[..4]);
        data_encoding::BASE32_NOPAD.encode(&b)
    };
    let tokens = vec![
        json!({ "token": format!("huddle1:{}", body.to_ascii_lowercase()), "certificate": "ana-phone", "why": "all lowercase" }),
        json!({ "token": format!("  HUDDLE1:\n  {spaced}\n"), "certificate": "ana-phone", "why": "white space anywhere is ignored" }),
    ];
    let tokens_invalid = vec![
        json!({ "token": format!("HUDDLE2:{body}"), "error": "Prefix", "why": "another prefix" }),
        json!({ "token": format!("Huddle1:{body}"), "error": "Prefix", "why": "mixed-case prefix" }),
        json!({ "token": body, "error": "Prefix", "why": "no prefix" }),
        json!({ "token": format!("HUDDLE1:{body}="), "error": "Encoding", "why": "base32 padding" }),
        json!({ "token": format!("HUDDLE1:{}", &body[..body.len() - 1]), "error": "Encoding", "why": "a character missing (impossible base32 length or non-zero trailing bits)" }),
        json!({ "token": "HUDDLE1:AEBA", "error": "Encoding", "why": "shorter than the checksum" }),
        json!({ "token": format!("HUDDLE1:{flipped}"), "error": "Checksum", "why": "one character changed" }),
        json!({ "token": format!("HUDDLE1:{garbage}"), "error": "Decode", "why": "checksum matches but the bytes are not a certificate" }),
    ];

    json!({
        "description": "Membership certificates (protocol/wire.md#certificate), their validity rules at a given time (Certificate::check) and their text tokens. Certificates are signed by the team authority (keys.authority); 'ben-tablet@riverside' belongs to another team.",
        "keys": keys_json(c),
        "valid": valid,
        "invalid": invalid,
        "signature_invalid": sig_invalid,
        "checks": checks,
        "tokens": tokens,
        "tokens_invalid": tokens_invalid,
    })
}

#[test]
fn certificates_vectors() {
    let v = load("certificates.json");
    let (team, other, _) = keys_from_json(get(&v, "keys"));
    let mut by_name = BTreeMap::new();
    for x in list(&v, "valid") {
        let fields = cert_from_json(get(x, "fields"));
        let (cert, b) = check_round_trip(x, fields, Certificate::encode, Certificate::decode);
        let signer = if cert.team == team { team } else { other };
        assert!(cert.is_signed_by(&signer));
        check_signed(x, domain::CERTIFICATE, &[], &b, &signer.0);
        assert_eq!(cert.to_token(), st(x, "token"));
        assert_eq!(Certificate::from_token(st(x, "token")), Ok(cert.clone()));
        let token_bytes = data_encoding::BASE32_NOPAD
            .decode(&st(x, "token").as_bytes()["HUDDLE1:".len()..])
            .expect("base32");
        assert_eq!(token_bytes[..b.len()], b[..]);
        assert_eq!(token_bytes[b.len()..], crypto::sha256(&[&b])[..4]);
        by_name.insert(st(x, "name").to_owned(), cert);
    }
    for x in list(&v, "invalid") {
        expect_decode_error(x, Certificate::decode(&bytes(x, "hex")));
    }
    for x in list(&v, "signature_invalid") {
        let cert = Certificate::decode(&bytes(x, "hex")).expect("decodes");
        assert!(!cert.is_signed_by(&team), "{x}");
        assert_eq!(
            cert.check(&team, T0, &Revocations::default()),
            Err(huddle::membership::CertError::BadSignature)
        );
    }
    for x in list(&v, "checks") {
        let cert = &by_name[st(x, "certificate")];
        let mut revoked = Revocations::default();
        for d in list(x, "revoked_devices") {
            revoked.insert(RevocationTarget::Device(DeviceId(
                unhex(d.as_str().expect("hex")).try_into().expect("32"),
            )));
        }
        for m in list(x, "revoked_members") {
            revoked.insert(RevocationTarget::Member(
                m.as_str().expect("hex").parse().expect("member"),
            ));
        }
        let got = match cert.check(&TeamId(fixed(x, "team")), num(x, "now"), &revoked) {
            Ok(()) => "ok".to_owned(),
            Err(e) => format!("{e:?}"),
        };
        assert_eq!(got, st(x, "result"), "{x}");
    }
    for x in list(&v, "tokens") {
        assert_eq!(
            Certificate::from_token(st(x, "token")).as_ref(),
            Ok(&by_name[st(x, "certificate")]),
            "{x}"
        );
    }
    for x in list(&v, "tokens_invalid") {
        match Certificate::from_token(st(x, "token")) {
            Ok(c) => panic!("token {x} must be rejected, got {c:?}"),
            Err(e) => assert_eq!(token_error_name(&e), st(x, "error"), "{x}: {e}"),
        }
    }
}

// ---------------------------------------------------------------------------
// revocations.json
// ---------------------------------------------------------------------------

fn revocations(c: &Cast) -> Vec<(&'static str, Revocation)> {
    vec![
        (
            "device ben-tablet",
            Revocation::sign(
                &c.authority,
                RevocationTarget::Device(c.dev("ben-tablet")),
                T0 + DAY,
            ),
        ),
        (
            "member chidi",
            Revocation::sign(
                &c.authority,
                RevocationTarget::Member(member("chidi")),
                T0 + 2 * DAY,
            ),
        ),
    ]
}

fn gen_revocations(c: &Cast) -> Value {
    let valid: Vec<Value> = revocations(c)
        .iter()
        .map(|(name, r)| {
            let b = r.encode();
            json!({
                "name": name,
                "fields": revocation_json(r),
                "signed_message": hex(&[domain::REVOCATION, &[0], &b[..b.len() - 64]].concat()),
                "hex": hex(&b),
                "key": hex(&r.key()),
                "team_document_key": hex(&r.key()),
                "store_key": hex(&keys::revocation(&r.key())),
            })
        })
        .collect();
    let r = revocations(c)[0].1.encode();
    let bad =
        |b: Vec<u8>, why: &str, error: &str| json!({ "hex": hex(&b), "why": why, "error": error });
    let invalid = vec![
        bad(vec![], "empty", "Truncated"),
        bad(r[..r.len() - 1].to_vec(), "last byte missing", "Truncated"),
        bad(
            [r.as_slice(), &[0]].concat(),
            "one trailing byte",
            "Trailing",
        ),
        bad(splice(&r, 0, 1, &[2]), "version 2", "Unknown"),
        bad(splice(&r, 33, 1, &[0]), "target type 0", "Unknown"),
        bad(splice(&r, 33, 1, &[3]), "target type 3", "Unknown"),
        bad(
            splice(&r, 33, 1, &[2]),
            "target type 2 (member) followed by a device's 32 bytes: 16 trailing bytes",
            "Trailing",
        ),
    ];
    let sig_invalid = vec![
        json!({
            "hex": hex(&splice(&r, r.len() - 64 - 8, 8, &(T0 + 2 * DAY).to_be_bytes())),
            "why": "issued time changed after signing",
        }),
        json!({
            "hex": hex(&with_signature(&r, &malleate(&last_sig(&r)))),
            "why": "signature S replaced by S + l (non-canonical)",
        }),
        json!({
            "hex": hex(&Revocation::sign(&c.other_authority, RevocationTarget::Device(c.dev("ben-tablet")), T0 + DAY).encode()),
            "why": "signed by another team's authority (valid for that team only)",
        }),
    ];
    json!({
        "description": "Authority-signed revocations of a device or of a member (protocol/wire.md#revocation). 'key' is the first 16 bytes of SHA-256 of the encoding; the team document stores the revocation under its lowercase hex, the store under rev/<key>.",
        "keys": keys_json(c),
        "valid": valid,
        "invalid": invalid,
        "signature_invalid": sig_invalid,
    })
}

#[test]
fn revocations_vectors() {
    let v = load("revocations.json");
    let (team, _, _) = keys_from_json(get(&v, "keys"));
    for x in list(&v, "valid") {
        let fields = revocation_from_json(get(x, "fields"));
        let (r, b) = check_round_trip(x, fields, Revocation::encode, Revocation::decode);
        assert!(r.verify(&team));
        assert!(!r.verify(&TeamId([7; 32])));
        check_signed(x, domain::REVOCATION, &[], &b, &team.0);
        let key = &crypto::sha256(&[&b])[..16];
        assert_eq!(hex(key), st(x, "key"));
        assert_eq!(hex(&r.key()), st(x, "key"));
        assert_eq!(st(x, "team_document_key"), st(x, "key"));
        assert_eq!(bytes(x, "store_key"), [b"rev/".as_slice(), key].concat());
        assert_eq!(keys::revocation(&r.key()), bytes(x, "store_key"));
    }
    for x in list(&v, "invalid") {
        expect_decode_error(x, Revocation::decode(&bytes(x, "hex")));
    }
    for x in list(&v, "signature_invalid") {
        let r = Revocation::decode(&bytes(x, "hex")).expect("decodes");
        assert!(!r.verify(&team), "{x}");
    }
}

// ---------------------------------------------------------------------------
// messages.json: messages and receipts
// ---------------------------------------------------------------------------

fn group_id() -> ConversationId {
    ConversationId(id16("conversation:ward-7-handover"))
}

const STAT_BODY: &str =
    "Bed 12 — SpO₂ 84 % on 4 L O₂, RR 32, new confusion. Rapid response team called; \
                         need a physician at the bedside now. Family informed. Please acknowledge.";

fn messages(c: &Cast) -> Vec<(&'static str, Message)> {
    let conv = group_id();
    let m1 = Message::sign(
        c.key("ana-phone"),
        &conv,
        Draft {
            author_member: member("ana"),
            hlc: Hlc::new(T0, 0),
            priority: Priority::Routine,
            reply_to: None,
            body: "Handover at 19:00 in the staff room.".into(),
        },
    );
    let m2 = Message::sign(
        c.key("ben-tablet"),
        &conv,
        Draft {
            author_member: member("ben"),
            hlc: Hlc::new(T0 + 60_000, 3),
            priority: Priority::Urgent,
            reply_to: Some(m1.id()),
            body: "Bed 4 BP 80/40, please review".into(),
        },
    );
    let m3 = Message::sign(
        c.key("ana-phone"),
        &conv,
        Draft {
            author_member: member("ana"),
            hlc: Hlc::new(T0 + 120_000, 0),
            priority: Priority::Stat,
            reply_to: None,
            body: STAT_BODY.into(),
        },
    );
    let m4 = Message::sign(
        c.key("chidi-laptop"),
        &conv,
        Draft {
            author_member: member("chidi"),
            hlc: Hlc::new(T0 + 120_000, 65_535),
            priority: Priority::Routine,
            reply_to: None,
            body: String::new(),
        },
    );
    vec![
        ("routine", m1),
        ("urgent reply", m2),
        ("stat, two-byte body length", m3),
        ("empty body (wire-valid; never sent by huddle)", m4),
    ]
}

fn receipts(c: &Cast) -> Vec<(&'static str, Receipt)> {
    let conv = group_id();
    let m = messages(c);
    let (m1, m2) = (&m[0].1, &m[1].1);
    vec![
        (
            "delivered",
            Receipt::sign(
                c.key("ben-tablet"),
                &conv,
                ReceiptKind::Delivered,
                member("ben"),
                m1.order_key(),
                Hlc::new(T0 + 500, 0),
            ),
        ),
        (
            "read",
            Receipt::sign(
                c.key("ana-phone"),
                &conv,
                ReceiptKind::Read,
                member("ana"),
                m2.order_key(),
                Hlc::new(T0 + 61_000, 0),
            ),
        ),
        (
            "ack",
            Receipt::sign(
                c.key("ana-phone"),
                &conv,
                ReceiptKind::Ack,
                member("ana"),
                m2.order_key(),
                Hlc::new(T0 + 61_000, 1),
            ),
        ),
    ]
}

fn gen_messages(c: &Cast) -> Value {
    let conv = group_id();
    let msgs = messages(c);
    let valid: Vec<Value> = msgs
        .iter()
        .map(|(name, m)| {
            let b = m.encode();
            json!({
                "name": name,
                "conversation": conv.to_hex(),
                "fields": message_json(m),
                "signed_message": hex(&[domain::MESSAGE, &[0], &conv.0, &b[..b.len() - 64]].concat()),
                "hex": hex(&b),
                "id": m.id().to_hex(),
            })
        })
        .collect();
    let m = msgs[1].1.encode(); // has a reply-to
    let r = msgs[0].1.encode(); // no reply-to
    let body_at = r.len() - 64 - msgs[0].1.body.len() - 1;
    let bad =
        |b: Vec<u8>, why: &str, error: &str| json!({ "hex": hex(&b), "why": why, "error": error });
    let mut long = msgs[0].1.clone();
    long.body = "x".repeat(16 * 1024 + 1);
    let invalid = vec![
        bad(vec![], "empty", "Truncated"),
        bad(m[..m.len() - 1].to_vec(), "last byte missing", "Truncated"),
        bad(
            [m.as_slice(), &[0]].concat(),
            "one trailing byte",
            "Trailing",
        ),
        bad(splice(&m, 0, 1, &[0]), "version 0", "Unknown"),
        bad(splice(&m, 0, 1, &[2]), "version 2", "Unknown"),
        bad(splice(&m, 57, 1, &[3]), "priority 3", "Unknown"),
        bad(splice(&m, 58, 1, &[2]), "reply flag 2", "Unknown"),
        bad(
            nonminimal_varint(&r, body_at),
            "body length as a non-minimal varint",
            "Varint",
        ),
        bad(
            long.encode()[..body_at + 3].to_vec(),
            "body length 16385, body absent (rejected on the length alone)",
            "TooLong",
        ),
        bad(
            splice(&r, body_at + 1, 1, &[0xc3]),
            "body is not UTF-8",
            "Utf8",
        ),
    ];
    let m1 = &msgs[0].1;
    let mut altered = m1.clone();
    altered.body.push('!');
    let mut impostor = m1.clone();
    impostor.author_member = member("ben");
    let sig_invalid = vec![
        json!({ "conversation": conv.to_hex(), "hex": hex(&altered.encode()), "why": "body changed after signing" }),
        json!({ "conversation": conv.to_hex(), "hex": hex(&impostor.encode()), "why": "author member changed after signing" }),
        json!({ "conversation": ConversationId(id16("conversation:other")).to_hex(), "hex": hex(&m1.encode()), "why": "replayed into another conversation" }),
        json!({ "conversation": conv.to_hex(), "hex": hex(&with_signature(&m1.encode(), &malleate(&m1.signature))), "why": "signature S replaced by S + l (non-canonical): would give the same message another id" }),
    ];

    let rcpts: Vec<Value> = receipts(c)
        .iter()
        .map(|(name, r)| {
            let b = r.encode();
            json!({
                "name": name,
                "conversation": conv.to_hex(),
                "fields": receipt_json(r),
                "signed_message": hex(&[domain::RECEIPT, &[0], &conv.0, &b[..b.len() - 64]].concat()),
                "hex": hex(&b),
                "doc_key": r.doc_key(),
            })
        })
        .collect();
    let rb = receipts(c)[2].1.encode();
    let rinvalid = vec![
        bad(vec![], "empty", "Truncated"),
        bad(
            rb[..rb.len() - 1].to_vec(),
            "last byte missing",
            "Truncated",
        ),
        bad(
            [rb.as_slice(), &[0]].concat(),
            "one trailing byte",
            "Trailing",
        ),
        bad(splice(&rb, 0, 1, &[2]), "version 2", "Unknown"),
        bad(splice(&rb, 1, 1, &[0]), "kind 0", "Unknown"),
        bad(splice(&rb, 1, 1, &[4]), "kind 4", "Unknown"),
    ];
    let mut forged = receipts(c)[2].1.clone();
    forged.kind = ReceiptKind::Read;
    let rsig_invalid = vec![
        json!({ "conversation": conv.to_hex(), "hex": hex(&forged.encode()), "why": "kind changed after signing" }),
        json!({ "conversation": ConversationId(id16("conversation:other")).to_hex(), "hex": hex(&rb), "why": "replayed into another conversation" }),
    ];
    json!({
        "description": "Signed messages and receipts as stored in a conversation document (protocol/wire.md#message, #receipt). The signature covers the conversation id, which is not stored. A message id is the first 16 bytes of SHA-256 of its 64-byte signature. 'doc_key' is the receipt's key in the document's receipts map.",
        "keys": keys_json(c),
        "messages": valid,
        "messages_invalid": invalid,
        "messages_signature_invalid": sig_invalid,
        "receipts": rcpts,
        "receipts_invalid": rinvalid,
        "receipts_signature_invalid": rsig_invalid,
    })
}

#[test]
fn messages_vectors() {
    let v = load("messages.json");
    keys_from_json(get(&v, "keys"));
    let other = ConversationId([0xee; 16]);
    for x in list(&v, "messages") {
        let conv = ConversationId(fixed(x, "conversation"));
        let fields = message_from_json(get(x, "fields"));
        let (m, b) = check_round_trip(x, fields, Message::encode, Message::decode);
        assert!(m.verify(&conv));
        assert!(!m.verify(&other));
        check_signed(x, domain::MESSAGE, &conv.0, &b, &m.author_device.0);
        assert_eq!(m.id().to_hex(), st(x, "id"));
        assert_eq!(
            hex(&crypto::sha256(&[&m.signature])[..16]),
            st(x, "id"),
            "id = SHA-256(signature)[..16]"
        );
    }
    for x in list(&v, "messages_invalid") {
        expect_decode_error(x, Message::decode(&bytes(x, "hex")));
    }
    for x in list(&v, "messages_signature_invalid") {
        let m = Message::decode(&bytes(x, "hex")).expect("decodes");
        assert!(!m.verify(&ConversationId(fixed(x, "conversation"))), "{x}");
    }
    for x in list(&v, "receipts") {
        let conv = ConversationId(fixed(x, "conversation"));
        let fields = receipt_from_json(get(x, "fields"));
        let (r, b) = check_round_trip(x, fields, Receipt::encode, Receipt::decode);
        assert!(r.verify(&conv));
        assert!(!r.verify(&other));
        check_signed(x, domain::RECEIPT, &conv.0, &b, &r.device.0);
        assert_eq!(r.doc_key(), st(x, "doc_key"));
        let device = hex(&r.device.0);
        let expected = match r.kind {
            ReceiptKind::Delivered => format!("d{device}"),
            ReceiptKind::Read => format!("r{device}"),
            ReceiptKind::Ack => format!("a{}{device}", r.upto.1.to_hex()),
        };
        assert_eq!(expected, st(x, "doc_key"));
    }
    for x in list(&v, "receipts_invalid") {
        expect_decode_error(x, Receipt::decode(&bytes(x, "hex")));
    }
    for x in list(&v, "receipts_signature_invalid") {
        let r = Receipt::decode(&bytes(x, "hex")).expect("decodes");
        assert!(!r.verify(&ConversationId(fixed(x, "conversation"))), "{x}");
    }
}

// ---------------------------------------------------------------------------
// headers.json
// ---------------------------------------------------------------------------

fn headers(c: &Cast) -> Vec<(&'static str, ConversationHeader)> {
    let (ana, ben, chidi) = (member("ana"), member("ben"), member("chidi"));
    vec![
        (
            "direct",
            ConversationHeader::sign(
                c.key("ana-phone"),
                direct_id(ana, ben),
                ConversationKind::Direct {
                    members: [ana, ben],
                },
                T0,
            ),
        ),
        (
            "group",
            ConversationHeader::sign(
                c.key("ana-phone"),
                group_id(),
                ConversationKind::Group {
                    title: "Ward 7 handover".into(),
                    members: [ana, ben, chidi].into_iter().collect(),
                },
                T0 - 3_600_000,
            ),
        ),
        (
            "role",
            ConversationHeader::sign(
                c.key("ben-tablet"),
                ConversationId(id16("conversation:role-charge-nurse")),
                ConversationKind::Role {
                    role: "charge-nurse".into(),
                },
                T0 + 1,
            ),
        ),
    ]
}

/// Signs hand-made header bytes (for must-reject vectors that the typed
/// encoder cannot produce).
fn signed_raw_header(key: &DeviceKey, payload: &[u8]) -> Vec<u8> {
    [payload, &key.sign(domain::HEADER, payload)].concat()
}

fn gen_headers(c: &Cast) -> Value {
    let hs = headers(c);
    let valid: Vec<Value> = hs
        .iter()
        .map(|(name, h)| {
            let b = h.encode();
            json!({
                "name": name,
                "fields": header_json(h),
                "signed_message": hex(&[domain::HEADER, &[0], &b[..b.len() - 64]].concat()),
                "hex": hex(&b),
            })
        })
        .collect();
    let d = hs[0].1.encode();
    let bad =
        |b: Vec<u8>, why: &str, error: &str| json!({ "hex": hex(&b), "why": why, "error": error });
    let key = c.key("ana-phone");
    let group_payload = |members: &[MemberId]| {
        let mut w = Writer::new();
        w.u8(1).raw(&group_id().0).u8(2).str("Ward 7 handover");
        w.varint(members.len() as u64);
        for m in members {
            w.raw(&m.0);
        }
        w.raw(&key.device_id().0).u64_be(T0);
        w.finish()
    };
    let (ana, ben, chidi) = (member("ana"), member("ben"), member("chidi"));
    let mut sorted = [ana, ben, chidi];
    sorted.sort();
    let unsorted = [sorted[2], sorted[0], sorted[1]];
    let too_many: Vec<MemberId> = (0..257u16)
        .map(|i| {
            let mut b = [0u8; 16];
            b[..2].copy_from_slice(&i.to_be_bytes());
            MemberId(b)
        })
        .collect();
    let mut long_title = hs[1].1.clone();
    long_title.kind = ConversationKind::Group {
        title: "T".repeat(101),
        members: [ana].into_iter().collect(),
    };
    let mut long_role = hs[2].1.clone();
    long_role.kind = ConversationKind::Role {
        role: "r".repeat(65),
    };
    let invalid = vec![
        bad(vec![], "empty", "Truncated"),
        bad(d[..d.len() - 1].to_vec(), "last byte missing", "Truncated"),
        bad(
            [d.as_slice(), &[0]].concat(),
            "one trailing byte",
            "Trailing",
        ),
        bad(splice(&d, 0, 1, &[2]), "version 2", "Unknown"),
        bad(splice(&d, 17, 1, &[0]), "kind 0", "Unknown"),
        bad(splice(&d, 17, 1, &[4]), "kind 4", "Unknown"),
        bad(
            splice(&d, 20, 1, &[d[20] ^ 1]),
            "a member id changed after signing",
            "Invalid",
        ),
        bad(
            with_signature(&d, &malleate(&last_sig(&d))),
            "signature S replaced by S + l (non-canonical)",
            "Invalid",
        ),
        bad(
            signed_raw_header(key, &group_payload(&unsorted)),
            "group members not in ascending order (signed as sent)",
            "Invalid",
        ),
        bad(
            signed_raw_header(key, &group_payload(&[ana, ana, ben])),
            "a group member listed twice (signed as sent)",
            "Invalid",
        ),
        bad(
            signed_raw_header(key, &group_payload(&too_many)),
            "257 group members",
            "TooLong",
        ),
        bad(long_title.encode(), "group title of 101 bytes", "TooLong"),
        bad(long_role.encode(), "role of 65 bytes", "TooLong"),
    ];
    json!({
        "description": "Conversation headers (protocol/wire.md#header), signed by the creating device. Decoding a header includes checking its signature; group members are encoded in ascending byte order without repetition. A direct conversation's id is derived from its two members (primitives.json).",
        "keys": keys_json(c),
        "valid": valid,
        "invalid": invalid,
    })
}

#[test]
fn headers_vectors() {
    let v = load("headers.json");
    keys_from_json(get(&v, "keys"));
    for x in list(&v, "valid") {
        let fields = header_from_json(get(x, "fields"));
        let (h, b) = check_round_trip(
            x,
            fields,
            ConversationHeader::encode,
            ConversationHeader::decode,
        );
        check_signed(x, domain::HEADER, &[], &b, &h.creator.0);
        if let ConversationKind::Direct { members } = h.kind {
            assert_eq!(h.id, direct_id(members[0], members[1]));
        }
        let kind = get(get(x, "fields"), "kind");
        if st(kind, "type") == "group" {
            let listed = members_from_json(kind);
            assert!(
                listed.windows(2).all(|w| w[0] < w[1]),
                "group members are listed in ascending order, once each"
            );
        }
    }
    for x in list(&v, "invalid") {
        expect_decode_error(x, ConversationHeader::decode(&bytes(x, "hex")));
    }
}

// ---------------------------------------------------------------------------
// frames.json
// ---------------------------------------------------------------------------

fn gen_frames(c: &Cast) -> Value {
    let ana = cert(c, "ana-phone");
    let hs = headers(c);
    let conv_doc = group_id().0;
    let heads = |l: &str| id16(&format!("heads:{l}"));
    let sync_msg = documents_sync_messages(c)[0].clone();
    let (first, second) = sync_msg.split_at(sync_msg.len() / 2);
    let mut frames: Vec<(String, Frame)> = vec![
        (
            "hello".into(),
            Frame::Hello {
                version: 1,
                certificate: ana.clone(),
            },
        ),
        (
            "catalog: team document and one conversation".into(),
            Frame::Catalog {
                entries: vec![
                    CatalogEntry {
                        doc: TEAM_DOC_ID,
                        heads: heads("team"),
                    },
                    CatalogEntry {
                        doc: conv_doc,
                        heads: heads("group"),
                    },
                ],
                last: true,
            },
        ),
        (
            "catalog: a first part, more to come".into(),
            Frame::Catalog {
                entries: vec![CatalogEntry {
                    doc: TEAM_DOC_ID,
                    heads: heads("team"),
                }],
                last: false,
            },
        ),
        (
            "catalog: empty final part".into(),
            Frame::Catalog {
                entries: vec![],
                last: true,
            },
        ),
        (
            "header".into(),
            Frame::Header {
                header: hs[1].1.clone(),
            },
        ),
        (
            "sync: a whole Automerge sync message".into(),
            Frame::Sync {
                doc: conv_doc,
                more: false,
                data: sync_msg.clone(),
            },
        ),
        (
            "sync: first part of a split message".into(),
            Frame::Sync {
                doc: conv_doc,
                more: true,
                data: first.to_vec(),
            },
        ),
        (
            "sync: last part of a split message".into(),
            Frame::Sync {
                doc: conv_doc,
                more: false,
                data: second.to_vec(),
            },
        ),
        (
            "sync: empty data".into(),
            Frame::Sync {
                doc: conv_doc,
                more: true,
                data: vec![],
            },
        ),
        (
            "heads: one conversation's heads changed".into(),
            Frame::Heads {
                entries: vec![HeadsEntry {
                    doc: conv_doc,
                    heads: vec![label("head:a")],
                }],
            },
        ),
        (
            "heads: two documents, one with two concurrent heads".into(),
            Frame::Heads {
                entries: vec![
                    HeadsEntry {
                        doc: TEAM_DOC_ID,
                        heads: vec![label("head:t")],
                    },
                    HeadsEntry {
                        doc: conv_doc,
                        heads: vec![label("head:a"), label("head:b")],
                    },
                ],
            },
        ),
        (
            "heads: too many heads to list (the receiver pulls)".into(),
            Frame::Heads {
                entries: vec![HeadsEntry {
                    doc: conv_doc,
                    heads: vec![],
                }],
            },
        ),
    ];
    for code in (1..=12).chain([0, 13, 255]) {
        let reason = Reason::from_code(code);
        frames.push((format!("refuse: {reason:?}"), Frame::Refuse { reason }));
    }
    let valid: Vec<Value> = frames
        .iter()
        .map(|(name, f)| json!({ "name": name, "frame": frame_json(f), "hex": hex(&f.encode()) }))
        .collect();

    let hello = Frame::Hello {
        version: 1,
        certificate: ana.clone(),
    }
    .encode();
    let cert_b = ana.encode();
    let catalog = frames[1].1.encode();
    let header = frames[4].1.encode();
    let sync = frames[5].1.encode();
    let refuse = Frame::Refuse {
        reason: Reason::Malformed,
    }
    .encode();
    let bad = |b: Vec<u8>, why: &str, error: &str, refusal: u8| json!({ "hex": hex(&b), "why": why, "error": error, "refusal": refusal });
    let mut w = Writer::new();
    w.u8(1).u8(1).varint(4097);
    let hello_4097 = w.finish();
    let mut w = Writer::new();
    w.u8(3).u8(1).varint(16_385);
    let catalog_16385 = w.finish();
    let big_data = MAX_FRAME_LEN - (1 + 16 + 1 + 3);
    let mut w = Writer::new();
    w.u8(5).raw(&conv_doc).u8(0).varint(big_data as u64);
    let max_prefix = w.finish();
    let mut w = Writer::new();
    w.u8(5).raw(&conv_doc).u8(0).varint(big_data as u64 + 1);
    let over_prefix = w.finish();
    let sync_len_at = 1 + 16 + 1;
    let mut invalid = vec![
        bad(vec![], "empty frame", "Truncated", 10),
        bad(vec![0], "tag 0", "Unknown", 10),
        bad(vec![7], "tag 7", "Unknown", 10),
        bad(vec![0xff], "tag 255", "Unknown", 10),
        bad(splice(&hello, 1, 1, &[0]), "hello version 0", "Unknown", 8),
        bad(splice(&hello, 1, 1, &[2]), "hello version 2", "Unknown", 8),
        bad(vec![1, 2], "hello version 2, nothing after", "Unknown", 8),
        bad(vec![1], "hello without version", "Truncated", 10),
        bad(
            hello_4097,
            "hello with a certificate length of 4097",
            "TooLong",
            10,
        ),
        bad(
            hello[..hello.len() - 1].to_vec(),
            "hello with its certificate cut short",
            "Truncated",
            10,
        ),
        bad(
            [hello.as_slice(), &[0]].concat(),
            "hello with a trailing byte after the certificate",
            "Trailing",
            10,
        ),
        bad(
            {
                let mut w = Writer::new();
                w.u8(1).u8(1).bytes(&[cert_b.as_slice(), &[0]].concat());
                w.finish()
            },
            "hello whose certificate field holds a trailing byte",
            "Trailing",
            10,
        ),
        bad(
            nonminimal_varint(&hello, 2),
            "hello with the certificate length as a non-minimal varint",
            "Varint",
            10,
        ),
        bad(vec![2], "refuse without a reason", "Truncated", 10),
        bad(
            [refuse.as_slice(), &[0]].concat(),
            "refuse with a trailing byte",
            "Trailing",
            10,
        ),
        bad(
            splice(&catalog, 1, 1, &[2]),
            "catalog last flag 2",
            "Unknown",
            10,
        ),
        bad(catalog_16385, "catalog of 16385 entries", "TooLong", 10),
        bad(
            catalog[..catalog.len() - 32].to_vec(),
            "catalog announcing 2 entries, holding 1",
            "Truncated",
            10,
        ),
        bad(
            nonminimal_varint(&catalog, 2),
            "catalog count as a non-minimal varint",
            "Varint",
            10,
        ),
        bad(
            [catalog.as_slice(), &[0]].concat(),
            "catalog with a trailing byte",
            "Trailing",
            10,
        ),
        bad(
            vec![6, 1],
            "heads announcing 1 entry, holding none",
            "Truncated",
            10,
        ),
        bad(
            {
                let mut w = Writer::new();
                w.u8(6).varint(16 * 1024 + 1);
                w.finish()
            },
            "heads of 16385 entries",
            "TooLong",
            10,
        ),
        bad(
            {
                let mut w = Writer::new();
                w.u8(6).varint(1).raw(&conv_doc).varint(4097);
                w.finish()
            },
            "heads entry listing 4097 heads",
            "TooLong",
            10,
        ),
        bad(
            {
                let mut w = Writer::new();
                w.u8(6)
                    .varint(1)
                    .raw(&conv_doc)
                    .varint(2)
                    .raw(&label("head:a"));
                w.finish()
            },
            "heads entry announcing 2 heads, holding 1",
            "Truncated",
            10,
        ),
        bad(
            splice(
                &header,
                header.len() - 1,
                1,
                &[header[header.len() - 1] ^ 1],
            ),
            "header whose signature does not verify",
            "Invalid",
            10,
        ),
        bad(
            [header.as_slice(), &[0]].concat(),
            "header with a trailing byte",
            "Trailing",
            10,
        ),
        bad(
            vec![5, 0, 0],
            "sync with a truncated document id",
            "Truncated",
            10,
        ),
        bad(
            splice(&sync, 17, 1, &[2]),
            "sync more flag 2",
            "Unknown",
            10,
        ),
        bad(
            sync[..sync.len() - 1].to_vec(),
            "sync data shorter than its length",
            "Truncated",
            10,
        ),
        bad(
            nonminimal_varint(&sync, sync_len_at),
            "sync data length as a non-minimal varint",
            "Varint",
            10,
        ),
    ];
    let mut oversize = bad(
        over_prefix,
        "frame of MAX_FRAME_LEN + 1 bytes (zero-filled sync data)",
        "TooLong",
        11,
    );
    oversize["zero_fill_to"] = json!(MAX_FRAME_LEN + 1);
    invalid.push(oversize);
    let big = json!({
        "name": "sync frame of exactly MAX_FRAME_LEN bytes (zero-filled data)",
        "hex": hex(&max_prefix),
        "zero_fill_to": MAX_FRAME_LEN,
        "doc": hex(&conv_doc),
        "more": false,
        "data_len": big_data,
    });
    let reasons: Vec<Value> = (0..=13u8)
        .map(|c| json!({ "code": c, "name": format!("{:?}", Reason::from_code(c)), "text": Reason::from_code(c).to_string() }))
        .collect();
    json!({
        "description": "Frames of /huddle/sync/2 (protocol/wire.md#frames). 'frame' gives the decoded fields; nested objects (certificate, header) are themselves vectors of certificates.json and headers.json, and sync data is an Automerge sync message (documents.json). Every must-reject frame names the decode error and the reason code of the Refuse a node sends before disconnecting.",
        "valid": valid,
        "valid_max_size": big,
        "invalid": invalid,
        "reasons": reasons,
    })
}

#[test]
fn frames_vectors() {
    let v = load("frames.json");
    for x in list(&v, "valid") {
        let fields = frame_from_json(get(x, "frame"));
        let (f, _) = check_round_trip(x, fields, Frame::encode, Frame::decode);
        assert_eq!(frame_json(&f), *get(x, "frame"));
    }
    let big = get(&v, "valid_max_size");
    let b = vector_bytes(big);
    assert_eq!(b.len(), MAX_FRAME_LEN);
    match Frame::decode(&b) {
        Ok(Frame::Sync { doc, more, data }) => {
            assert_eq!(hex(&doc), st(big, "doc"));
            assert_eq!(more, flag(big, "more"));
            assert_eq!(data.len() as u64, num(big, "data_len"));
            assert!(data.iter().all(|b| *b == 0));
            assert_eq!(
                Frame::Sync { doc, more, data }.encode(),
                b,
                "re-encodes byte for byte"
            );
        }
        r => panic!("max-size frame: {r:?}"),
    }
    for x in list(&v, "invalid") {
        expect_decode_error(x, Frame::decode(&vector_bytes(x)));
    }
    for x in list(&v, "reasons") {
        let r = Reason::from_code(u8::try_from(num(x, "code")).expect("u8"));
        assert_eq!(format!("{r:?}"), st(x, "name"));
        assert_eq!(r.to_string(), st(x, "text"));
        assert_eq!(u64::from(r.code()), num(x, "code"));
    }
}

/// A node refuses each must-reject frame, from a peer that has not sent its
/// hello yet, with the reason code the vector gives.
#[test]
fn frames_refusal_reasons() {
    let v = load("frames.json");
    let c = Cast::new();
    let peer = c.dev("ben-tablet");
    for x in list(&v, "invalid") {
        let (sent, _) = gate_run(&c, &Stored::default(), T0, peer, &[vector_bytes(x)], false);
        let refusal = sent.iter().find_map(|f| match Frame::decode(f) {
            Ok(Frame::Refuse { reason }) => Some(reason.code()),
            _ => None,
        });
        assert_eq!(
            refusal.map(u64::from),
            Some(num(x, "refusal")),
            "{}",
            st(x, "why")
        );
    }
}

// ---------------------------------------------------------------------------
// documents.json: Automerge schemas, genesis, heads digests, sync messages
// ---------------------------------------------------------------------------

fn obj_type_name(t: ObjType) -> &'static str {
    match t {
        ObjType::Map => "map",
        ObjType::List => "list",
        ObjType::Text => "text",
        ObjType::Table => "table",
    }
}

fn obj_type_from(s: &str) -> ObjType {
    match s {
        "map" => ObjType::Map,
        "list" => ObjType::List,
        t => panic!("unexpected object type {t}"),
    }
}

/// The genesis change of a document, made directly with Automerge.
fn genesis(doc_id: &[u8; 16], roots: &[(&str, ObjType)]) -> (Automerge, automerge::Change) {
    let mut doc = Automerge::new().with_actor(ActorId::from(doc_id.as_slice()));
    let mut tx = doc.transaction();
    for (name, typ) in roots {
        tx.put_object(ROOT, *name, *typ).expect("fresh document");
    }
    tx.commit_with(CommitOptions::default().with_time(0));
    let change = doc.get_changes(&[]).into_iter().next().expect("one change");
    (doc, change)
}

fn heads_digest(heads: &[automerge::ChangeHash]) -> [u8; 16] {
    let parts: Vec<&[u8]> = heads.iter().map(|h| h.0.as_slice()).collect();
    crypto::sha256(&parts)[..16].try_into().expect("16 bytes")
}

fn genesis_json(doc_id: &[u8; 16], schema: huddle::replica::Schema, what: &str) -> Value {
    let (doc, change) = genesis(doc_id, schema.roots);
    let roots: Vec<Value> = schema
        .roots
        .iter()
        .map(|(name, typ)| {
            let (_, obj) = doc.get(ROOT, *name).expect("get").expect("root object");
            json!({ "key": name, "type": obj_type_name(*typ), "object_id": obj.to_string() })
        })
        .collect();
    json!({
        "document": what,
        "doc_id": hex(doc_id),
        "actor": hex(doc_id),
        "seq": 1,
        "start_op": 1,
        "time": 0,
        "message": null,
        "deps": [],
        "roots": roots,
        "change": hex(change.raw_bytes()),
        "change_hash": hex(&change.hash().0),
        "heads_digest": hex(&heads_digest(&[change.hash()])),
    })
}

/// Two replicas of the group conversation, `a` holding message m1 written at
/// T0 by a fixed actor, `b` fresh; the sync messages of a full exchange.
fn documents_sync_messages(c: &Cast) -> Vec<Vec<u8>> {
    sync_exchange(c).into_iter().map(|(_, m)| m).collect()
}

fn actor(l: &str) -> ActorId {
    ActorId::from(id16(&format!("actor:{l}")).as_slice())
}

fn sync_exchange(c: &Cast) -> Vec<(&'static str, Vec<u8>)> {
    let schema = huddle::conversation::SCHEMA;
    let doc = group_id().0;
    let mut a = Replica::new(&doc, schema, &actor("ana-phone"));
    let mut b = Replica::new(&doc, schema, &actor("ben-tablet"));
    a.insert(T0, 0, messages(c)[0].1.encode()).expect("insert");
    let (mut sa, mut sb) = (automerge::sync::State::new(), automerge::sync::State::new());
    let mut out = Vec::new();
    for _ in 0..10 {
        let m1 = a.generate_sync(&mut sa);
        if let Some(m) = &m1 {
            b.receive_sync(&mut sb, m).expect("b receives");
            out.push(("a to b", m.clone()));
        }
        let m2 = b.generate_sync(&mut sb);
        if let Some(m) = &m2 {
            a.receive_sync(&mut sa, m).expect("a receives");
            out.push(("b to a", m.clone()));
        }
        if m1.is_none() && m2.is_none() {
            assert_eq!(a.heads(), b.heads());
            return out;
        }
    }
    panic!("sync did not finish");
}

fn gen_documents(c: &Cast) -> Value {
    let conv = huddle::conversation::SCHEMA;
    let team = huddle::team::SCHEMA;
    let geneses = vec![
        genesis_json(&group_id().0, conv, "conversation"),
        genesis_json(
            &direct_id(member("ana"), member("ben")).0,
            conv,
            "conversation",
        ),
        genesis_json(&TEAM_DOC_ID, team, "team"),
    ];
    // One message written by a fixed actor at T0, and a concurrent one.
    let doc = group_id().0;
    let msgs = messages(c);
    let mut a = Replica::new(&doc, conv, &actor("ana-phone"));
    a.insert(T0, 0, msgs[0].1.encode()).expect("insert");
    let one_head = a.heads();
    let mut b = Replica::new(&doc, conv, &actor("ben-tablet"));
    b.insert(T0 + 60_000, 0, msgs[1].1.encode())
        .expect("insert");
    let (mut sa, mut sb) = Default::default();
    loop {
        let m1 = a.generate_sync(&mut sa);
        if let Some(m) = &m1 {
            b.receive_sync(&mut sb, m).expect("receive");
        }
        let m2 = b.generate_sync(&mut sb);
        if let Some(m) = &m2 {
            a.receive_sync(&mut sa, m).expect("receive");
        }
        if m1.is_none() && m2.is_none() {
            break;
        }
    }
    let two_heads = a.heads();
    assert_eq!(two_heads.len(), 2);
    let digests = vec![
        json!({ "heads": one_head.iter().map(|h| hex(&h.0)).collect::<Vec<_>>(), "digest": hex(&heads_digest(&one_head)) }),
        json!({ "heads": two_heads.iter().map(|h| hex(&h.0)).collect::<Vec<_>>(), "digest": hex(&a.heads_digest()) }),
    ];
    let loaded = Automerge::load(&a.save()).expect("load");
    let changes: Vec<Value> = loaded
        .get_changes(&[])
        .iter()
        .filter(|ch| ch.seq() == 1 && ch.actor_id() != &ActorId::from(doc.as_slice()))
        .map(|ch| {
            let now_ms = if *ch.actor_id() == actor("ana-phone") {
                T0
            } else {
                T0 + 60_000
            };
            json!({
                "actor": ch.actor_id().to_hex_string(),
                "now_ms": now_ms,
                "time": ch.timestamp(),
                "deps": ch.deps().iter().map(|d| hex(&d.0)).collect::<Vec<_>>(),
                "change": hex(ch.raw_bytes()),
                "change_hash": hex(&ch.hash().0),
            })
        })
        .collect();
    let exchange: Vec<Value> = sync_exchange(c)
        .into_iter()
        .map(|(dir, m)| json!({ "direction": dir, "message": hex(&m) }))
        .collect();
    json!({
        "description": "Automerge documents (protocol/sync.md#documents). 'geneses' are normative: every replica of a document starts from exactly this change (actor = document id, seq 1, time 0, the root objects in this order), so its bytes and hash must be reproduced exactly. 'local_changes', 'heads_digests' and 'sync_exchange' are informative: they show a message inserted at list index 0 of msgs by an actor at time T0/1000 s, the catalog's heads digest over one and two heads, and the Automerge sync messages of two replicas converging (a node must accept them; it need not produce the same bytes).",
        "geneses": geneses,
        "conversation_id": hex(&doc),
        "inserted_message": hex(&msgs[0].1.encode()),
        "local_changes": changes,
        "heads_digests": digests,
        "sync_exchange": exchange,
    })
}

#[test]
fn documents_vectors() {
    let v = load("documents.json");
    for g in list(&v, "geneses") {
        let doc_id: [u8; 16] = fixed(g, "doc_id");
        assert_eq!(st(g, "actor"), st(g, "doc_id"), "actor = document id");
        let roots: Vec<(String, ObjType)> = list(g, "roots")
            .iter()
            .map(|r| (st(r, "key").to_owned(), obj_type_from(st(r, "type"))))
            .collect();
        let schema = match st(g, "document") {
            "conversation" => huddle::conversation::SCHEMA,
            "team" => {
                assert_eq!(doc_id, TEAM_DOC_ID, "the team document id is all zeroes");
                huddle::team::SCHEMA
            }
            d => panic!("unknown document kind {d}"),
        };
        let names: Vec<(String, ObjType)> = schema
            .roots
            .iter()
            .map(|(n, t)| (n.to_string(), *t))
            .collect();
        assert_eq!(roots, names, "the schema's root objects, in order");
        // The change given decodes to what the vector says...
        let change = automerge::Change::from_bytes(bytes(g, "change")).expect("a change");
        assert_eq!(hex(&change.hash().0), st(g, "change_hash"));
        assert_eq!(change.actor_id().to_hex_string(), st(g, "actor"));
        assert_eq!(change.seq(), num(g, "seq"));
        assert_eq!(change.start_op().get(), num(g, "start_op"));
        assert_eq!(change.timestamp(), 0);
        assert_eq!(u64::try_from(change.timestamp()).ok(), Some(num(g, "time")));
        assert!(change.deps().is_empty() && list(g, "deps").is_empty());
        assert_eq!(change.message(), None);
        assert!(get(g, "message").is_null());
        assert_eq!(change.len(), roots.len(), "one op per root object");
        // ...is exactly what Automerge makes from the schema...
        let refs: Vec<(&str, ObjType)> = roots.iter().map(|(n, t)| (n.as_str(), *t)).collect();
        let (doc, made) = genesis(&doc_id, &refs);
        assert_eq!(hex(made.raw_bytes()), st(g, "change"), "genesis bytes");
        for r in list(g, "roots") {
            let (_, obj) = doc.get(ROOT, st(r, "key")).expect("get").expect("root");
            assert_eq!(obj.to_string(), st(r, "object_id"));
        }
        // ...and what huddle's replica starts from, whatever its own actor.
        let replica = Replica::new(&doc_id, schema, &actor("any"));
        assert_eq!(
            replica
                .heads()
                .iter()
                .map(|h| hex(&h.0))
                .collect::<Vec<_>>(),
            vec![st(g, "change_hash").to_owned()]
        );
        assert_eq!(hex(&replica.heads_digest()), st(g, "heads_digest"));
        let digest = &crypto::sha256(&[&bytes(g, "change_hash")])[..16];
        assert_eq!(hex(digest), st(g, "heads_digest"));
    }
    for d in list(&v, "heads_digests") {
        let heads: Vec<Vec<u8>> = list(d, "heads")
            .iter()
            .map(|h| unhex(h.as_str().expect("hex")))
            .collect();
        let mut sorted = heads.clone();
        sorted.sort();
        assert_eq!(heads, sorted, "heads are listed in ascending byte order");
        let parts: Vec<&[u8]> = heads.iter().map(Vec::as_slice).collect();
        assert_eq!(hex(&crypto::sha256(&parts)[..16]), st(d, "digest"));
    }
    for ch in list(&v, "local_changes") {
        let change = automerge::Change::from_bytes(bytes(ch, "change")).expect("a change");
        assert_eq!(hex(&change.hash().0), st(ch, "change_hash"));
        assert_eq!(change.actor_id().to_hex_string(), st(ch, "actor"));
        assert_eq!(
            change.timestamp(),
            i64::try_from(num(ch, "time")).expect("i64")
        );
        assert_eq!(
            num(ch, "time"),
            num(ch, "now_ms") / 1000,
            "commit time is now in whole seconds"
        );
    }
    // The sync messages decode, and replaying the exchange onto a fresh
    // replica (the receiving side) yields the inserted message.
    let conv: [u8; 16] = fixed(&v, "conversation_id");
    let mut b = Replica::new(&conv, huddle::conversation::SCHEMA, &actor("replay"));
    let mut state = automerge::sync::State::new();
    let mut got = Vec::new();
    for m in list(&v, "sync_exchange") {
        let msg = bytes(m, "message");
        let decoded = automerge::sync::Message::decode(&msg).expect("a sync message");
        assert_eq!(
            decoded.encode(),
            msg,
            "sync messages re-encode byte for byte"
        );
        if st(m, "direction") == "a to b" {
            got.extend(b.receive_sync(&mut state, &msg).expect("applies"));
        }
    }
    assert_eq!(
        got,
        vec![Entry::Item {
            root: 0,
            value: bytes(&v, "inserted_message")
        }]
    );
}

// ---------------------------------------------------------------------------
// storage.json
// ---------------------------------------------------------------------------

fn gen_storage(c: &Cast) -> Value {
    let docs = [
        ("team document", TEAM_DOC_ID),
        ("group conversation", group_id().0),
    ];
    let doc_keys: Vec<Value> = docs
        .iter()
        .map(|(what, id)| {
            let chunks: Vec<Value> = [0u64, 1, 258, u64::MAX]
                .iter()
                .map(|s| json!({ "seq": s.to_string(), "key": hex(&keys::chunk(id, *s)) }))
                .collect();
            json!({
                "document": what,
                "doc_id": hex(id),
                "header": (*id != TEAM_DOC_ID).then(|| hex(&keys::header(id))),
                "snapshot": hex(&keys::snapshot(id)),
                "chunks": chunks,
            })
        })
        .collect();
    let revs: Vec<Value> = revocations(c)
        .iter()
        .map(|(_, r)| json!({ "revocation": hex(&r.encode()), "key": hex(&keys::revocation(&r.key())) }))
        .collect();
    json!({
        "description": "The key layout of the node's store (protocol/storage.md). Keys and values are bytes, shown in hex; keys sort bytewise.",
        "format": {
            "key": hex(keys::FORMAT),
            "value": hex(&store::FORMAT_VERSION.to_be_bytes()),
            "version": store::FORMAT_VERSION,
        },
        "documents": doc_keys,
        "index": {
            "key": hex(&keys::index(&group_id().0)),
            "entry": {
                "heads": [hex(&[0xab; 32]), hex(&[0xcd; 32])],
                "clock": "7034426408878080001",
                "messages": 1200,
                "unread": 3,
                "last_activity": "1733000000000",
            },
            "value": hex(&store::DocMeta {
                heads: vec![[0xab; 32], [0xcd; 32]],
                clock: 7_034_426_408_878_080_001,
                messages: 1200,
                unread: 3,
                last_activity: 1_733_000_000_000,
            }.encode()),
            "unknown_value": "",
        },
        "revocations": revs,
        "invalid_keys": [
            { "key": hex(&[keys::DOC_PREFIX, &group_id().0, b"/x"].concat()), "why": "unknown document suffix" },
            { "key": hex(&[keys::DOC_PREFIX, &group_id().0[..8]].concat()), "why": "document key too short" },
            { "key": hex(&[keys::DOC_PREFIX, &group_id().0, b"/c/", &[0, 0, 0, 1]].concat()), "why": "chunk number not 8 bytes" },
        ],
    })
}

#[test]
fn storage_vectors() {
    let v = load("storage.json");
    let f = get(&v, "format");
    assert_eq!(bytes(f, "key"), keys::FORMAT);
    assert_eq!(bytes(f, "key"), b"meta/format");
    assert_eq!(bytes(f, "value"), store::FORMAT_VERSION.to_be_bytes());
    assert_eq!(num(f, "version"), u64::from(store::FORMAT_VERSION));

    // A fresh store gets the format written; a newer format is refused.
    let mut s = MemoryStore::new();
    store::check_format(&mut s).expect("fresh store");
    assert_eq!(
        s.get(&bytes(f, "key")).expect("get"),
        Some(bytes(f, "value"))
    );
    let mut newer = MemoryStore::new();
    newer
        .apply(&[StoreOp::Put {
            key: bytes(f, "key"),
            value: (store::FORMAT_VERSION + 1).to_be_bytes().to_vec(),
        }])
        .expect("apply");
    assert!(matches!(
        store::check_format(&mut newer),
        Err(StoreError::NewerFormat { .. })
    ));

    // The index entry: its key, its value, and the empty value an
    // upgrade from format 1 writes.
    let ix = get(&v, "index");
    assert_eq!(
        bytes(ix, "key"),
        [b"idx/".as_slice(), &group_id().0].concat()
    );
    assert_eq!(keys::index(&group_id().0), bytes(ix, "key"));
    let e = get(ix, "entry");
    let meta = store::DocMeta {
        heads: hashes32(e, "heads"),
        clock: st(e, "clock").parse().expect("decimal"),
        messages: num(e, "messages") as u32,
        unread: num(e, "unread") as u32,
        last_activity: st(e, "last_activity").parse().expect("decimal"),
    };
    assert_eq!(meta.encode(), bytes(ix, "value"));
    assert_eq!(
        store::DocMeta::decode(&bytes(ix, "value")).expect("decodes"),
        Some(meta)
    );
    assert_eq!(
        store::DocMeta::decode(&bytes(ix, "unknown_value")).expect("decodes"),
        None
    );
    assert!(
        store::DocMeta::decode(&[0; 24]).is_err(),
        "a short entry is damage"
    );
    assert!(
        store::DocMeta::decode(&bytes(ix, "value")[..58]).is_err(),
        "so is one cut inside its heads"
    );

    // A format-1 store is upgraded on open: every conversation gets an
    // unknown index entry, in the batch that writes the new version.
    let mut old = MemoryStore::new();
    old.apply(&[
        StoreOp::Put {
            key: bytes(f, "key"),
            value: 1u32.to_be_bytes().to_vec(),
        },
        StoreOp::Put {
            key: keys::header(&group_id().0),
            value: b"h".to_vec(),
        },
        StoreOp::Put {
            key: keys::chunk(&group_id().0, 0),
            value: b"c".to_vec(),
        },
        StoreOp::Put {
            key: keys::snapshot(&TEAM_DOC_ID),
            value: b"s".to_vec(),
        },
    ])
    .expect("apply");
    old.flush().expect("flush");
    store::check_format(&mut old).expect("upgrades");
    assert_eq!(
        old.get(keys::FORMAT).expect("get"),
        Some(store::FORMAT_VERSION.to_be_bytes().to_vec())
    );
    assert_eq!(
        old.scan_prefix(keys::INDEX_PREFIX).expect("scan"),
        vec![(keys::index(&group_id().0), Vec::new())],
        "one unknown entry, for the one conversation"
    );

    let mut s = MemoryStore::new();
    let mut expected: BTreeMap<[u8; 16], (bool, bool, Vec<u64>)> = BTreeMap::new();
    for d in list(&v, "documents") {
        let id: [u8; 16] = fixed(d, "doc_id");
        let has_header = !get(d, "header").is_null();
        assert_eq!(
            has_header,
            id != TEAM_DOC_ID,
            "only conversations have headers"
        );
        if has_header {
            assert_eq!(
                bytes(d, "header"),
                [b"doc/".as_slice(), &id, b"/h"].concat()
            );
            assert_eq!(keys::header(&id), bytes(d, "header"));
        }
        assert_eq!(
            bytes(d, "snapshot"),
            [b"doc/".as_slice(), &id, b"/s"].concat()
        );
        assert_eq!(keys::snapshot(&id), bytes(d, "snapshot"));
        let mut ops = vec![StoreOp::Put {
            key: bytes(d, "snapshot"),
            value: b"s".to_vec(),
        }];
        if has_header {
            ops.push(StoreOp::Put {
                key: bytes(d, "header"),
                value: b"h".to_vec(),
            });
        }
        let mut seqs = Vec::new();
        for ch in list(d, "chunks") {
            let seq: u64 = st(ch, "seq").parse().expect("decimal");
            let key = bytes(ch, "key");
            assert_eq!(
                key,
                [b"doc/".as_slice(), &id, b"/c/", &seq.to_be_bytes()].concat()
            );
            assert_eq!(keys::chunk(&id, seq), key);
            ops.push(StoreOp::Put {
                key,
                value: seq.to_be_bytes().to_vec(),
            });
            seqs.push(seq);
        }
        s.apply(&ops).expect("apply");
        expected.insert(id, (has_header, true, seqs));
    }
    for r in list(&v, "revocations") {
        let rev = Revocation::decode(&bytes(r, "revocation")).expect("revocation");
        assert_eq!(keys::revocation(&rev.key()), bytes(r, "key"));
        s.apply(&[StoreOp::Put {
            key: bytes(r, "key"),
            value: bytes(r, "revocation"),
        }])
        .expect("apply");
    }
    let stored = store::load(&s).expect("load");
    assert_eq!(stored.revocations.len(), list(&v, "revocations").len());
    for (id, (h, sn, seqs)) in expected {
        let d = &stored.docs[&id];
        assert_eq!(d.header.is_some(), h);
        assert_eq!(d.snapshot.is_some(), sn);
        let got: Vec<u64> = d.chunks.iter().map(|(s, _)| *s).collect();
        assert_eq!(got, seqs, "chunks in ascending order");
    }
    for k in list(&v, "invalid_keys") {
        let mut s = MemoryStore::new();
        s.apply(&[StoreOp::Put {
            key: bytes(k, "key"),
            value: vec![],
        }])
        .expect("apply");
        assert!(
            matches!(store::load(&s), Err(StoreError::Corrupt(_))),
            "{}",
            st(k, "why")
        );
    }
}

// ---------------------------------------------------------------------------
// session.json: the membership gate and a whole session, node against node
// ---------------------------------------------------------------------------

fn node_of(c: &Cast, device: &str, stored: &Stored, with_cert: bool, seed: u64) -> Node {
    let cert = with_cert.then(|| cert(c, device));
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut n = Node::new(
        c.key(device).clone(),
        cert,
        stored.clone(),
        NodeConfig::default(),
        &mut rng,
    )
    .expect("node");
    n.handle(T0, Input::Start);
    n
}

fn sends(out: &[Output]) -> Vec<Vec<u8>> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send { frame, .. } => Some(frame.clone()),
            _ => None,
        })
        .collect()
}

/// Ana's node: `peer` connects at `now` and sends `frames`; returns every
/// frame Ana's node sends, and whether it disconnected the peer. With
/// `hello_timer`, the hello timer fires after the frames.
fn gate_run(
    c: &Cast,
    stored: &Stored,
    now: u64,
    peer: DeviceId,
    frames: &[Vec<u8>],
    hello_timer: bool,
) -> (Vec<Vec<u8>>, bool) {
    gate_run_as(c, "ana-phone", true, stored, now, peer, frames, hello_timer)
}

#[allow(clippy::too_many_arguments)]
fn gate_run_as(
    c: &Cast,
    device: &str,
    with_cert: bool,
    stored: &Stored,
    now: u64,
    peer: DeviceId,
    frames: &[Vec<u8>],
    hello_timer: bool,
) -> (Vec<Vec<u8>>, bool) {
    let mut node = node_of(c, device, stored, with_cert, 1);
    let mut out = node.handle(now, Input::PeerConnected { peer });
    for f in frames {
        out.extend(node.handle(
            now,
            Input::Frame {
                peer,
                bytes: f.clone(),
            },
        ));
    }
    if hello_timer {
        out.extend(node.handle(now + 10_000, Input::Timer(Timer::Hello(peer))));
    }
    let disconnected = out
        .iter()
        .any(|o| matches!(o, Output::Disconnect { peer: p, .. } if *p == peer));
    (sends(&out), disconnected)
}

fn hello(cert: &Certificate, version: u8) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(1).u8(version).bytes(&cert.encode());
    w.finish()
}

struct Gate {
    name: &'static str,
    node_has_certificate: bool,
    revocations: Vec<Revocation>,
    now: u64,
    peer: &'static str,
    frames: Vec<Vec<u8>>,
    hello_timer: bool,
}

fn gates(c: &Cast) -> Vec<Gate> {
    let ben = cert(c, "ben-tablet");
    let mut tampered = ben.clone();
    tampered.roles.push("charge-nurse".into());
    let catalog = Frame::Catalog {
        entries: vec![],
        last: true,
    }
    .encode();
    let g = |name, frames: Vec<Vec<u8>>| Gate {
        name,
        node_has_certificate: true,
        revocations: vec![],
        now: T0,
        peer: "ben-tablet",
        frames,
        hello_timer: false,
    };
    vec![
        g(
            "valid hello: the node answers with its catalog",
            vec![hello(&ben, 1)],
        ),
        g("catalog before hello", vec![catalog.clone()]),
        g("hello twice", vec![hello(&ben, 1), hello(&ben, 1)]),
        g("hello version 2", vec![hello(&ben, 2)]),
        g(
            "hello with another device's certificate",
            vec![hello(&cert(c, "ana-phone"), 1)],
        ),
        g(
            "hello with another team's certificate",
            vec![hello(&cert(c, "ben-tablet@riverside"), 1)],
        ),
        g(
            "hello with a certificate altered after signing",
            vec![hello(&tampered, 1)],
        ),
        Gate {
            now: ben.expires,
            ..g("hello with an expired certificate", vec![hello(&ben, 1)])
        },
        Gate {
            now: ben.issued - huddle::membership::ISSUE_SKEW_MS - 1,
            ..g(
                "hello with a certificate not valid yet",
                vec![hello(&ben, 1)],
            )
        },
        Gate {
            revocations: vec![revocations(c)[0].1.clone()],
            ..g("hello from a revoked device", vec![hello(&ben, 1)])
        },
        Gate {
            hello_timer: true,
            ..g("no hello before the hello timeout", vec![])
        },
        g(
            "a refusal before hello: the node just disconnects",
            vec![Frame::Refuse {
                reason: Reason::Expired,
            }
            .encode()],
        ),
        Gate {
            node_has_certificate: false,
            ..g("the node has no certificate itself", vec![])
        },
    ]
}

fn gen_session(c: &Cast) -> Value {
    let gate: Vec<Value> = gates(c)
        .iter()
        .map(|g| {
            let stored = Stored {
                revocations: g.revocations.iter().map(Revocation::encode).collect(),
                ..Stored::default()
            };
            let (sent, disconnected) = gate_run_as(
                c,
                "ana-phone",
                g.node_has_certificate,
                &stored,
                g.now,
                c.dev(g.peer),
                &g.frames,
                g.hello_timer,
            );
            json!({
                "name": g.name,
                "node": "ana-phone",
                "node_has_certificate": g.node_has_certificate,
                "stored_revocations": g.revocations.iter().map(|r| hex(&r.encode())).collect::<Vec<_>>(),
                "now": g.now,
                "peer": g.peer,
                "received": g.frames.iter().map(|f| hex(f)).collect::<Vec<_>>(),
                "hello_timer_fires": g.hello_timer,
                "sent": sent.iter().map(|f| json!({ "hex": hex(f), "frame": frame_json(&Frame::decode(f).expect("decodes")) })).collect::<Vec<_>>(),
                "disconnected": disconnected,
            })
        })
        .collect();
    let (transcript, conv) = run_session(c);
    json!({
        "description": "The session protocol (protocol/sync.md). 'gate': what Ana's node sends to a peer that connects and sends 'received' (Ana's node was seeded with ChaCha8 seed 1 and has published its certificate in its team document, so its catalog digests are informative), and whether it disconnects. 'transcript' (informative): every frame of a session between Ana's and Ben's nodes (seeds 1 and 2), Ana having created the group conversation and sent an urgent message before they met; after the catalog exchange, Ben learns the header, syncs, writes a delivered receipt when its receipts timer fires, and acknowledges.",
        "keys": keys_json(c),
        "certificates": {
            "ana-phone": hex(&cert(c, "ana-phone").encode()),
            "ben-tablet": hex(&cert(c, "ben-tablet").encode()),
        },
        "gate": gate,
        "transcript": {
            "conversation": conv.to_hex(),
            "frames": transcript,
        },
    })
}

/// Ana and Ben meet; returns every frame in delivery order.
fn run_session(c: &Cast) -> (Vec<Value>, ConversationId) {
    let names = ["ana-phone", "ben-tablet"];
    let ids = [c.dev(names[0]), c.dev(names[1])];
    let mut nodes = [
        node_of(c, names[0], &Stored::default(), true, 1),
        node_of(c, names[1], &Stored::default(), true, 2),
    ];
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut now = T0 + 1_000;
    let (reply, _) = nodes[0].command(
        now,
        &mut rng,
        Command::CreateConversation {
            kind: ConversationKind::Group {
                title: "Ward 7 handover".into(),
                members: [member("ana"), member("ben")].into_iter().collect(),
            },
        },
    );
    let Ok(Reply::Conversation(conv)) = reply else {
        panic!("{reply:?}")
    };
    let (reply, _) = nodes[0].command(
        now,
        &mut rng,
        Command::Send {
            conversation: conv,
            body: "Bed 4 BP 80/40, please review".into(),
            priority: Priority::Urgent,
            reply_to: None,
        },
    );
    let Ok(Reply::Message(msg)) = reply else {
        panic!("{reply:?}")
    };
    now += 1_000;

    let mut queue: VecDeque<(usize, Vec<u8>)> = VecDeque::new();
    let mut timers: BTreeSet<(u64, usize)> = BTreeSet::new();
    let mut log = Vec::new();
    let enqueue = |from: usize,
                   out: Vec<Output>,
                   queue: &mut VecDeque<(usize, Vec<u8>)>,
                   timers: &mut BTreeSet<(u64, usize)>| {
        for o in out {
            match o {
                Output::Send { frame, .. } => queue.push_back((from, frame)),
                Output::SetTimer {
                    timer: Timer::Receipts,
                    at,
                } => {
                    timers.insert((at, from));
                }
                Output::Disconnect { peer, reason } => {
                    panic!("{} disconnected {peer:?}: {reason}", names[from])
                }
                _ => {}
            }
        }
    };
    for i in 0..2 {
        let out = nodes[i].handle(now, Input::PeerConnected { peer: ids[1 - i] });
        enqueue(i, out, &mut queue, &mut timers);
    }
    let mut acked = false;
    loop {
        while let Some((from, bytes)) = queue.pop_front() {
            let to = 1 - from;
            log.push(json!({
                "from": names[from],
                "to": names[to],
                "hex": hex(&bytes),
                "frame": frame_json(&Frame::decode(&bytes).expect("decodes")),
            }));
            let out = nodes[to].handle(
                now,
                Input::Frame {
                    peer: ids[from],
                    bytes,
                },
            );
            enqueue(to, out, &mut queue, &mut timers);
        }
        if let Some((at, who)) = timers.pop_first() {
            now = now.max(at);
            let out = nodes[who].handle(now, Input::Timer(Timer::Receipts));
            enqueue(who, out, &mut queue, &mut timers);
        } else if !acked {
            acked = true;
            now += 5_000;
            let (reply, out) = nodes[1].command(
                now,
                &mut rng,
                Command::Ack {
                    conversation: conv,
                    message: msg,
                },
            );
            reply.expect("ack");
            enqueue(1, out, &mut queue, &mut timers);
        } else {
            break;
        }
    }
    let digest = |n: &Node| {
        n.conversation(&conv)
            .expect("conversation")
            .replica()
            .heads_digest()
    };
    assert_eq!(digest(&nodes[0]), digest(&nodes[1]), "converged");
    assert_eq!(nodes[0].team_heads(), nodes[1].team_heads(), "converged");
    (log, conv)
}

#[test]
fn session_vectors() {
    let v = load("session.json");
    let (_, _, devices) = keys_from_json(get(&v, "keys"));
    let c = Cast::new();
    for (name, cert_hex) in get(&v, "certificates").as_object().expect("certificates") {
        let cert = Certificate::decode(&unhex(cert_hex.as_str().expect("hex"))).expect("decodes");
        assert_eq!(cert.device, devices[name].device_id());
    }
    for g in list(&v, "gate") {
        let stored = Stored {
            revocations: list(g, "stored_revocations")
                .iter()
                .map(|r| unhex(r.as_str().expect("hex")))
                .collect(),
            ..Stored::default()
        };
        let received: Vec<Vec<u8>> = list(g, "received")
            .iter()
            .map(|f| unhex(f.as_str().expect("hex")))
            .collect();
        let (sent, disconnected) = gate_run_as(
            &c,
            st(g, "node"),
            flag(g, "node_has_certificate"),
            &stored,
            num(g, "now"),
            devices[st(g, "peer")].device_id(),
            &received,
            flag(g, "hello_timer_fires"),
        );
        let expected: Vec<&Value> = list(g, "sent").iter().collect();
        assert_eq!(sent.len(), expected.len(), "{}", st(g, "name"));
        for (s, e) in sent.iter().zip(expected) {
            let frame = Frame::decode(&bytes(e, "hex")).expect("decodes");
            assert_eq!(frame_json(&frame), *get(e, "frame"));
            // The catalog's digests depend on the node's random actor; the
            // other frames must match byte for byte.
            if st(get(e, "frame"), "type") != "catalog" {
                assert_eq!(hex(s), st(e, "hex"), "{}", st(g, "name"));
            } else {
                let Ok(Frame::Catalog { entries, last }) = Frame::decode(s) else {
                    panic!("a catalog")
                };
                assert!(last);
                assert_eq!(entries.len(), list(get(e, "frame"), "entries").len());
            }
        }
        assert_eq!(disconnected, flag(g, "disconnected"), "{}", st(g, "name"));
    }
    for f in list(get(&v, "transcript"), "frames") {
        let b = bytes(f, "hex");
        let frame = Frame::decode(&b).expect("decodes");
        assert_eq!(frame_json(&frame), *get(f, "frame"));
        assert_eq!(frame.encode(), b);
    }
}

// ---------------------------------------------------------------------------
// The generator
// ---------------------------------------------------------------------------

fn generate() -> Vec<(&'static str, Value)> {
    let c = Cast::new();
    let files = vec![
        (FILES[0], gen_primitives(&c)),
        (FILES[1], gen_certificates(&c)),
        (FILES[2], gen_revocations(&c)),
        (FILES[3], gen_messages(&c)),
        (FILES[4], gen_headers(&c)),
        (FILES[5], gen_frames(&c)),
        (FILES[6], gen_documents(&c)),
        (FILES[7], gen_storage(&c)),
        (FILES[8], gen_session(&c)),
    ];
    assert_eq!(files.iter().map(|(n, _)| *n).collect::<Vec<_>>(), FILES);
    files
}

/// With `HUDDLE_WRITE_VECTORS=1`, writes the vector files; otherwise checks
/// that the generator reproduces them exactly.
#[test]
fn vectors_are_reproducible() {
    let write = std::env::var("HUDDLE_WRITE_VECTORS").is_ok_and(|v| v == "1");
    let dir = vectors_dir();
    for (name, value) in generate() {
        let path = dir.join(name);
        if write {
            std::fs::create_dir_all(&dir).expect("create protocol/vectors");
            let text = serde_json::to_string_pretty(&value).expect("JSON") + "\n";
            std::fs::write(&path, text).expect("write vectors");
        }
        assert!(
            load(name) == value,
            "{name} differs from what the generator makes: if the format changed on purpose, \
             update protocol/ and regenerate with HUDDLE_WRITE_VECTORS=1"
        );
    }
}
