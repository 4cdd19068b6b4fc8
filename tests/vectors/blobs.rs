//! blobs.json: a blob's tree cut at chunk boundaries (the outline and the
//! hash it merges to), the blob protocol's requests and responses, and the
//! attachments a message carries (blobs.md).

use super::*;

/// The test input BLAKE3's own vectors use: byte `i` is `i mod 251`.
pub(crate) fn blob_bytes(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

/// A stand-in thumbnail: the JPEG magic, then filler (a thumbnail is
/// checked by its magic and its length, never decoded by huddle).
fn thumbnail() -> Vec<u8> {
    let mut t = vec![0xff, 0xd8, 0xff, 0xe0];
    t.extend((0..60u8).map(|i| i.wrapping_mul(37)));
    t
}

pub(crate) fn photo_attachment() -> Attachment {
    let b = blob_bytes(3 * CHUNK_LEN as usize + 5);
    Attachment {
        hash: BlobHash::of(&b),
        size: b.len() as u64,
        media_type: "image/jpeg".into(),
        name: "wound-day3.jpg".into(),
        thumbnail: thumbnail(),
    }
}

pub(crate) fn pdf_attachment() -> Attachment {
    let b = blob_bytes(1000);
    Attachment {
        hash: BlobHash::of(&b),
        size: 1000,
        media_type: "application/pdf".into(),
        name: "lab-result.pdf".into(),
        thumbnail: vec![],
    }
}

const TREE_SIZES: [u64; 6] = [
    1000,
    CHUNK_LEN,
    CHUNK_LEN + 1,
    3 * CHUNK_LEN + 5,
    4 * CHUNK_LEN,
    5 * CHUNK_LEN + 77,
];

fn requests() -> Vec<(&'static str, BlobRequest)> {
    let a = photo_attachment();
    let base = BlobRequest {
        conversation: ConversationId([0x11; 16]),
        message: MessageId([0x22; 16]),
        hash: a.hash,
        want: Want::Outline,
    };
    vec![
        ("the outline", base.clone()),
        (
            "chunk 2",
            BlobRequest {
                want: Want::Chunk(2),
                ..base.clone()
            },
        ),
        (
            "chunk 300 (a two-byte varint)",
            BlobRequest {
                want: Want::Chunk(300),
                ..base
            },
        ),
    ]
}

fn responses() -> Vec<(&'static str, BlobResponse)> {
    let b = blob_bytes(3 * CHUNK_LEN as usize + 5);
    vec![
        ("the photo's outline", BlobResponse::Outline(outline(&b))),
        (
            "its last chunk (5 bytes)",
            BlobResponse::Chunk(b[3 * CHUNK_LEN as usize..].to_vec()),
        ),
        ("unavailable", BlobResponse::Unavailable),
        ("not held", BlobResponse::NotHeld),
        ("busy", BlobResponse::Busy),
    ]
}

fn want_json(w: Want) -> Value {
    match w {
        Want::Outline => json!({ "outline": null }),
        Want::Chunk(i) => json!({ "chunk": i }),
    }
}

fn response_json(r: &BlobResponse) -> Value {
    match r {
        BlobResponse::Outline(cvs) => json!({
            "status": "outline",
            "outline": cvs.iter().map(|c| hex(c)).collect::<Vec<_>>(),
        }),
        BlobResponse::Chunk(b) => json!({ "status": "chunk", "chunk": hex(b) }),
        BlobResponse::Unavailable => json!({ "status": "unavailable" }),
        BlobResponse::NotHeld => json!({ "status": "not_held" }),
        BlobResponse::Busy => json!({ "status": "busy" }),
    }
}

fn response_from_json(v: &Value) -> BlobResponse {
    match st(v, "status") {
        "outline" => BlobResponse::Outline(
            list(v, "outline")
                .iter()
                .map(|c| {
                    unhex(c.as_str().expect("hex"))
                        .try_into()
                        .expect("32 bytes")
                })
                .collect(),
        ),
        "chunk" => BlobResponse::Chunk(bytes(v, "chunk")),
        "unavailable" => BlobResponse::Unavailable,
        "not_held" => BlobResponse::NotHeld,
        "busy" => BlobResponse::Busy,
        s => panic!("unknown status {s}"),
    }
}

pub(crate) fn gen_blobs(_c: &Cast) -> Value {
    let trees: Vec<Value> = TREE_SIZES
        .iter()
        .map(|&n| {
            let b = blob_bytes(n as usize);
            json!({
                "size": n,
                "chunks": chunk_count(n),
                "hash": BlobHash::of(&b).to_hex(),
                "outline": outline(&b).iter().map(|c| hex(c)).collect::<Vec<_>>(),
            })
        })
        .collect();
    let reqs: Vec<Value> = requests()
        .into_iter()
        .map(|(name, r)| {
            json!({
                "name": name,
                "fields": {
                    "conversation": r.conversation.to_hex(),
                    "message": r.message.to_hex(),
                    "hash": r.hash.to_hex(),
                    "want": want_json(r.want),
                },
                "hex": hex(&r.encode()),
            })
        })
        .collect();
    let resps: Vec<Value> = responses()
        .into_iter()
        .map(|(name, r)| json!({ "name": name, "fields": response_json(&r), "hex": hex(&r.encode()) }))
        .collect();
    let ok = requests()[1].1.encode();
    let mut v2 = ok.clone();
    v2[0] = 2;
    let mut want = ok.clone();
    want[65] = 3;
    let mut far = ok[..65].to_vec();
    far.extend_from_slice(&[2, 0x80, 0x10]); // chunk 2048: past any blob
    let mut over = vec![1u8];
    over.extend_from_slice(&[0x81, 0x10]); // an outline of 2049 values
    json!({
        "chunk_len": CHUNK_LEN,
        "input": "byte i of a blob of n bytes is i mod 251 (BLAKE3's own test input)",
        "trees": trees,
        "attachments": [attachment_json(&photo_attachment()), attachment_json(&pdf_attachment())],
        "requests": reqs,
        "requests_invalid": [
            { "why": "version 2", "hex": hex(&v2), "error": "Unknown" },
            { "why": "want 3", "hex": hex(&want), "error": "Unknown" },
            { "why": "chunk index 2048", "hex": hex(&far), "error": "Invalid" },
            { "why": "trailing byte", "hex": hex(&[ok.as_slice(), &[0]].concat()), "error": "Trailing" },
        ],
        "responses": resps,
        "responses_invalid": [
            { "why": "an outline of 2049 values", "hex": hex(&over), "error": "TooLong" },
            { "why": "status 6", "hex": "06", "error": "Unknown" },
        ],
    })
}

#[test]
fn blobs_vectors() {
    let v = load("blobs.json");
    assert_eq!(num(&v, "chunk_len"), CHUNK_LEN);
    for t in list(&v, "trees") {
        let n = num(t, "size");
        let b = blob_bytes(n as usize);
        let hash: [u8; 32] = fixed(t, "hash");
        assert_eq!(
            *blake3::hash(&b).as_bytes(),
            hash,
            "plain BLAKE3 of the input"
        );
        let o: Vec<[u8; 32]> = list(t, "outline")
            .iter()
            .map(|c| unhex(c.as_str().expect("hex")).try_into().expect("32"))
            .collect();
        assert_eq!(o, outline(&b));
        assert_eq!(num(t, "chunks"), chunk_count(n));
        if chunk_count(n) > 1 {
            assert_eq!(root(&o, n), Some(hash), "the outline merges to the hash");
        } else {
            assert!(o.is_empty());
        }
        for (i, c) in b.chunks(CHUNK_LEN as usize).enumerate() {
            assert!(verify_chunk(&hash, n, &o, i as u64, c));
        }
    }
    for a in list(&v, "attachments") {
        attachment_from_json(a).check().expect("a valid attachment");
    }
    for x in list(&v, "requests") {
        let f = get(x, "fields");
        let w = get(f, "want");
        let fields = BlobRequest {
            conversation: ConversationId(fixed(f, "conversation")),
            message: MessageId(fixed(f, "message")),
            hash: BlobHash(fixed(f, "hash")),
            want: match w.get("chunk") {
                Some(i) => Want::Chunk(i.as_u64().expect("index") as u32),
                None => Want::Outline,
            },
        };
        check_round_trip(x, fields, BlobRequest::encode, BlobRequest::decode);
    }
    for x in list(&v, "requests_invalid") {
        expect_decode_error(x, BlobRequest::decode(&bytes(x, "hex")));
    }
    for x in list(&v, "responses") {
        let fields = response_from_json(get(x, "fields"));
        check_round_trip(x, fields, BlobResponse::encode, BlobResponse::decode);
    }
    for x in list(&v, "responses_invalid") {
        expect_decode_error(x, BlobResponse::decode(&bytes(x, "hex")));
    }
}
