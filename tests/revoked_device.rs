//! A revoked device is told (issue 20, item 8): refused at its next hello,
//! before it can sync the team document that holds its revocation, it is
//! shown the signed revocation first (sync.md §2.1) and keeps it, so its
//! user sees it; a revocation shown that is not the device's own, or not
//! the team's, is a protocol violation.

mod common;

use std::collections::VecDeque;

use common::Mesh;
use huddle::crypto::{AuthorityKey, DeviceKey};
use huddle::membership::{Revocation, RevocationTarget};
use huddle::node::{Command, Event, Input, Output};
use huddle::store::{keys, Store};
use huddle::wire::{Frame, Reason};

/// Ana (0) and Ben (1) with a group conversation.
fn ward() -> (Mesh, huddle::ConversationId) {
    let mut mesh = Mesh::new(41);
    let ana = mesh.add_member("Ana Silva", &["nurse"]);
    let ben = mesh.add_member("Ben Okafor", &["physician"]);
    mesh.connect(ana, ben);
    mesh.run_until_quiet();
    let group = common::group_of(&mut mesh, ana, &[ana, ben], "Bay 2");
    mesh.send_text(ana, group, "obs due");
    mesh.run_until_quiet();
    (mesh, group)
}

/// Issue 20, item 8: a device revoked while away is refused at its next
/// hello, before it can sync the team document that holds the revocation.
/// The refusing node shows it the signed revocation first, so it learns it
/// (kept, reported, and shown to its user) though it receives nothing else.
#[test]
fn a_revoked_device_learns_its_revocation_from_the_refusal() {
    let (mut mesh, group) = ward();
    let r = mesh.add_member("Lost Phone", &["nurse"]);
    mesh.connect(0, r);
    mesh.run_until_quiet();
    mesh.disconnect(0, r);
    let rev = Revocation::sign(
        &mesh.authority,
        RevocationTarget::Device(mesh.devices[r].id()),
        mesh.now,
    );
    mesh.command(0, Command::Revoke(rev.clone()))
        .expect("revoke");
    mesh.run_until_quiet();
    let (id, member) = (mesh.devices[r].id(), mesh.devices[r].member());
    assert!(!mesh.devices[r].node.is_revoked(&id, &member));
    let received = meet_draining(&mut mesh, 0, r);
    assert!(
        received.iter().all(|f| mesh.is_handshake(r, f)),
        "{received:?}"
    );
    let d = &mesh.devices[r];
    assert!(d.node.is_revoked(&id, &member), "it learnt it");
    assert!(d
        .events
        .iter()
        .any(|e| matches!(e, Event::Revoked { target } if *target == rev.target)));
    assert_eq!(
        d.store.get(&keys::revocation(&rev.key())).unwrap(),
        Some(rev.encode()),
        "and keeps it"
    );
    assert!(mesh.devices[r].node.conversation(&group).is_none());
}

/// Devices `a` and `b` connect and exchange frames until neither sends
/// more, every frame sent before a disconnect still delivered (as the
/// shell drains a queue before it closes; the mesh's links drop what is in
/// flight). Returns the frames `b` received.
fn meet_draining(mesh: &mut Mesh, a: usize, b: usize) -> Vec<Frame> {
    let now = mesh.now;
    let mut flight = VecDeque::new();
    let mut received = Vec::new();
    for (i, j) in [(a, b), (b, a)] {
        let peer = mesh.devices[j].id();
        let out = mesh.devices[i]
            .node
            .handle(now, Input::PeerConnected { peer });
        flight.extend(keep(mesh, i, out).into_iter().map(|f| (j, i, f)));
    }
    while let Some((to, from, bytes)) = flight.pop_front() {
        if to == b {
            received.push(Frame::decode(&bytes).expect("a valid frame"));
        }
        let peer = mesh.devices[from].id();
        let out = mesh.devices[to]
            .node
            .handle(now, Input::Frame { peer, bytes });
        flight.extend(keep(mesh, to, out).into_iter().map(|f| (from, to, f)));
    }
    received
}

/// Applies `out` to device `i`, except sends (returned) and disconnects.
fn keep(mesh: &mut Mesh, i: usize, out: Vec<Output>) -> Vec<Vec<u8>> {
    let mut sent = Vec::new();
    let mut rest = Vec::new();
    for o in out {
        match o {
            Output::Send { frame, .. } => sent.push(frame),
            Output::Disconnect { .. } => {}
            o => rest.push(o),
        }
    }
    mesh.apply(i, rest);
    sent
}

/// A `Revoked` frame that does not verify for our team, or names another
/// device, is a protocol violation: nothing is learnt.
#[test]
fn a_revocation_shown_that_is_not_ours_is_refused() {
    let (mut mesh, _) = ward();
    let other = DeviceKey::generate(&mut mesh.rng).device_id();
    let genuine = Revocation::sign(&mesh.authority, RevocationTarget::Device(other), mesh.now);
    let foreign = Revocation::sign(
        &AuthorityKey::generate(&mut mesh.rng),
        RevocationTarget::Device(mesh.devices[1].id()),
        mesh.now,
    );
    for (what, revocation) in [("another device's", genuine), ("another team's", foreign)] {
        let peer = mesh.devices[0].id();
        let now = mesh.now;
        let node = &mut mesh.devices[1].node;
        node.handle(now, Input::PeerDisconnected { peer });
        node.handle(now, Input::PeerConnected { peer });
        let out = node.handle(
            now,
            Input::Frame {
                peer,
                bytes: Frame::Revoked { revocation }.encode(),
            },
        );
        assert!(
            out.iter().any(|o| matches!(
                o,
                Output::Disconnect {
                    reason: Reason::ProtocolViolation,
                    ..
                }
            )),
            "{what}: {out:?}"
        );
        let (id, member) = (mesh.devices[1].id(), mesh.devices[1].member());
        assert!(!mesh.devices[1].node.is_revoked(&id, &member), "{what}");
        assert!(!mesh.devices[1].node.is_revoked(&other, &member), "{what}");
    }
}
