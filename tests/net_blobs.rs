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
use huddle::blobs::{Attachment, BlobHash};
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
    let conv = match a
        .handle
        .command(Command::CreateConversation {
            kind: ConversationKind::Role {
                role: "nurse".into(),
            },
        })
        .await
        .expect("create")
    {
        Reply::Conversation(id) => id,
        other => panic!("{other:?}"),
    };
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    let limit = huddle::blobs::DEFAULT_LIMIT;
    let hash = a.handle.blobs().put_own(&data, limit).expect("stored");
    let att = Attachment {
        hash,
        size: data.len() as u64,
        media_type: "application/pdf".into(),
        name: "discharge.pdf".into(),
        thumbnail: vec![],
    };
    let msg = match a
        .handle
        .command(Command::Send {
            conversation: conv,
            body: "Discharge letter".into(),
            priority: Priority::Routine,
            reply_to: None,
            fields: Fields {
                attachments: vec![att.clone()],
                ..Fields::default()
            },
        })
        .await
        .expect("send")
    {
        Reply::Message(id) => id,
        other => panic!("{other:?}"),
    };
    // A member fetches it (and the lost phone, still a member, could too).
    wait_until("Ben to hold the message", || async {
        b.handle
            .query(move |n| !n.attachments_of(&conv, &msg).is_empty())
            .await
            .unwrap_or(false)
    })
    .await;
    let got = b.handle.fetch(conv, msg, hash).await.expect("the loop");
    assert!(got.expect("fetched").complete());
    let bytes = b
        .handle
        .blobs()
        .read_range(&hash, 0, att.size)
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

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("a temporary directory")
}
