//! The shell end to end on loopback: nodes converge on direct, group and
//! role conversations; a message is pushed live; a node that was stopped
//! catches up when it starts again from the same data directory.
#![cfg(feature = "net")]

#[path = "net_common.rs"]
mod common;

use std::collections::BTreeSet;

use common::*;
use huddle::{
    Command, ConversationId, ConversationKind, DeviceId, Event, MemberId, Priority, Reply,
};
use libp2p::identity::Keypair;
use libp2p::PeerId;

fn send(conversation: ConversationId, body: &str) -> Command {
    Command::Send {
        conversation,
        body: body.into(),
        priority: Priority::Routine,
        reply_to: None,
        fields: Default::default(),
    }
}

async fn create(node: &TestNode, kind: ConversationKind) -> ConversationId {
    match node
        .handle
        .command(Command::CreateConversation { kind })
        .await
        .expect("create conversation")
    {
        Reply::Conversation(id) => id,
        other => panic!("unexpected reply {other:?}"),
    }
}

/// `huddle::node::commands::direct_conversation_id`, which the crate does
/// not export: SHA-256 of a domain tag and the two member ids, lower first.
fn direct_conversation_id(a: MemberId, b: MemberId) -> ConversationId {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let h = huddle::crypto::sha256(&[b"huddle/direct/v1", &lo.0, &hi.0]);
    ConversationId(h[..16].try_into().expect("16 bytes"))
}

#[test]
fn device_id_text_is_the_libp2p_peer_id() {
    for seed in 0..8u64 {
        let key = huddle::crypto::DeviceKey::generate(&mut rng(seed));
        let kp = Keypair::ed25519_from_bytes(key.secret()).expect("ed25519 secret");
        let peer = PeerId::from(kp.public());
        let device = DeviceId::from_peer_id_bytes(&peer.to_bytes()).expect("ed25519 peer id");
        assert_eq!(device, key.device_id());
        assert_eq!(device.to_string(), peer.to_string());
        assert_eq!(
            device.peer_id_bytes().as_slice(),
            peer.to_bytes().as_slice()
        );
    }
    let not_ed25519 = PeerId::random();
    assert_eq!(DeviceId::from_peer_id_bytes(&not_ed25519.to_bytes()), None);
}

#[tokio::test]
async fn three_nodes_converge_on_direct_group_and_role_conversations() {
    let team = Team::new(1);
    let ana = team.member(10, "Ana", &["nurse"]);
    let ben = team.member(11, "Ben", &["nurse"]);
    let cai = team.member(12, "Cai", &["physician"]);
    let dirs: Vec<_> = (0..3)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();

    let a = start_node(&ana, dirs[0].path(), vec![]).await;
    let b = start_node(&ben, dirs[1].path(), vec![a.addr.clone()]).await;
    let c = start_node(&cai, dirs[2].path(), vec![a.addr.clone(), b.addr.clone()]).await;
    for (name, n) in [("a", &a), ("b", &b), ("c", &c)] {
        wait_until(&format!("{name} to see two verified peers"), || async {
            n.verified_peers().await == 2
        })
        .await;
    }

    // Direct, between Ana and Ben: its id is fixed by the two members.
    let direct = create(
        &a,
        ConversationKind::Direct {
            members: [ana.member, ben.member],
        },
    )
    .await;
    assert_eq!(direct, direct_conversation_id(ana.member, ben.member));
    a.handle
        .command(send(direct, "bed 4 needs a review"))
        .await
        .unwrap();

    // A group of Ana and Cai.
    let group = create(
        &a,
        ConversationKind::Group {
            title: "Ward round".into(),
            members: BTreeSet::from([ana.member, cai.member]),
        },
    )
    .await;
    a.handle.command(send(group, "round at 10")).await.unwrap();

    // The nurses' role channel, opened by Ben.
    let nurses = create(
        &b,
        ConversationKind::Role {
            role: "nurse".into(),
        },
    )
    .await;
    b.handle
        .command(send(nurses, "handover in 5"))
        .await
        .unwrap();

    // Replies from the other side of each conversation.
    wait_until("b to receive the direct", || b.has(direct)).await;
    b.handle.command(send(direct, "on my way")).await.unwrap();
    wait_until("c to receive the group", || c.has(group)).await;
    c.handle
        .command(send(group, "I'll be there"))
        .await
        .unwrap();
    wait_until("a to receive the role channel", || a.has(nurses)).await;
    a.handle.command(send(nurses, "ok")).await.unwrap();

    let expect = |v: &[&str]| -> Option<Vec<String>> {
        let mut v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
        v.sort();
        Some(v)
    };
    let sorted = |h: Option<Vec<String>>| {
        h.map(|mut v| {
            v.sort();
            v
        })
    };
    for (conv, members, bodies) in [
        (direct, vec![&a, &b], ["bed 4 needs a review", "on my way"]),
        (group, vec![&a, &c], ["round at 10", "I'll be there"]),
        (nurses, vec![&a, &b], ["handover in 5", "ok"]),
    ] {
        for n in &members {
            wait_until("every member to hold both messages", || async {
                sorted(n.bodies(conv).await) == expect(&bodies)
            })
            .await;
        }
        // Same history, same order, on every member device.
        let first = members[0].bodies(conv).await;
        for n in &members[1..] {
            assert_eq!(n.bodies(conv).await, first);
        }
    }
    // Non-members never got them.
    assert!(!c.has(direct).await, "Cai is not in Ana and Ben's direct");
    assert!(!b.has(group).await, "Ben is not in the group");
    assert!(!c.has(nurses).await, "Cai is not a nurse");

    for n in [a, b, c] {
        n.stop().await;
    }
}

