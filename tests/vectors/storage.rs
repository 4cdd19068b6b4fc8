//! storage.json vectors.

use super::*;

pub(crate) fn gen_storage(c: &Cast) -> Value {
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
                "to_ack": 2,
                "stat_to_ack": 1,
                "last": {
                    "author": hex(&[0x5f; 16]),
                    "priority": 2,
                    "time_ms": "1733000000000",
                    "preview": "Bed 12: lactate 4.1, please review ✓",
                },
            },
            "value": hex(&store::DocMeta {
                heads: vec![[0xab; 32], [0xcd; 32]],
                clock: 7_034_426_408_878_080_001,
                messages: 1200,
                unread: 3,
                last_activity: 1_733_000_000_000,
                to_ack: 2,
                stat_to_ack: 1,
                last: Some(store::LastEntry {
                    author: [0x5f; 16],
                    priority: 2,
                    time_ms: 1_733_000_000_000,
                    preview: "Bed 12: lactate 4.1, please review ✓".into(),
                }),
            }.encode()),
            "unknown_value": "",
        },
        "revocations": revs,
        "peer": {
            "device": hex(c.devices["ana-phone"].device_id().as_bytes()),
            "key": hex(&keys::peer(&c.devices["ana-phone"].device_id())),
            "seen": "1733000000000",
            "addrs": [hex(&peer_addr(4001)), hex(&peer_addr(4002))],
            "value": hex(&store::peers::PeerRecord::new(1_733_000_000_000, [peer_addr(4001), peer_addr(4002)]).encode()),
        },
        "invalid_keys": [
            { "key": hex(&[keys::DOC_PREFIX, &group_id().0, b"/x"].concat()), "why": "unknown document suffix" },
            { "key": hex(&[keys::DOC_PREFIX, &group_id().0[..8]].concat()), "why": "document key too short" },
            { "key": hex(&[keys::DOC_PREFIX, &group_id().0, b"/c/", &[0, 0, 0, 1]].concat()), "why": "chunk number not 8 bytes" },
        ],
    })
}

/// `/ip4/192.168.1.20/tcp/<port>` as a binary multiaddr (protocol 4, the
/// address, protocol 6, the port as a varint-free u16).
fn peer_addr(port: u16) -> Vec<u8> {
    [&[4u8, 192, 168, 1, 20, 6][..], &port.to_be_bytes()].concat()
}

#[test]
fn peer_record_vector() {
    let v = load("storage.json");
    let p = get(&v, "peer");
    let device = DeviceId(fixed(p, "device"));
    assert_eq!(bytes(p, "key"), keys::peer(&device));
    let record = store::peers::PeerRecord::decode(&bytes(p, "value")).expect("decodes");
    assert_eq!(record.seen.to_string(), st(p, "seen"));
    let addrs: Vec<Vec<u8>> = list(p, "addrs")
        .iter()
        .map(|a| unhex(a.as_str().expect("hex")))
        .collect();
    assert_eq!(record.addrs, addrs);
    assert_eq!(record.encode(), bytes(p, "value"));
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
        to_ack: num(e, "to_ack") as u32,
        stat_to_ack: num(e, "stat_to_ack") as u32,
        last: {
            let l = get(e, "last");
            Some(store::LastEntry {
                author: bytes(l, "author").try_into().expect("16 bytes"),
                priority: num(l, "priority") as u8,
                time_ms: st(l, "time_ms").parse().expect("decimal"),
                preview: st(l, "preview").to_owned(),
            })
        },
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
