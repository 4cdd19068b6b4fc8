//! The blob protocol on real shells over loopback (protocol/blobs.md §3):
//! a member fetches an attachment; a stranger and a revoked device that
//! ask for it by its hash — naming the right conversation and message —
//! get `Unavailable`, the same answer as for anything else.
#![cfg(feature = "net")]

#[path = "net_common.rs"]
mod common;

use common::*;
use futures::StreamExt;
use huddle::blobs::wire::{BlobRequest, BlobResponse, Want, PROTOCOL};
use huddle::blobs::{Attachment, BlobHash, Key};
use huddle::membership::{Revocation, RevocationTarget};
use huddle::message::Fields;
use huddle::net::BlobCodec;
use huddle::{Command, ConversationKind, Priority, Reply};
use libp2p::request_response::{self as rr, ProtocolSupport};
use libp2p::swarm::SwarmEvent;
use libp2p::{identity, Multiaddr, StreamProtocol};

/// Asks the node at `addr`, as a bare libp2p peer with `key`, for `req`.
async fn ask(addr: Multiaddr, key: Option<identity::Keypair>, req: BlobRequest) -> BlobResponse {
    let mut sw = client_swarm(key, |_| {
        rr::Behaviour::with_codec(
            BlobCodec::default(),
            [(StreamProtocol::new(PROTOCOL), ProtocolSupport::Full)],
            rr::Config::default(),
        )
    });
    sw.dial(addr).expect("dial");
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let ev = tokio::time::timeout_at(deadline, sw.select_next_some())
            .await
            .expect("an answer in time");
        match ev {
            SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                sw.behaviour_mut().send_request(&peer_id, req.clone());
            }
            SwarmEvent::Behaviour(rr::Event::Message {
                message: rr::Message::Response { response, .. },
                ..
            }) => return response,
            SwarmEvent::Behaviour(rr::Event::OutboundFailure { error, .. }) => {
                panic!("the request failed: {error}")
            }
            _ => {}
        }
    }
}

#[tokio::test]
async fn a_stranger_and_a_revoked_device_asking_by_hash_get_nothing() {
    let team = Team::new(70);
    let ana = team.member(71, "Ana Silva", &["nurse"]);
    let ben = team.member(72, "Ben Okafor", &["nurse"]);
    let lost = team.member(73, "Lost Phone", &["nurse"]);
    let (da, db, dl) = (tempdir(), tempdir(), tempdir());
    let a = start_node(&ana, da.path(), vec![]).await;
    let b = start_node(&ben, db.path(), vec![a.addr.clone()]).await;
    let l = start_node(&lost, dl.path(), vec![a.addr.clone()]).await;
    wait_until("both peers to prove membership", || async {
        a.verified_peers().await == 2
    })
    .await;
    let conv = create(
        &a,
        ConversationKind::Role {
            role: "nurse".into(),
        },
    )
    .await;
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    let limit = huddle::blobs::DEFAULT_LIMIT;
    let hash = a.handle.blobs().put_own(&data, limit).expect("stored");
    a.handle.blobs().adopt(conv, &hash).expect("attached");
    let att = Attachment {
        hash,
        size: data.len() as u64,
        media_type: "application/pdf".into(),
        name: "discharge.pdf".into(),
        thumbnail: vec![],
    };
    let msg = attach(&a, conv, att.clone()).await;
    // A member fetches it (and the lost phone, still a member, could too).
    holds(&b, conv, msg).await;
    let got = b.handle.fetch(conv, msg, hash).await.expect("the loop");
    assert!(got.expect("fetched").complete());
    let bytes = b
        .handle
        .blobs()
        .read_range(&Key::new(conv, hash), 0, att.size)
        .expect("held");
    assert_eq!(BlobHash::of(&bytes), hash);

    // The lost phone is revoked; it and a stranger ask Ana by the hash.
    let rev = Revocation::sign(
        &team.authority,
        RevocationTarget::Device(lost.key.device_id()),
        now_ms(),
    );
    a.handle
        .command(Command::Revoke(rev))
        .await
        .expect("revoke");
    l.stop().await;
    let lost_key = identity::Keypair::ed25519_from_bytes(lost.key.secret()).expect("ed25519");
    for want in [Want::Outline, Want::Chunk(0), Want::Chunk(1)] {
        let req = BlobRequest {
            conversation: conv,
            message: msg,
            hash,
            want,
        };
        let answer = ask(a.addr.clone(), Some(lost_key.clone()), req.clone()).await;
        assert_eq!(answer, BlobResponse::Unavailable, "the revoked phone");
        let answer = ask(a.addr.clone(), None, req.clone()).await;
        assert_eq!(answer, BlobResponse::Unavailable, "a stranger");
        // Ben holds it too, and answers strangers the same.
        let answer = ask(b.addr.clone(), None, req).await;
        assert_eq!(answer, BlobResponse::Unavailable, "a stranger asking Ben");
    }
    let stats = a.handle.stats().await.expect("stats");
    assert!(stats.blobs.refused >= 6, "{:?}", stats.blobs);
    a.stop().await;
    b.stop().await;
}

/// Waits until `n` holds message `msg` of `conv` with its attachments.
async fn holds(n: &TestNode, conv: huddle::ConversationId, msg: huddle::MessageId) {
    wait_until("the message with its attachments to arrive", || async {
        n.handle
            .query(move |node| !node.attachments_of(&conv, &msg).is_empty())
            .await
            .unwrap_or(false)
    })
    .await;
}

async fn create(n: &TestNode, kind: ConversationKind) -> huddle::ConversationId {
    match n
        .handle
        .command(Command::CreateConversation { kind })
        .await
        .expect("create")
    {
        Reply::Conversation(id) => id,
        other => panic!("{other:?}"),
    }
}

