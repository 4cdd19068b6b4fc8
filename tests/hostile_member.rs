//! A member acting within its certificate, but against the others: what it
//! writes and sends is well formed and signed, and still must not erase
//! anyone's message, reach a conversation it is not in, or grow a peer's
//! memory without bound (DESIGN.md invariants).

mod common;

use std::collections::BTreeSet;

use automerge::sync;
use common::Mesh;
use huddle::conversation::Conversation;
use huddle::header::direct_conversation_id;
use huddle::node::{Command, Input};
use huddle::store::Store;
use huddle::wire::{CatalogEntry, Frame};
use huddle::{ConversationHeader, ConversationId, ConversationKind, MessageId, Priority, Reply};

/// Three members, not yet connected; Mallory is the one who turns.
fn ana_ben_and_mallory(seed: u64) -> (Mesh, usize, usize, usize) {
    let mut m = Mesh::new(seed);
    let ana = m.add_member("Ana", &[]);
    let ben = m.add_member("Ben", &[]);
    let mal = m.add_member("Mallory", &[]);
    (m, ana, ben, mal)
}

fn bodies(m: &Mesh, i: usize, id: &ConversationId) -> Vec<String> {
    m.devices[i]
        .node
        .history(id, None)
        .map(|h| h.into_iter().map(|r| r.body).collect())
        .unwrap_or_default()
}

fn send(m: &mut Mesh, i: usize, id: ConversationId, body: &str, priority: Priority) -> MessageId {
    let send = Command::Send {
        conversation: id,
        body: body.into(),
        priority,
        reply_to: None,
        fields: Default::default(),
    };
    match m.command(i, send) {
        Ok(Reply::Message(x)) => x,
        other => panic!("send: {other:?}"),
    }
}

/// Mallory puts an exact copy of Ana's genuine message under a junk key of
/// the `receipts` map. Once, every device took the change in and marked
/// the copy's bytes rejected, and the genuine message, same bytes in the
/// right place, was dropped for good at the next start (the mark was
/// trusted without a second look: stores from then are still read with
/// that second look). Now the change is refused at the door (not a receipt
/// under its own key: sync.md §7.5), so nothing is even marked; the
/// message is still shown after a restart.
#[test]
fn a_misplaced_copy_of_a_message_does_not_erase_it() {
    let (mut m, ana, ben, mal) = ana_ben_and_mallory(7);
    m.connect_all(&[ana, ben, mal]);
    m.run_until_quiet();
    let members: BTreeSet<_> = [ana, ben, mal]
        .iter()
        .map(|&i| m.devices[i].member())
        .collect();
    let kind = ConversationKind::Group {
        title: "Bed 4".into(),
        members,
    };
    let Ok(Reply::Conversation(id)) = m.command(ana, Command::CreateConversation { kind }) else {
        panic!("create");
    };
    m.run_until_quiet();
    let stat = "STAT: bed 4 BP 80/40";
    let mid = send(&mut m, ana, id, stat, Priority::Stat);
    m.run_until_quiet();

    let (header, bytes) = {
        let c = m.devices[mal]
            .node
            .conversation(&id)
            .expect("Mallory holds it");
        (c.header.clone(), c.get(&mid).expect("the message").encode())
    };
    let mut evil = Conversation::new(header, &automerge::ActorId::from([0x66u8; 16].as_slice()));
    evil.replica_mut()
        .put(m.now, 1, "junk", bytes) // root 1: `receipts`
        .expect("put");
    let data = evil
        .replica()
        .local_push()
        .expect("a change")
        .message_for(&mut sync::State::new());
    let frame = Frame::Sync {
        doc: id.0,
        more: false,
        data,
    }
    .encode();
    let peer = m.devices[mal].id();
    let out = m.devices[ana]
        .node
        .handle(m.now, Input::Frame { peer, bytes: frame });
    m.apply(ana, out);
    m.run_until_quiet(); // Ana relays the change to Ben

    assert!(m.devices[ana].events.iter().any(|e| matches!(
        e,
        huddle::node::Event::PeerRefused { peer: p, by_us: true, .. } if *p == peer
    )));
    for i in [ana, ben] {
        assert_eq!(
            m.devices[i].node.conversation(&id).expect("held").rejected,
            0
        );
        m.devices[i].store.flush().expect("flush");
        m.crash_restart(i);
    }
    for i in [ana, ben, mal] {
        assert_eq!(bodies(&m, i, &id), vec![stat.to_owned()], "device {i}");
    }
}

