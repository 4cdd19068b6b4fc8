//! A damaged store — a bad disk, a half-restored backup, a hand edit — must
//! give a clear error or a node that runs without what was damaged: never
//! a panic, never a message that was not genuinely sent, and never the loss
//! of a conversation whose records were not touched.
//!
//! Ana's store holds the team document and three conversations (headers,
//! change chunks with messages and read receipts, index entries: 59
//! records) after an ordinary morning;
//! one to three of its records are corrupted (see `common::mutate`), then a
//! node is started from it the way the shell starts one (lazy loading).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};

use common::mutate::{corruptions, Mutation};
use common::{Mesh, T0};
use huddle::crypto::DeviceKey;
use huddle::membership::Certificate;
use huddle::node::{Command, CommandError, Event, Input, Node, NodeConfig, Output};
use huddle::store::{check_format, keys, load_lazy, DocMeta, Loader, MemoryStore, Store, StoreOp};
use huddle::wire::{Frame, PROTOCOL_VERSION};
use huddle::{ConversationHeader, ConversationId, ConversationKind, DeviceId, MessageId, Reply};
use proptest::prelude::*;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// What Ana's device holds after the morning, and what was sent.
struct Morning {
    key: DeviceKey,
    cert: Option<Certificate>,
    /// Bea's certificate, to speak for her by hand.
    bea: (DeviceId, Certificate),
    store: MemoryStore,
    /// Every record of the store, in key order.
    records: Vec<(Vec<u8>, Vec<u8>)>,
    convs: Vec<ConversationId>,
    /// Each conversation's rendered history on Ana's device.
    history: BTreeMap<ConversationId, [u8; 32]>,
    /// Every message anyone sent.
    real: BTreeSet<MessageId>,
}

fn morning() -> Morning {
    let mut mesh = Mesh::new(0x0057_02e5);
    let ana = mesh.add_member("Ana Silva", &["nurse"]);
    let bea = mesh.add_member("Bea Okafor", &["doctor"]);
    let (a, b) = (mesh.devices[ana].member(), mesh.devices[bea].member());
    mesh.connect(ana, bea);
    mesh.run_until_quiet();
    let mut convs = Vec::new();
    for kind in [
        ConversationKind::Group {
            title: "Ward 7".into(),
            members: [a, b].into(),
        },
        ConversationKind::Group {
            title: "Night handover".into(),
            members: [a, b].into(),
        },
        ConversationKind::Direct { members: [a, b] },
    ] {
        match mesh.command(ana, Command::CreateConversation { kind }) {
            Ok(Reply::Conversation(c)) => convs.push(c),
            other => panic!("create failed: {other:?}"),
        }
    }
    mesh.run_until_quiet();
    for (k, &c) in convs.iter().enumerate() {
        for n in 0..4 {
            mesh.send_text(ana, c, &format!("obs round {n} in {k}"));
            mesh.send_text(bea, c, &format!("seen {n} in {k}"));
            mesh.run_until_quiet();
        }
        mesh.command(ana, Command::MarkRead { conversation: c })
            .expect("mark read");
        mesh.run_until_quiet();
    }
    let history = convs
        .iter()
        .map(|c| {
            let conv = mesh.devices[ana].node.conversation(c).expect("loaded");
            assert_eq!(conv.len(), 8);
            (*c, conv.history_digest())
        })
        .collect();
    let b = &mesh.devices[bea];
    let bea = (b.id(), b.cert.clone().expect("a member"));
    let dev = &mesh.devices[ana];
    let records = dev.store.scan_prefix(b"").expect("scan");
    assert!(records.len() >= 8, "{} records", records.len());
    Morning {
        key: dev.key.clone(),
        cert: dev.cert.clone(),
        bea,
        store: dev.store.clone(),
        records,
        convs,
        history,
        real: mesh
            .devices
            .iter()
            .flat_map(|d| d.sent.iter().map(|(_, id)| *id))
            .collect(),
    }
}

/// The morning, played once per test binary.
fn stored() -> &'static Morning {
    static STORED: OnceLock<Morning> = OnceLock::new();
    STORED.get_or_init(morning)
}

