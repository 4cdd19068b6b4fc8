//! The membership gate over a real network: a device with no certificate,
//! an expired one, a revoked one or another team's connects to an honest
//! node that holds a conversation it would be admitted to. It must receive
//! no conversation at all, and the honest node must drop it for the right
//! reason.
#![cfg(feature = "net")]

#[path = "net_common.rs"]
mod common;

use common::*;
use huddle::membership::{Revocation, RevocationTarget};
use huddle::wire::Reason;
use huddle::{Command, ConversationKind, DeviceId, Event, Priority, Reply};

/// The honest node: a nurse with a nurses' channel holding one message.
async fn honest(team: &Team, dir: &std::path::Path) -> TestNode {
    let ana = team.member(100, "Ana", &["nurse"]);
    let h = start_node(&ana, dir, vec![]).await;
    let reply = h
        .handle
        .command(Command::CreateConversation {
            kind: ConversationKind::Role {
                role: "nurse".into(),
            },
        })
        .await
        .expect("create");
    let Reply::Conversation(id) = reply else {
        panic!("unexpected reply {reply:?}")
    };
    h.handle
        .command(Command::Send {
            conversation: id,
            body: "patient in bed 4 is allergic to penicillin".into(),
            priority: Priority::Urgent,
            reply_to: None,
            fields: Default::default(),
        })
        .await
        .expect("send");
    h
}

/// Starts `intruder` dialling `h`, waits for `h` to drop it with `reason`
/// (refused by us, unless the intruder refused itself first), then checks
/// that the intruder holds no conversation and never joined.
async fn assert_shut_out(h: &TestNode, intruder: &Identity, reason: Reason, by_us: bool) {
    let mut events = h.handle.subscribe();
    let dir = tempfile::tempdir().expect("tempdir");
    let x = start_node(intruder, dir.path(), vec![h.addr.clone()]).await;
    let device: DeviceId = intruder.key.device_id();
    let seen = tokio::time::timeout(DEADLINE, async {
        loop {
            match events.recv().await {
                Ok(Event::PeerRefused {
                    peer,
                    reason: r,
                    by_us: b,
                }) if peer == device => return (r, b),
                Ok(Event::PeerJoined { peer, .. }) if peer == device => {
                    panic!("the honest node accepted the intruder")
                }
                Ok(_) => {}
                Err(e) => panic!("event stream ended: {e}"),
            }
        }
    })
    .await
    .expect("the honest node dropped the intruder in time");
    assert_eq!(seen, (reason, by_us));
    let held = x
        .handle
        .query(|n| n.conversation_ids().count())
        .await
        .expect("query");
    assert_eq!(held, 0, "the intruder received a conversation");
    assert_eq!(h.verified_peers().await, 0);
    x.stop().await;
}

#[tokio::test]
async fn a_device_without_a_certificate_gets_nothing() {
    let team = Team::new(40);
    let dir = tempfile::tempdir().unwrap();
    let h = honest(&team, dir.path()).await;
    // It cannot prove anything, so its own node says so at once; the honest
    // node records the refusal and drops it.
    assert_shut_out(&h, &loner(41), Reason::NotAMember, false).await;
    h.stop().await;
}

#[tokio::test]
async fn an_expired_certificate_is_refused() {
    let team = Team::new(42);
    let dir = tempfile::tempdir().unwrap();
    let h = honest(&team, dir.path()).await;
    let old = team.member_until(43, "Old", &["nurse"], now_ms() - DAY);
    assert_shut_out(&h, &old, Reason::Expired, true).await;
    h.stop().await;
}

#[tokio::test]
async fn a_revoked_device_is_refused() {
    let team = Team::new(44);
    let dir = tempfile::tempdir().unwrap();
    let h = honest(&team, dir.path()).await;
    let lost = team.member(45, "Lost tablet", &["nurse"]);
    let revocation = Revocation::sign(
        &team.authority,
        RevocationTarget::Device(lost.key.device_id()),
        now_ms(),
    );
    h.handle
        .command(Command::Revoke(revocation))
        .await
        .expect("revoke");
    assert_shut_out(&h, &lost, Reason::Revoked, true).await;
    h.stop().await;
}

#[tokio::test]
async fn another_teams_device_is_refused() {
    let team = Team::new(46);
    let other = Team::new(47);
    let dir = tempfile::tempdir().unwrap();
    let h = honest(&team, dir.path()).await;
    let stranger = other.member(48, "Stranger", &["nurse"]);
    assert_shut_out(&h, &stranger, Reason::WrongTeam, true).await;
    h.stop().await;
}
