//! primitives.json vectors.

use super::*;

pub(crate) fn direct_id(a: MemberId, b: MemberId) -> ConversationId {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let h = crypto::sha256(&[b"huddle/direct/v1", &lo.0, &hi.0]);
    ConversationId(h[..16].try_into().expect("16 bytes"))
}

pub(crate) fn gen_primitives(c: &Cast) -> Value {
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
pub(crate) fn node_direct_id(a: MemberId, b: MemberId) -> ConversationId {
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
