//! messages.json vectors: messages and receipts.

use super::*;

/// Ana's group: its header's kind, creation time, and (derived from those
/// and Ana's phone, wire.md) its id.
pub(crate) fn group_kind() -> ConversationKind {
    ConversationKind::Group {
        title: "Ward 7 handover".into(),
        members: [member("ana"), member("ben"), member("chidi")]
            .into_iter()
            .collect(),
    }
}

pub(crate) const GROUP_CREATED: u64 = T0 - 3_600_000;

pub(crate) fn group_id() -> ConversationId {
    let ana_phone = DeviceKey::from_secret(label("device:ana-phone")).device_id();
    conversation_id(&group_kind(), ana_phone, GROUP_CREATED)
}

pub(crate) const STAT_BODY: &str =
    "Bed 12 — SpO₂ 84 % on 4 L O₂, RR 32, new confusion. Rapid response team called; \
                         need a physician at the bedside now. Family informed. Please acknowledge.";

pub(crate) fn messages(c: &Cast) -> Vec<(&'static str, Message)> {
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
            fields: Default::default(),
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
            fields: Default::default(),
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
            fields: Default::default(),
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
            fields: Default::default(),
        },
    );
    let m5 = Message::sign(
        c.key("ana-phone"),
        &conv,
        Draft {
            author_member: member("ana"),
            hlc: Hlc::new(T0 + 180_000, 0),
            priority: Priority::Stat,
            reply_to: None,
            body: "Bed 12 needs the physician now: everyone acknowledge.".into(),
            fields: Fields {
                ack_by: Some(AckBy::All),
                ..Fields::default()
            },
        },
    );
    let mut waiting = vec![member("ben"), member("chidi")];
    waiting.sort();
    let m6 = Message::sign(
        c.key("chidi-laptop"),
        &conv,
        Draft {
            author_member: member("chidi"),
            hlc: Hlc::new(T0 + 300_000, 0),
            priority: Priority::Stat,
            reply_to: None,
            body: "Escalation (level 1): a STAT message from Ana has not been acknowledged for 3 min; waiting on Ben.".into(),
            fields: Fields {
                escalation: Some(Escalation {
                    conversation: conv,
                    message: m3.id(),
                    level: 1,
                    priority: Priority::Stat,
                    author: member("ana"),
                    waiting,
                    unacked_ms: 180_000,
                }),
                ..Fields::default()
            },
        },
    );
    let m7 = Message::sign(
        c.key("ben-tablet"),
        &conv,
        Draft {
            author_member: member("ben"),
            hlc: Hlc::new(T0 + 360_000, 0),
            priority: Priority::Routine,
            reply_to: None,
            body: "Turn the patient in bed 4.".into(),
            fields: Fields {
                reminder: Some(Reminder {
                    due_ms: T0 + 7_200_000,
                    targets: vec![member("ana")],
                    every_ms: 7_200_000,
                    times: 12,
                }),
                ..Fields::default()
            },
        },
    );
    let m8 = Message::sign(
        c.key("ana-phone"),
        &conv,
        Draft {
            author_member: member("ana"),
            hlc: Hlc::new(T0 + 420_000, 0),
            priority: Priority::Urgent,
            reply_to: None,
            body: "Wound on day 3, and the lab result.".into(),
            fields: Fields {
                attachments: vec![photo_attachment(), pdf_attachment()],
                ..Fields::default()
            },
        },
    );
    vec![
        ("routine", m1),
        ("urgent reply", m2),
        ("stat, two-byte body length", m3),
        ("empty body (wire-valid; never sent by huddle)", m4),
        ("version 2: stat, acknowledged by all", m5),
        ("version 2: an escalation entry", m6),
        ("version 2: a reminder every 2 h, 12 times", m7),
        ("version 2: a photo with its thumbnail and a PDF", m8),
    ]
}

pub(crate) fn receipts(c: &Cast) -> Vec<(&'static str, Receipt)> {
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
        (
            "reminder occurrence 3 done",
            Receipt::sign(
                c.key("ana-phone"),
                &conv,
                ReceiptKind::Done { occurrence: 3 },
                member("ana"),
                m[6].1.order_key(),
                Hlc::new(T0 + 28_900_000, 0),
            ),
        ),
        (
            "reminder occurrence 4 snoozed 15 min",
            Receipt::sign(
                c.key("ana-phone"),
                &conv,
                ReceiptKind::Snooze {
                    occurrence: 4,
                    until: T0 + 36_900_000,
                },
                member("ana"),
                m[6].1.order_key(),
                Hlc::new(T0 + 36_000_000, 0),
            ),
        ),
    ]
}

pub(crate) fn gen_messages(c: &Cast) -> Value {
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
        bad(splice(&m, 0, 1, &[3]), "version 3", "Unknown"),
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
    let v2 = msgs[4].1.encode(); // version 2, one field: ack-by all
    let fields_at = v2.len() - 64 - 4; // count, tag, length, ack-by byte
    let invalid = [
        invalid,
        vec![
            bad(
                splice(&v2, fields_at, 4, &[0]),
                "version 2 with no fields (written as version 1)",
                "Invalid",
            ),
            bad(
                splice(&v2, fields_at + 1, 1, &[9]),
                "a field tag this version does not know",
                "Unknown",
            ),
            bad(
                splice(&v2, fields_at, 4, &[2, 1, 1, 2, 1, 1, 2]),
                "the same field twice",
                "Invalid",
            ),
            bad(splice(&v2, fields_at + 3, 1, &[0]), "ack-by 0", "Unknown"),
        ],
    ]
    .concat();
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
        bad(splice(&rb, 1, 1, &[6]), "kind 6", "Unknown"),
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
            ReceiptKind::Done { occurrence } => {
                format!("x{}{occurrence:04x}{device}", r.upto.1.to_hex())
            }
            ReceiptKind::Snooze { occurrence, .. } => {
                format!("z{}{occurrence:04x}{device}", r.upto.1.to_hex())
            }
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