/// The conversation a record belongs to, if it is a conversation's.
fn owner(key: &[u8], convs: &[ConversationId]) -> Option<ConversationId> {
    convs.iter().copied().find(|c| {
        [keys::DOC_PREFIX, keys::INDEX_PREFIX]
            .iter()
            .any(|p| key.starts_with(p) && key[p.len()..].starts_with(&c.0))
    })
}

/// Starts Ana's node from `store` as the shell does (format check, then
/// lazy loading); `None` if it refused to start, with an error that says why.
fn start(store: &MemoryStore) -> Option<Node> {
    let m = stored();
    let mut store = store.clone();
    if let Err(e) = check_format(&mut store) {
        assert!(!e.to_string().is_empty());
        return None;
    }
    let loader = Loader(Arc::new(store.clone()));
    let loaded = match load_lazy(&store, loader) {
        Ok(s) => s,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return None;
        }
    };
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    match Node::new(
        m.key.clone(),
        m.cert.clone(),
        loaded,
        NodeConfig::default(),
        &mut rng,
    ) {
        Ok(n) => Some(n),
        Err(e) => {
            assert!(!e.to_string().is_empty());
            None
        }
    }
}

/// Runs a command and carries out its writes, as a shell would.
fn command(
    node: &mut Node,
    store: &mut MemoryStore,
    now: u64,
    cmd: Command,
) -> Result<Reply, CommandError> {
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let (result, out) = node.command(now, &mut rng, cmd);
    for o in out {
        match o {
            Output::Persist(ops) => store.apply(&ops).expect("memory store"),
            Output::Flush => store.flush().expect("memory store"),
            _ => {}
        }
    }
    result
}

/// Corrupts the chosen records, starts a node, and uses every conversation.
fn damage_and_start(corrupt: &[(usize, Vec<Mutation>)]) {
    let m = stored();
    let mut store = m.store.clone();
    let mut damaged = BTreeSet::new();
    for (which, muts) in corrupt {
        let (key, value) = &m.records[which % m.records.len()];
        let mut v = store
            .get(key)
            .expect("get")
            .unwrap_or_else(|| value.clone());
        for mu in muts {
            mu.apply(&mut v);
        }
        store
            .apply(&[StoreOp::Put {
                key: key.clone(),
                value: v,
            }])
            .expect("put");
        damaged.insert(owner(key, &m.convs));
    }
    store.flush().expect("flush");
    // Only a damaged team document or shared record may stop the node.
    let only_conversations = damaged.iter().all(Option::is_some);
    let Some(mut node) = start(&store) else {
        assert!(
            !only_conversations,
            "damage to one conversation's records stopped the whole node"
        );
        return;
    };
    let now = T0 + 3_600_000;
    for o in node.handle(now, Input::Start) {
        if let Output::Persist(ops) = o {
            store.apply(&ops).expect("memory store");
        }
    }
    for c in &m.convs {
        if let Some(conv) = node.conversation(c) {
            for msg in conv.messages() {
                assert!(m.real.contains(&msg.id()), "a message nobody sent");
            }
            if !damaged.contains(&Some(*c)) && only_conversations {
                assert_eq!(
                    conv.history_digest(),
                    m.history[c],
                    "an untouched conversation changed"
                );
            }
        } else {
            assert!(
                damaged.contains(&Some(*c)) || !only_conversations,
                "an untouched conversation is gone"
            );
        }
        // Writing to it either works or says why; it never panics.
        let cmd = Command::Send {
            conversation: *c,
            body: "still there?".into(),
            priority: huddle::Priority::Routine,
            reply_to: None,
            fields: Default::default(),
        };
        if let Err(e) = command(&mut node, &mut store, now, cmd) {
            assert_eq!(e, CommandError::Unreadable(*c), "{e}");
        }
    }
    // And it starts again from what it just wrote.
    assert!(
        start(&store).is_some(),
        "its own writes left the store unreadable"
    );
}

/// The harness itself: an undamaged copy starts with every conversation
/// whole, so a conversation missing after damage is the damage's doing.
#[test]
fn an_undamaged_store_starts_whole() {
    let m = stored();
    let node = start(&m.store).expect("starts");
    for c in &m.convs {
        let conv = node.conversation(c).expect("loads");
        assert_eq!(conv.history_digest(), m.history[c]);
    }
    damage_and_start(&[]);
}

