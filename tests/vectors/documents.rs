//! documents.json vectors: Automerge schemas, genesis, heads digests, sync messages.

use super::*;

pub(crate) fn obj_type_name(t: ObjType) -> &'static str {
    match t {
        ObjType::Map => "map",
        ObjType::List => "list",
        ObjType::Text => "text",
        ObjType::Table => "table",
    }
}

pub(crate) fn obj_type_from(s: &str) -> ObjType {
    match s {
        "map" => ObjType::Map,
        "list" => ObjType::List,
        t => panic!("unexpected object type {t}"),
    }
}

/// The genesis change of a document, made directly with Automerge.
pub(crate) fn genesis(
    doc_id: &[u8; 16],
    roots: &[(&str, ObjType)],
) -> (Automerge, automerge::Change) {
    let mut doc = Automerge::new().with_actor(ActorId::from(doc_id.as_slice()));
    let mut tx = doc.transaction();
    for (name, typ) in roots {
        tx.put_object(ROOT, *name, *typ).expect("fresh document");
    }
    tx.commit_with(CommitOptions::default().with_time(0));
    let change = doc.get_changes(&[]).into_iter().next().expect("one change");
    (doc, change)
}

pub(crate) fn heads_digest(heads: &[automerge::ChangeHash]) -> [u8; 16] {
    let parts: Vec<&[u8]> = heads.iter().map(|h| h.0.as_slice()).collect();
    crypto::sha256(&parts)[..16].try_into().expect("16 bytes")
}

pub(crate) fn genesis_json(
    doc_id: &[u8; 16],
    schema: huddle::replica::Schema,
    what: &str,
) -> Value {
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
pub(crate) fn documents_sync_messages(c: &Cast) -> Vec<Vec<u8>> {
    sync_exchange(c).into_iter().map(|(_, m)| m).collect()
}

pub(crate) fn actor(l: &str) -> ActorId {
    ActorId::from(id16(&format!("actor:{l}")).as_slice())
}

pub(crate) fn sync_exchange(c: &Cast) -> Vec<(&'static str, Vec<u8>)> {
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

pub(crate) fn gen_documents(c: &Cast) -> Value {
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
    let doc = group_id().0;
    let page = huddle::replica::page_change(&doc, conv, "msgs", 1);
    let pages = vec![json!({
        "doc_id": hex(&doc),
        "root": "msgs",
        "page_len": conv.page_len,
        "k": 1,
        "key": "msgs.1",
        "actor": page.actor_id().to_hex_string(),
        "seq": page.seq(),
        "start_op": page.start_op().get(),
        "time": page.timestamp(),
        "message": null,
        "deps": page.deps().iter().map(|d| hex(&d.0)).collect::<Vec<_>>(),
        "change": hex(page.raw_bytes()),
        "change_hash": hex(&page.hash().0),
    })];
    // One message written by a fixed actor at T0, and a concurrent one.
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
        "description": "Automerge documents (protocol/sync.md#documents). 'geneses' are normative: every replica of a document starts from exactly this change (actor = document id, seq 1, time 0, the root objects in this order), so its bytes and hash must be reproduced exactly. 'pages' are normative too: the change that makes page k of a paged list root (actor = first 16 bytes of SHA-256('huddle/page/v1' || doc id || u64be(len(root)) || root), seq k, time 0, depending on page k-1's change or, for page 1, on genesis alone, one op creating a list under root key '<root>.<k>'); every replica that fills a page makes exactly this change. 'local_changes', 'heads_digests' and 'sync_exchange' are informative: they show a message inserted at list index 0 of msgs by an actor at time T0/1000 s, the catalog's heads digest over one and two heads, and the Automerge sync messages of two replicas converging (a node must accept them; it need not produce the same bytes).",
        "geneses": geneses,
        "pages": pages,
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
    for p in list(&v, "pages") {
        let doc_id: [u8; 16] = fixed(p, "doc_id");
        let (name, k) = (st(p, "root"), num(p, "k"));
        assert_eq!(st(p, "key"), format!("{name}.{k}"));
        assert_eq!(
            num(p, "page_len"),
            huddle::conversation::SCHEMA.page_len as u64,
            "the conversation schema's page length"
        );
        // The actor, from its definition.
        let actor = crypto::sha256(&[
            b"huddle/page/v1",
            &doc_id,
            &(name.len() as u64).to_be_bytes(),
            name.as_bytes(),
        ]);
        assert_eq!(
            k, 1,
            "page 1 depends on genesis alone; later pages on their predecessor"
        );
        assert_eq!(hex(&actor[..16]), st(p, "actor"));
        // The change, made directly with Automerge on top of genesis...
        let g = list(&v, "geneses")
            .iter()
            .find(|g| st(g, "doc_id") == st(p, "doc_id"))
            .expect("the document's genesis");
        let roots: Vec<(String, ObjType)> = list(g, "roots")
            .iter()
            .map(|r| (st(r, "key").to_owned(), obj_type_from(st(r, "type"))))
            .collect();
        let refs: Vec<(&str, ObjType)> = roots.iter().map(|(n, t)| (n.as_str(), *t)).collect();
        let (doc, _) = genesis(&doc_id, &refs);
        let mut doc = doc.with_actor(ActorId::from(&actor[..16]));
        let mut tx = doc.transaction();
        tx.put_object(ROOT, st(p, "key"), ObjType::List)
            .expect("page");
        tx.commit_with(CommitOptions::default().with_time(0));
        let made = doc.get_last_local_change().expect("the page change");
        assert_eq!(hex(made.raw_bytes()), st(p, "change"), "page change bytes");
        assert_eq!(hex(&made.hash().0), st(p, "change_hash"));
        assert_eq!(made.seq(), num(p, "seq"));
        assert_eq!(made.start_op().get(), num(p, "start_op"));
        assert_eq!(u64::try_from(made.timestamp()).ok(), Some(num(p, "time")));
        assert!(get(p, "message").is_null() && made.message().is_none());
        let deps: Vec<String> = made.deps().iter().map(|d| hex(&d.0)).collect();
        assert_eq!(deps, vec![st(g, "change_hash").to_owned()], "genesis alone");
        assert_eq!(
            list(p, "deps")
                .iter()
                .map(|d| d.as_str().expect("hex"))
                .collect::<Vec<_>>(),
            deps
        );
        // ...is what huddle makes.
        let ours = huddle::replica::page_change(&doc_id, huddle::conversation::SCHEMA, name, k);
        assert_eq!(hex(ours.raw_bytes()), st(p, "change"));
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
