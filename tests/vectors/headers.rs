//! headers.json vectors.

use super::*;

pub(crate) fn headers(c: &Cast) -> Vec<(&'static str, ConversationHeader)> {
    let (ana, ben) = (member("ana"), member("ben"));
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
            ConversationHeader::create(c.key("ana-phone"), group_kind(), GROUP_CREATED),
        ),
        (
            "role",
            ConversationHeader::create(
                c.key("ben-tablet"),
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
pub(crate) fn signed_raw_header(key: &DeviceKey, payload: &[u8]) -> Vec<u8> {
    [payload, &key.sign(domain::HEADER, payload)].concat()
}

pub(crate) fn gen_headers(c: &Cast) -> Value {
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
        bad(
            ConversationHeader::sign(
                key,
                ConversationId(id16("conversation:ward-7-handover")),
                group_kind(),
                GROUP_CREATED,
            )
            .encode(),
            "a group whose id is not derived from its header (a random id, as before protocol version 3)",
            "Invalid",
        ),
        bad(
            ConversationHeader::sign(key, direct_id(ana, ben), group_kind(), GROUP_CREATED)
                .encode(),
            "a group claiming Ana and Ben's direct conversation id",
            "Invalid",
        ),
        bad(
            ConversationHeader::sign(
                key,
                group_id(),
                group_kind(),
                GROUP_CREATED + 1,
            )
            .encode(),
            "a group whose id was derived for another creation time",
            "Invalid",
        ),
    ];
    json!({
        "description": "Conversation headers (protocol/wire.md#header), signed by the creating device. Decoding a header includes checking its signature; group members are encoded in ascending byte order without repetition. A direct conversation's id is derived from its two members (primitives.json); a group's or role channel's id is SHA-256(\"huddle/conversation/v1\" ‖ the header's bytes from its kind byte through `created`)[0..16], so no header can claim an id it was not made for.",
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
        match &h.kind {
            ConversationKind::Direct { members } => {
                assert_eq!(h.id, direct_id(members[0], members[1]));
            }
            _ => {
                // Version (1 byte) and id (16) before the kind; the
                // signature (64) after `created`.
                let d = crypto::sha256(&[b"huddle/conversation/v1", &b[17..b.len() - 64]]);
                assert_eq!(h.id.0, d[..16], "the id is derived from the header");
            }
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