/// Mallory sends catalog after catalog of made-up ids, and headers of
/// conversations Ana is not in: Ana keeps nothing about ids she does not
/// hold (she kept every one, without bound, across catalogs).
#[test]
fn catalogs_and_headers_of_made_up_ids_are_not_kept() {
    let (mut m, ana, ben, mal) = ana_ben_and_mallory(9);
    m.connect(ana, mal);
    m.run_until_quiet();
    let peer = m.devices[mal].id();
    let kept_before = m.devices[ana].node.ids_kept_for(&peer).expect("connected");
    let mut n: u64 = 0;
    for _ in 0..5 {
        for f in 0..4 {
            let entries: Vec<CatalogEntry> = (0..1_000)
                .map(|_| {
                    n += 1;
                    let mut doc = [1u8; 16];
                    doc[..8].copy_from_slice(&n.to_be_bytes());
                    CatalogEntry {
                        doc,
                        heads: [0; 16],
                    }
                })
                .collect();
            let bytes = Frame::Catalog {
                entries,
                last: f == 3,
            }
            .encode();
            let out = m.devices[ana]
                .node
                .handle(m.now, Input::Frame { peer, bytes });
            m.apply(ana, out);
        }
    }
    // A group of Mallory and Ben: a header Ana is not admitted to.
    let members = [mal, ben].iter().map(|&i| m.devices[i].member()).collect();
    let kind = ConversationKind::Group {
        title: "not Ana's".into(),
        members,
    };
    let header = ConversationHeader::create(&m.devices[mal].key, kind, m.now);
    let bytes = Frame::Header { header }.encode();
    let out = m.devices[ana]
        .node
        .handle(m.now, Input::Frame { peer, bytes });
    m.apply(ana, out);
    m.run_until_quiet();
    assert_eq!(n, 20_000);
    assert!(
        m.devices[ana].node.peers().iter().any(|p| p.device == peer),
        "made-up ids are no reason to refuse a member"
    );
    assert_eq!(m.devices[ana].node.ids_kept_for(&peer), Some(kept_before));
}

/// Mallory signs a group header carrying Ana and Ben's direct conversation
/// id, and hands it to Ana before Ana holds their direct conversation.
/// Ana refuses it (a group's id is a hash of its own header), so "direct
/// with Ben" is the real one and neither side's words reach Mallory. (Ana
/// took it, wrote into it, and relayed Ben's messages to Mallory.)
#[test]
fn a_group_header_cannot_claim_a_direct_conversation_id() {
    let (mut m, ana, ben, mal) = ana_ben_and_mallory(8);
    let (a, b, x) = (
        m.devices[ana].member(),
        m.devices[ben].member(),
        m.devices[mal].member(),
    );
    let direct = direct_conversation_id(a, b);
    let kind = ConversationKind::Direct { members: [b, a] };
    let created = m.command(ben, Command::CreateConversation { kind });
    assert_eq!(created, Ok(Reply::Conversation(direct)));
    send(&mut m, ben, direct, "Ben to Ana only", Priority::Routine);

    m.connect(ana, mal);
    m.run_until_quiet();
    let squat = ConversationHeader::sign(
        &m.devices[mal].key,
        direct,
        ConversationKind::Group {
            title: "Ben".into(),
            members: [a, b, x].into_iter().collect(),
        },
        m.now,
    );
    let bytes = Frame::Header { header: squat }.encode();
    let peer = m.devices[mal].id();
    let out = m.devices[ana]
        .node
        .handle(m.now, Input::Frame { peer, bytes });
    m.apply(ana, out);
    m.run_until_quiet();
    assert!(
        m.devices[ana].node.conversation(&direct).is_none(),
        "refused"
    );

    let kind = ConversationKind::Direct { members: [a, b] };
    let created = m.command(ana, Command::CreateConversation { kind });
    assert_eq!(created, Ok(Reply::Conversation(direct)));
    send(&mut m, ana, direct, "Ana to Ben only", Priority::Routine);
    m.connect_all(&[ana, ben, mal]);
    m.run_until_quiet();
    let both = ["Ana to Ben only", "Ben to Ana only"];
    for i in [ana, ben] {
        let mut seen = bodies(&m, i, &direct);
        seen.sort();
        assert_eq!(seen, both, "device {i}");
    }
    assert!(m.devices[mal].node.conversation(&direct).is_none());
    assert!(bodies(&m, mal, &direct).is_empty());
}