/// Overwrites one record.
fn put(store: &mut MemoryStore, key: Vec<u8>, value: Vec<u8>) {
    store.apply(&[StoreOp::Put { key, value }]).expect("put");
    store.flush().expect("flush");
}

#[test]
fn a_damaged_header_sets_one_conversation_aside_and_keeps_its_records() {
    let m = stored();
    let victim = m.convs[0];
    let mut store = m.store.clone();
    let key = keys::header(&victim.0);
    let good = store.get(&key).expect("get").expect("a header");
    let mut bad = good.clone();
    bad[good.len() / 2] ^= 0x40;
    put(&mut store, key, bad);
    let records = |s: &MemoryStore| s.scan_prefix(&keys::doc_prefix(&victim.0)).expect("scan");
    let before = records(&store);

    let mut node = start(&store).expect("the node starts");
    assert!(node.damaged_conversations().contains_key(&victim));
    assert!(node.conversation(&victim).is_none());
    for c in &m.convs[1..] {
        let conv = node.conversation(c).expect("the others load");
        assert_eq!(conv.history_digest(), m.history[c]);
    }
    let now = T0 + 3_600_000;
    let send = |c: ConversationId| Command::Send {
        conversation: c,
        body: "bed 4?".into(),
        priority: huddle::Priority::Routine,
        reply_to: None,
        fields: Default::default(),
    };
    assert_eq!(
        command(&mut node, &mut store, now, send(victim)),
        Err(CommandError::Unreadable(victim))
    );
    assert!(command(&mut node, &mut store, now, send(m.convs[1])).is_ok());

    // Bea offers the conversation's (good) header: taking it would write
    // over the records set aside, so it is not taken.
    let (bea, bea_cert) = m.bea.clone();
    let header = ConversationHeader::decode(&good).expect("decodes");
    let mut outputs = node.handle(now, Input::PeerConnected { peer: bea });
    for frame in [
        Frame::Hello {
            version: PROTOCOL_VERSION,
            pass: bea_cert.pass(),
        },
        Frame::Identify {
            secret: bea_cert.secret(),
        },
        Frame::Header { header },
    ] {
        outputs.extend(node.handle(
            now,
            Input::Frame {
                peer: bea,
                bytes: frame.encode(),
            },
        ));
    }
    assert!(
        node.peers().iter().any(|p| p.device == bea && p.verified),
        "Bea's session is up"
    );
    for o in outputs {
        match o {
            Output::Persist(ops) => store.apply(&ops).expect("apply"),
            Output::Emit(Event::ConversationAdded { conversation, .. }) => {
                assert_ne!(
                    conversation, victim,
                    "the damaged conversation was taken again"
                )
            }
            _ => {}
        }
    }
    assert!(node.conversation(&victim).is_none());
    assert_eq!(records(&store), before, "the set-aside records changed");
}

/// Ana's direct conversation with Bea has a fixed id, so re-creating it
/// (the natural thing to do when it is no longer listed) must not write a
/// fresh document over its stored records: not when it was set aside as
/// damaged, and not when its index entry is gone (then nothing at start
/// even saw it). Before, the fresh document's chunk 0 overwrote the first
/// message, and the sent messages after it no longer loaded.
#[test]
fn re_creating_a_stored_direct_conversation_writes_nothing_over_it() {
    let m = stored();
    let direct = m.convs[2];
    let (a, b) = (m.cert.as_ref().expect("Ana's").member, m.bea.1.member);
    assert_eq!(direct, huddle::header::direct_conversation_id(a, b));
    let records = |s: &MemoryStore| s.scan_prefix(&keys::doc_prefix(&direct.0)).expect("scan");
    let damage_header = |s: &mut MemoryStore| {
        let key = keys::header(&direct.0);
        let mut bad = s.get(&key).expect("get").expect("a header");
        let mid = bad.len() / 2;
        bad[mid] ^= 0x40;
        put(s, key, bad);
    };
    let drop_index = |s: &mut MemoryStore| {
        s.apply(&[StoreOp::Delete {
            key: keys::index(&direct.0),
        }])
        .expect("delete");
    };
    let now = T0 + 3_600_000;
    for damage in [&damage_header as &dyn Fn(&mut MemoryStore), &drop_index] {
        let mut store = m.store.clone();
        damage(&mut store);
        let before = records(&store);
        let mut node = start(&store).expect("the node starts");
        let kind = ConversationKind::Direct { members: [a, b] };
        assert_eq!(
            command(
                &mut node,
                &mut store,
                now,
                Command::CreateConversation { kind }
            ),
            Err(CommandError::Unreadable(direct))
        );
        assert!(node.damaged_conversations().contains_key(&direct));
        assert_eq!(records(&store), before, "the stored records changed");
    }
}

