//! Remembered peers (protocol/storage.md §2.2): with mDNS off, a node
//! whose peer restarted on a new port, or that restarted itself, finds the
//! peer again from what it remembers; a device the team has revoked since
//! is not dialled from memory.
#![cfg(feature = "net")]

#[path = "net_common.rs"]
mod common;

use common::*;
use huddle::membership::{Revocation, RevocationTarget};
use huddle::Command;

/// Starts Ana's node, then Ben's dialling it, and waits until each has
/// proved membership to the other and remembers where it reached it.
async fn pair(
    team: &Team,
    da: &std::path::Path,
    db: &std::path::Path,
) -> (Identity, TestNode, Identity, TestNode) {
    let ana = team.member(40, "Ana", &[]);
    let ben = team.member(41, "Ben", &[]);
    let a = start_node(&ana, da, vec![]).await;
    let b = start_node(&ben, db, vec![a.addr.clone()]).await;
    for (n, what) in [(&a, "ana to remember ben"), (&b, "ben to remember ana")] {
        wait_until(what, || async {
            n.verified_peers().await == 1 && n.handle.reach().await.expect("reach").remembered == 1
        })
        .await;
    }
    (ana, a, ben, b)
}

#[tokio::test]
async fn a_node_restarted_on_a_new_port_finds_the_peer_it_remembers() {
    let team = Team::new(4);
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (ana, a, ben, b) = pair(&team, da.path(), db.path()).await;
    let old = a.addr.clone();
    a.stop().await;
    // Ana comes back on another port with no `--peer`: Ben's `--peer`
    // address is dead, so only Ana's memory can bring them together.
    let a = start_node(&ana, da.path(), vec![]).await;
    assert_ne!(a.addr, old, "a new port");
    let reach = a.handle.reach().await.unwrap();
    assert!(!reach.mdns);
    // Ben's address, as announced, is his listen address and peer id.
    assert!(
        reach
            .dialling
            .iter()
            .any(|d| b.addr.to_string().starts_with(&format!("{d}/p2p/"))),
        "ana dials where she reached ben: {:?} (ben listens on {})",
        reach.dialling,
        b.addr
    );
    for (n, what) in [(&a, "ana to find ben again"), (&b, "ben to see ana again")] {
        wait_until(what, || async { n.verified_peers().await == 1 }).await;
    }
    // Ben is revoked while Ana runs: she stops dialling him from memory.
    let revocation = Revocation::sign(
        &team.authority,
        RevocationTarget::Device(ben.key.device_id()),
        now_ms(),
    );
    a.handle.command(Command::Revoke(revocation)).await.unwrap();
    wait_until("ana to stop dialling the revoked ben", || async {
        a.handle.reach().await.unwrap().dialling.is_empty()
    })
    .await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_revoked_device_is_not_dialled_from_memory() {
    let team = Team::new(5);
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (ana, a, ben, b) = pair(&team, da.path(), db.path()).await;
    b.stop().await;
    let revocation = Revocation::sign(
        &team.authority,
        RevocationTarget::Device(ben.key.device_id()),
        now_ms(),
    );
    a.handle.command(Command::Revoke(revocation)).await.unwrap();
    a.stop().await;
    let a = start_node(&ana, da.path(), vec![]).await;
    let reach = a.handle.reach().await.unwrap();
    assert_eq!(reach.remembered, 1, "still remembered");
    assert!(
        reach.dialling.is_empty(),
        "but not dialled: {:?}",
        reach.dialling
    );
    a.stop().await;
}