/// Mallory deletes Ana's STAT message from her copy, or overwrites it, and
/// syncs that to Ben (hole 4 of issue 18: a device that synced later never
/// got the message, and every device lost it after a restart). Ben refuses
/// each change and the peer that sent it; the message stays, restart or not.
#[test]
fn a_member_cannot_erase_or_overwrite_what_others_wrote() {
    let (mut m, ana, ben, mal) = ana_ben_and_mallory(11);
    m.connect_all(&[ana, ben, mal]);
    m.run_until_quiet();
    let id = common::group_of(&mut m, ana, &[ana, ben, mal], "Bed 4");
    let stat = "STAT: bed 4 BP 80/40";
    send(&mut m, ana, id, stat, Priority::Stat);
    m.run_until_quiet();

    use automerge::transaction::Transactable;
    use automerge::ReadDoc;
    let erase = common::tampered_frame(&m, mal, id, |tx| {
        let msgs = tx.get(automerge::ROOT, "msgs")?.expect("root").1;
        tx.delete(&msgs, 0)
    });
    let overwrite = common::tampered_frame(&m, mal, id, |tx| {
        let msgs = tx.get(automerge::ROOT, "msgs")?.expect("root").1;
        tx.put(
            &msgs,
            0,
            automerge::ScalarValue::Bytes(b"all fine".to_vec()),
        )
    });
    let heads_before = m.devices[ben]
        .node
        .conversation(&id)
        .unwrap()
        .replica()
        .heads();
    let mut refusals = 0;
    for frame in [erase, overwrite] {
        m.disconnect(mal, ben);
        m.connect(mal, ben);
        m.run_until_quiet();
        let peer = m.devices[mal].id();
        let out = m.devices[ben]
            .node
            .handle(m.now, huddle::node::Input::Frame { peer, bytes: frame });
        refusals += out
            .iter()
            .filter(|o| {
                matches!(
                    o,
                    huddle::node::Output::Emit(huddle::node::Event::PeerRefused {
                        by_us: true,
                        ..
                    })
                )
            })
            .count();
        m.apply(ben, out);
        m.run_until_quiet();
    }
    assert_eq!(refusals, 2, "Ben refused Mallory for each");
    assert_eq!(
        m.devices[ben]
            .node
            .conversation(&id)
            .unwrap()
            .replica()
            .heads(),
        heads_before,
        "nothing of the change was taken in"
    );
    for i in [ana, ben] {
        m.devices[i].store.flush().expect("flush");
        m.crash_restart(i);
        assert_eq!(bodies(&m, i, &id), vec![stat.to_owned()], "device {i}");
    }
}

/// Mallory writes six 8 MiB blobs into the team document and syncs them
/// (hole 5 of issue 18: +124 MB of memory and +75 MB of disk on every
/// device it reached, kept forever). A put into the team document must be
/// a certificate or a revocation under its own key (sync.md §7.5): the
/// change is refused with Mallory, and nothing of it is kept or stored.
#[test]
fn a_member_cannot_fill_the_team_document_with_blobs() {
    let (mut m, ana, _, mal) = ana_ben_and_mallory(13);
    m.connect_all(&[ana, mal]);
    m.run_until_quiet();
    let team = m.devices[ana].node.team_id().unwrap();
    let heads = m.devices[ana].node.team_heads();
    let mut evil =
        huddle::team::TeamDoc::new(team, &automerge::ActorId::from([0x66u8; 16].as_slice()));
    evil.replica_mut()
        .local(m.now, |tx| {
            use automerge::transaction::Transactable;
            use automerge::ReadDoc;
            let certs = tx.get(automerge::ROOT, "certs")?.expect("genesis root").1;
            for i in 0..6 {
                tx.put(
                    &certs,
                    format!("blob{i}"),
                    automerge::ScalarValue::Bytes(vec![0x5a; 8 << 20]),
                )?;
            }
            Ok(())
        })
        .unwrap();
    let data = evil
        .replica()
        .local_push()
        .unwrap()
        .message_for(&mut sync::State::new());
    assert!(data.len() > 48 << 20);
    let peer = m.devices[mal].id();
    let chunks: Vec<&[u8]> = data.chunks(huddle::wire::SYNC_CHUNK_LEN).collect();
    let mut refused = false;
    for (i, chunk) in chunks.iter().enumerate() {
        let frame = Frame::Sync {
            doc: huddle::team::TEAM_DOC_ID,
            more: i + 1 < chunks.len(),
            data: chunk.to_vec(),
        }
        .encode();
        let out = m.devices[ana]
            .node
            .handle(m.now, Input::Frame { peer, bytes: frame });
        refused |= out.iter().any(|o| {
            matches!(
                o,
                huddle::node::Output::Emit(huddle::node::Event::PeerRefused { by_us: true, .. })
            )
        });
        m.apply(ana, out);
    }
    assert!(refused, "Ana refused Mallory");
    assert_eq!(m.devices[ana].node.team_heads(), heads, "nothing taken in");
    let stored: usize = m.devices[ana]
        .store
        .scan_prefix(b"")
        .unwrap()
        .iter()
        .map(|(k, v)| k.len() + v.len())
        .sum();
    assert!(stored < 1 << 20, "{stored} bytes stored");
}