#[test]
fn a_damaged_index_entry_is_rebuilt_from_the_document() {
    let m = stored();
    let c = m.convs[1];
    let mut store = m.store.clone();
    put(&mut store, keys::index(&c.0), vec![0xde, 0xad, 0xbe, 0xef]);

    let mut node = start(&store).expect("the node starts");
    assert!(node.damaged_conversations().is_empty());
    for o in node.handle(T0 + 3_600_000, Input::Start) {
        if let Output::Persist(ops) = o {
            store.apply(&ops).expect("apply");
        }
    }
    let entry = store
        .get(&keys::index(&c.0))
        .expect("get")
        .expect("an entry");
    let meta = DocMeta::decode(&entry)
        .expect("a good entry")
        .expect("a known entry");
    let conv = node.conversation(&c).expect("loads");
    assert_eq!(conv.history_digest(), m.history[&c]);
    assert_eq!(meta.messages, 8);
    let heads: Vec<[u8; 32]> = conv.replica().heads().iter().map(|h| h.0).collect();
    assert_eq!(meta.heads, heads);
}

/// A chunk that does not parse, in a conversation whose index entry is
/// damaged too (so nothing says where its document must end): the
/// conversation is set aside, records kept. (Automerge skipped the chunk
/// and every one after it with only a warning, the node rewrote the index
/// to the shorter history, and messages sent later were written after the
/// hole.)
#[test]
fn a_chunk_that_does_not_parse_sets_its_conversation_aside() {
    let m = stored();
    let c = m.convs[1];
    let mut store = m.store.clone();
    let chunks: Vec<_> = store
        .scan_prefix(&keys::doc_prefix(&c.0))
        .expect("scan")
        .into_iter()
        .filter(|(k, _)| k.len() > 8 && k[..k.len() - 8].ends_with(b"/c/"))
        .collect();
    assert!(chunks.len() > 2, "{} chunks", chunks.len());
    let chunk = &chunks[1];
    let mut bad = chunk.1.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x40;
    put(&mut store, chunk.0.clone(), bad);
    put(&mut store, keys::index(&c.0), vec![0xde, 0xad, 0xbe, 0xef]);
    let before = store.scan_prefix(b"").expect("scan");

    let mut node = start(&store).expect("the node starts");
    assert!(node.damaged_conversations().contains_key(&c));
    assert!(node.conversation(&c).is_none());
    for o in node.handle(T0 + 3_600_000, Input::Start) {
        if let Output::Persist(ops) = o {
            store.apply(&ops).expect("apply");
        }
    }
    let after = store.scan_prefix(b"").expect("scan");
    let of_c = |r: &[(Vec<u8>, Vec<u8>)]| -> Vec<(Vec<u8>, Vec<u8>)> {
        r.iter()
            .filter(|(k, _)| owner(k, &[c]).is_some())
            .cloned()
            .collect()
    };
    assert_eq!(
        of_c(&after),
        of_c(&before),
        "its records are kept as they were"
    );
    for other in [m.convs[0], m.convs[2]] {
        let conv = node.conversation(&other).expect("the others load");
        assert_eq!(conv.history_digest(), m.history[&other]);
    }
}

// 256 cases by default; a longer hunt:
// `PROPTEST_CASES=20000 cargo test --test hostile_store`.
proptest! {
    /// One to three records corrupted, one to three times each.
    #[test]
    fn a_damaged_store_never_panics_or_invents(
        corrupt in corruptions()
    ) {
        damage_and_start(&corrupt);
    }
}