async fn attach(n: &TestNode, conv: huddle::ConversationId, att: Attachment) -> huddle::MessageId {
    match n
        .handle
        .command(Command::Send {
            conversation: conv,
            body: "see attached".into(),
            priority: Priority::Routine,
            reply_to: None,
            fields: Fields {
                attachments: vec![att],
                ..Fields::default()
            },
        })
        .await
        .expect("send")
    {
        Reply::Message(id) => id,
        other => panic!("{other:?}"),
    }
}

/// A blob is held per conversation: Mallory, who learnt a hash of a group
/// she is not in, names it in her own 1:1 with Ana and asks; Ana answers
/// `NotHeld` and nothing of it reaches Mallory. And Ben's message giving
/// that blob a false size makes the holders answer `NotHeld` to it, so
/// Carol, fetching it, cuts none of them and still gets the genuine one.
#[tokio::test]
async fn a_blob_is_served_only_for_its_own_conversation_and_size() {
    let team = Team::new(80);
    let ana = team.member(81, "Ana Silva", &["nurse"]);
    let ben = team.member(82, "Ben Okafor", &["nurse"]);
    let carol = team.member(83, "Carol Diaz", &["nurse"]);
    let mal = team.member(84, "Mallory", &["nurse"]);
    let (da, db, dc, dm) = (tempdir(), tempdir(), tempdir(), tempdir());
    let a = start_node(&ana, da.path(), vec![]).await;
    let b = start_node(&ben, db.path(), vec![a.addr.clone()]).await;
    let m = start_node(&mal, dm.path(), vec![a.addr.clone()]).await;
    wait_until("Ben and Mallory to prove membership", || async {
        a.verified_peers().await == 2
    })
    .await;
    let members = [ana.member, ben.member, carol.member].into_iter().collect();
    let group = create(
        &a,
        ConversationKind::Group {
            title: "Bed 4".into(),
            members,
        },
    )
    .await;
    // Over the automatic 2 MiB: each fetch below is asked for.
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 241) as u8).collect();
    let hash = a
        .handle
        .blobs()
        .put_own(&data, huddle::blobs::DEFAULT_LIMIT)
        .expect("stored");
    a.handle.blobs().adopt(group, &hash).expect("attached");
    let genuine = Attachment {
        hash,
        size: data.len() as u64,
        media_type: "image/jpeg".into(),
        name: "wound.jpg".into(),
        thumbnail: vec![],
    };
    let msg = attach(&a, group, genuine.clone()).await;
    let held = |n: &TestNode, conv| {
        n.handle
            .blobs()
            .status(&Key::new(conv, hash))
            .ok()
            .flatten()
            .is_some_and(|s| s.complete())
    };
    holds(&b, group, msg).await;
    let r = b.handle.fetch(group, msg, hash).await.expect("the loop");
    assert!(r.expect("Ben fetches it").complete());
    assert!(held(&b, group));

    // Mallory names the hash in a 1:1 with Ana; her node asks Ana for it.
    let dm_conv = create(
        &m,
        ConversationKind::Direct {
            members: [mal.member, ana.member],
        },
    )
    .await;
    let mal_msg = attach(&m, dm_conv, genuine.clone()).await;
    let mh = m.handle.clone();
    let asking = tokio::spawn(async move { mh.fetch(dm_conv, mal_msg, hash).await });
    wait_until("Ana to refuse Mallory twice", || async {
        a.handle.stats().await.expect("stats").blobs.not_held >= 2
    })
    .await;
    let ms = m.handle.stats().await.expect("stats").blobs;
    assert_eq!(ms.chunks_in, 0, "{ms:?}");
    assert!(!held(&m, dm_conv));
    asking.abort();

    // Ben gives the blob a false size in the group; Carol joins.
    let lie = attach(
        &b,
        group,
        Attachment {
            size: genuine.size + 1,
            ..genuine.clone()
        },
    )
    .await;
    let c = start_node(&carol, dc.path(), vec![a.addr.clone(), b.addr.clone()]).await;
    holds(&c, group, lie).await;
    // Carol opens the lie: the holders answer NotHeld to it (the size it
    // names is not the size they hold), and none of them is cut.
    let before = a.handle.stats().await.expect("stats").blobs.not_held
        + b.handle.stats().await.expect("stats").blobs.not_held;
    let ch = c.handle.clone();
    let opening = tokio::spawn(async move { ch.fetch(group, lie, hash).await });
    wait_until("the holders to refuse the false size", || async {
        a.handle.stats().await.expect("stats").blobs.not_held
            + b.handle.stats().await.expect("stats").blobs.not_held
            >= before + 2
    })
    .await;
    opening.abort();
    let cs = c.handle.stats().await.expect("stats").blobs;
    assert_eq!(
        (cs.cut, cs.chunks_in),
        (0, 0),
        "no honest holder is cut: {cs:?}"
    );
    // The genuine message's blob still comes whole.
    let r = c.handle.fetch(group, msg, hash).await.expect("the loop");
    assert!(r.expect("the genuine one is fetched").complete());
    let cs = c.handle.stats().await.expect("stats").blobs;
    assert_eq!(cs.cut, 0, "no honest holder is cut: {cs:?}");
    let bytes = c
        .handle
        .blobs()
        .read_range(&Key::new(group, hash), 0, genuine.size)
        .expect("held");
    assert_eq!(BlobHash::of(&bytes), hash);
    for n in [a, b, c, m] {
        n.stop().await;
    }
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("a temporary directory")
}
