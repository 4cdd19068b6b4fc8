//! frames.json vectors.

use super::*;

pub(crate) fn gen_frames(c: &Cast) -> Value {
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
                version: PROTOCOL_VERSION,
                pass: ana.pass(),
            },
        ),
        (
            "identify".into(),
            Frame::Identify {
                secret: ana.secret(),
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
    // The audit trail (sync.md §8): Chidi's laptop holds the team key and
    // asks Ana's phone, which holds two entries of its own.
    let chidi = c.dev("chidi-laptop");
    let proof = huddle::trail::AdminProof::sign(&c.authority, &chidi);
    let first = huddle::trail::Entry::sign(
        c.key("ana-phone"),
        None,
        1_767_225_600_000,
        huddle::trail::Action::Unlocked {
            via: huddle::trail::Via::Run,
        },
    );
    let second = huddle::trail::Entry::sign(
        c.key("ana-phone"),
        Some((0, first.hash())),
        1_767_225_660_000,
        huddle::trail::Action::Opened {
            conversation: ConversationId(conv_doc),
            via: huddle::trail::Via::Screen,
        },
    );
    frames.push((
        "trail_ask: an administrator holding one entry of Ana's trail".into(),
        Frame::TrailAsk {
            proof: proof.0,
            have: vec![TrailHave {
                device: c.dev("ana-phone").0,
                len: 1,
                head: first.hash(),
            }],
        },
    ));
    frames.push((
        "trail: Ana's two entries, answering".into(),
        Frame::Trail {
            len: 2,
            head: second.hash(),
            answer: true,
            more: false,
            entries: vec![first.encode(), second.encode()],
        },
    ));
    // Sealed relaying (sealed.md): the envelope of sealed.json, the
    // mailbox's ids, and Ben's done secret for his slot.
    let env = super::sealed::gen_sealed(c);
    let envelope = unhex(st(get(&env, "envelope"), "hex"));
    let id: [u8; 32] = fixed(get(&env, "envelope"), "id");
    frames.push((
        "sealed: one envelope".into(),
        Frame::Sealed {
            envelopes: vec![envelope],
        },
    ));
    frames.push((
        "mail_ids: the mailbox holds one envelope".into(),
        Frame::MailIds { ids: vec![id] },
    ));
    frames.push((
        "mail_want: send me that envelope".into(),
        Frame::MailWant { ids: vec![id] },
    ));
    let ben = &list(&env, "opened")[0];
    frames.push((
        "mail_done: Ben opened his slot".into(),
        Frame::MailDone {
            done: vec![huddle::wire::MailDoneEntry {
                id,
                slot: u16::try_from(num(ben, "slot")).expect("u16"),
                secret: fixed(ben, "done_secret"),
            }],
        },
    ));
    for (name, revocation) in revocations(c) {
        frames.push((format!("revoked: {name}"), Frame::Revoked { revocation }));
    }
    for code in (1..=12).chain([0, 13, 255]) {
        let reason = Reason::from_code(code);
        frames.push((format!("refuse: {reason:?}"), Frame::Refuse { reason }));
    }
    let valid: Vec<Value> = frames
        .iter()
        .map(|(name, f)| json!({ "name": name, "frame": frame_json(f), "hex": hex(&f.encode()) }))
        .collect();

    let hello = Frame::Hello {
        version: PROTOCOL_VERSION,
        pass: ana.pass(),
    }
    .encode();
    let identify = frames[1].1.encode();
    let catalog = frames[2].1.encode();
    let header = frames[5].1.encode();
    let sync = frames[6].1.encode();
    let refuse = Frame::Refuse {
        reason: Reason::Malformed,
    }
    .encode();
    let bad = |b: Vec<u8>, why: &str, error: &str, refusal: u8| json!({ "hex": hex(&b), "why": why, "error": error, "refusal": refusal });
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
        bad(vec![15], "tag 15", "Unknown", 10),
        bad(vec![9], "trail ask without a proof", "Truncated", 10),
        bad(vec![8], "revoked without a revocation", "Truncated", 10),
        bad(
            vec![8, 1, 1],
            "revoked with a revocation cut short",
            "Truncated",
            10,
        ),
        bad(vec![0xff], "tag 255", "Unknown", 10),
        bad(splice(&hello, 1, 1, &[0]), "hello version 0", "Unknown", 8),
        bad(
            splice(&hello, 1, 1, &[1]),
            "hello version 1 (before pages)",
            "Unknown",
            8,
        ),
        bad(
            splice(&hello, 1, 1, &[2]),
            "hello version 2 (before derived conversation ids)",
            "Unknown",
            8,
        ),
        bad(
            splice(&hello, 1, 1, &[3]),
            "hello version 3 (a whole certificate in the hello)",
            "Unknown",
            8,
        ),
        bad(
            splice(&hello, 1, 1, &[4]),
            "hello version 4 (a revoked device is not shown why)",
            "Unknown",
            8,
        ),
        bad(
            splice(&hello, 1, 1, &[5]),
            "hello version 5 (no tagged fields, no clinical policy)",
            "Unknown",
            8,
        ),
        bad(
            splice(&hello, 1, 1, &[6]),
            "hello version 6 (no attachments)",
            "Unknown",
            8,
        ),
        bad(
            splice(&hello, 1, 1, &[7]),
            "hello version 7 (no audit trail frames)",
            "Unknown",
            8,
        ),
        bad(
            splice(&hello, 1, 1, &[8]),
            "hello version 8 (no sealed envelopes)",
            "Unknown",
            8,
        ),
        bad(
            splice(&hello, 1, 1, &[10]),
            "hello version 10",
            "Unknown",
            8,
        ),
        bad(vec![1, 10], "hello version 10, nothing after", "Unknown", 8),
        bad(vec![1], "hello without version", "Truncated", 10),
        bad(
            hello[..hello.len() - 1].to_vec(),
            "hello with its pass cut short",
            "Truncated",
            10,
        ),
        bad(
            [hello.as_slice(), &[0]].concat(),
            "hello with a trailing byte after the pass",
            "Trailing",
            10,
        ),
        bad(
            identify[..identify.len() - 1].to_vec(),
            "identify cut short",
            "Truncated",
            10,
        ),
        bad(
            [identify.as_slice(), &[0]].concat(),
            "identify with a trailing byte",
            "Trailing",
            10,
        ),
        bad(
            nonminimal_varint(&identify, 1 + 16),
            "identify with the team name length as a non-minimal varint",
            "Varint",
            10,
        ),
        bad(
            {
                let mut s = ana.secret();
                s.roles = vec!["r".repeat(65)];
                Frame::Identify { secret: s }.encode()
            },
            "identify with a role of 65 bytes",
            "TooLong",
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
        "description": "Frames of /huddle/sync/2 (protocol/wire.md#frames). 'frame' gives the decoded fields; a hello's pass and an identify's secret part are those of certificates.json, a header is a vector of headers.json, and sync data is an Automerge sync message (documents.json). Every must-reject frame names the decode error and the reason code of the Refuse a node sends before disconnecting.",
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