#[tokio::test]
async fn a_message_is_pushed_live() {
    let team = Team::new(2);
    let ana = team.member(20, "Ana", &[]);
    let ben = team.member(21, "Ben", &[]);
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = start_node(&ana, da.path(), vec![]).await;
    let b = start_node(&ben, db.path(), vec![a.addr.clone()]).await;
    wait_until("a and b to verify each other", || async {
        a.verified_peers().await == 1 && b.verified_peers().await == 1
    })
    .await;

    let mut events = b.handle.subscribe();
    let direct = create(
        &a,
        ConversationKind::Direct {
            members: [ana.member, ben.member],
        },
    )
    .await;
    let sent = match a
        .handle
        .command(send(direct, "urgent: call me"))
        .await
        .unwrap()
    {
        Reply::Message(id) => id,
        other => panic!("unexpected reply {other:?}"),
    };

    // No polling: B's event stream announces the message.
    let arrived = tokio::time::timeout(DEADLINE, async {
        loop {
            match events.recv().await {
                Ok(Event::MessageAdded {
                    conversation,
                    message,
                    local: false,
                    ..
                }) if conversation == direct && message == sent => return,
                Ok(_) => {}
                Err(e) => panic!("event stream ended: {e}"),
            }
        }
    })
    .await;
    assert!(
        arrived.is_ok(),
        "the message did not reach B within {DEADLINE:?}"
    );
    assert_eq!(b.bodies(direct).await, Some(vec!["urgent: call me".into()]));
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_restarted_node_catches_up() {
    let team = Team::new(3);
    let ana = team.member(30, "Ana", &[]);
    let ben = team.member(31, "Ben", &[]);
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = start_node(&ana, da.path(), vec![]).await;
    let b = start_node(&ben, db.path(), vec![a.addr.clone()]).await;
    let direct = create(
        &a,
        ConversationKind::Direct {
            members: [ana.member, ben.member],
        },
    )
    .await;
    a.handle.command(send(direct, "before")).await.unwrap();
    wait_until("b to receive the first message", || async {
        b.bodies(direct).await.is_some_and(|h| h.len() == 1)
    })
    .await;

    // B goes away; A writes while it is gone.
    b.stop().await;
    wait_until("a to notice b left", || async {
        a.verified_peers().await == 0
    })
    .await;
    for body in ["during 1", "during 2"] {
        a.handle.command(send(direct, body)).await.unwrap();
    }

    // B starts again from the same data directory and catches up.
    let b = start_node(&ben, db.path(), vec![a.addr.clone()]).await;
    assert_eq!(
        b.bodies(direct).await,
        Some(vec!["before".to_string()]),
        "what B had before survived the restart"
    );
    wait_until("b to catch up", || async {
        b.bodies(direct).await.is_some_and(|h| h.len() == 3)
    })
    .await;
    assert_eq!(b.bodies(direct).await, a.bodies(direct).await);
    a.stop().await;
    b.stop().await;
}