/// A member's part of a sync message is counted while it waits for the
/// rest, and nothing of it outlives the member's session.
#[test]
fn a_members_partial_sync_message_goes_with_its_session() {
    let (mut m, ana, _, mal) = ana_ben_and_mallory(17);
    m.connect_all(&[ana, mal]);
    m.run_until_quiet();
    let peer = m.devices[mal].id();
    let frame = Frame::Sync {
        doc: huddle::team::TEAM_DOC_ID,
        more: true,
        data: vec![0x42; 300_000],
    }
    .encode();
    let out = m.devices[ana]
        .node
        .handle(m.now, Input::Frame { peer, bytes: frame });
    m.apply(ana, out);
    assert_eq!(m.devices[ana].node.reassembly_bytes(), 300_000);
    m.disconnect(ana, mal);
    assert_eq!(m.devices[ana].node.reassembly_bytes(), 0);
}

/// Mallory sends a sync message for the team document whose Bloom filter
/// claims an entry and has no bits (zero bits per entry), and heads Ana
/// lacks, so Ana answers. Automerge 0.12 decodes it without complaint and
/// divides by zero when it next builds a message for Mallory: the whole
/// node went down (issue 18). Ana refuses Mallory and keeps serving Ben.
#[test]
fn a_bloom_filter_with_no_bits_cuts_that_member_only() {
    let (mut m, ana, ben, mal) = ana_ben_and_mallory(11);
    m.connect_all(&[ana, ben, mal]);
    m.run_until_quiet();

    let mut data = vec![0x43, 1];
    data.extend_from_slice(&[0xab; 32]); // a head nobody has
    data.extend_from_slice(&[0, 1, 0, 3, 1, 0, 7, 0, 2, 0x02, 0x84]);
    let bytes = Frame::Sync {
        doc: huddle::team::TEAM_DOC_ID,
        more: false,
        data,
    }
    .encode();
    let peer = m.devices[mal].id();
    let out = m.devices[ana]
        .node
        .handle(m.now, Input::Frame { peer, bytes });
    m.apply(ana, out);
    m.run_until_quiet();

    assert!(m.devices[ana].events.iter().any(|e| matches!(
        e,
        huddle::Event::PeerRefused { peer: p, reason: huddle::wire::Reason::Malformed, by_us: true } if *p == peer
    )));
    assert!(!m.devices[ana].node.peers().iter().any(|p| p.device == peer));
    let (a, b) = (m.devices[ana].member(), m.devices[ben].member());
    let kind = ConversationKind::Direct { members: [b, a] };
    let Ok(Reply::Conversation(id)) = m.command(ben, Command::CreateConversation { kind }) else {
        panic!("create");
    };
    send(&mut m, ben, id, "still here", Priority::Routine);
    m.run_until_quiet();
    assert_eq!(bodies(&m, ana, &id), vec!["still here".to_owned()]);
}

/// Mallory sends a compressed change chunk (well under a frame) that
/// inflates past the 64 MiB a sync message may hold: a decompression bomb
/// (one such frame took a node from 0.4 to 3.4 GB). Ana refuses Mallory
/// for exceeding a limit, before Automerge inflates anything.
#[test]
fn a_compressed_bomb_is_refused_as_over_the_limit() {
    use std::io::Write;
    let (mut m, ana, _ben, mal) = ana_ben_and_mallory(12);
    m.connect(ana, mal);
    m.run_until_quiet();

    let mut deflate = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..=huddle::replica::check::MAX_INFLATED >> 20 {
        deflate.write_all(&zeros).expect("in memory");
    }
    let bomb = deflate.finish().expect("in memory");
    let mut chunk = vec![0x85, 0x6f, 0x4a, 0x83, 0, 0, 0, 0, 2];
    let mut len = bomb.len() as u64;
    while len >= 0x80 {
        chunk.push(len as u8 | 0x80);
        len >>= 7;
    }
    chunk.push(len as u8);
    chunk.extend_from_slice(&bomb);
    let mut data = vec![0x43, 0, 0, 0, 1];
    let mut len = chunk.len() as u64;
    while len >= 0x80 {
        data.push(len as u8 | 0x80);
        len >>= 7;
    }
    data.push(len as u8);
    data.extend_from_slice(&chunk);
    data.extend_from_slice(&[2, 0x02, 0x84]);
    assert!(data.len() < 512 * 1024, "one frame");

    let peer = m.devices[mal].id();
    let bytes = Frame::Sync {
        doc: huddle::team::TEAM_DOC_ID,
        more: false,
        data,
    }
    .encode();
    let out = m.devices[ana]
        .node
        .handle(m.now, Input::Frame { peer, bytes });
    m.apply(ana, out);
    assert!(m.devices[ana].events.iter().any(|e| matches!(
        e,
        huddle::Event::PeerRefused { peer: p, reason: huddle::wire::Reason::LimitExceeded, by_us: true } if *p == peer
    )));
}
