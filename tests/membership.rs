//! No leak: devices that are not members of a conversation, or hold no
//! valid certificate (none, expired, revoked, another team's, another
//! device's), receive no conversation bytes, and none of them learns who we
//! are (name, member id, roles, team name: only a pass, sync.md §2).
//! Authenticity (forged, altered, impersonating messages) is in
//! `authenticity.rs`.

mod common;

use common::{request, Mesh, DAY, T0};
use huddle::crypto::{AuthorityKey, DeviceKey};
use huddle::membership::Certificate;
use huddle::membership::{Revocation, RevocationTarget};
use huddle::node::{Command, Event, Input, Output, Timer};
use huddle::wire::{Frame, Reason, PROTOCOL_VERSION};
use huddle::{ConversationId, ConversationKind, MemberId, Reply};

fn create(mesh: &mut Mesh, dev: usize, kind: ConversationKind) -> ConversationId {
    match mesh.command(dev, Command::CreateConversation { kind }) {
        Ok(Reply::Conversation(id)) => id,
        other => panic!("create failed: {other:?}"),
    }
}

fn send(mesh: &mut Mesh, dev: usize, conv: ConversationId, body: &str) {
    mesh.send_text(dev, conv, body);
}

/// Frames a device received, decoded.
fn frames(mesh: &Mesh, dev: usize) -> Vec<Frame> {
    mesh.devices[dev]
        .received
        .iter()
        .map(|b| Frame::decode(b).expect("honest nodes send valid frames"))
        .collect()
}

/// Asserts a device received nothing but hellos, refusals and its own
/// revocation.
fn assert_only_handshake(mesh: &Mesh, dev: usize) {
    // (It may have hung up before even our hello arrived.)
    for f in frames(mesh, dev) {
        assert!(
            mesh.is_handshake(dev, &f),
            "device {dev} received more than a handshake: {f:?}"
        );
    }
    assert_eq!(mesh.devices[dev].node.conversation_ids().count(), 0);
}

/// Did `dev` refuse a peer for `reason`, or get refused for it (whichever
/// side checked the other's hello first)?
fn refused_with(mesh: &Mesh, dev: usize, reason: Reason) -> bool {
    mesh.devices[dev]
        .events
        .iter()
        .any(|e| matches!(e, Event::PeerRefused { reason: r, .. } if *r == reason))
}

/// A small ward: a nurse (0) and a physician (1) with a group and a role
/// channel holding messages.
fn ward() -> (Mesh, ConversationId, ConversationId) {
    let mut mesh = Mesh::new(7);
    let a = mesh.add_member("Ana Silva", &["nurse"]);
    let b = mesh.add_member("Ben Okafor", &["physician", "nurse"]);
    mesh.connect(a, b);
    let members = [mesh.devices[a].member(), mesh.devices[b].member()].into();
    let group = create(
        &mut mesh,
        a,
        ConversationKind::Group {
            title: "Sepsis review".into(),
            members,
        },
    );
    let channel = create(
        &mut mesh,
        a,
        ConversationKind::Role {
            role: "nurse".into(),
        },
    );
    mesh.run_until_quiet();
    send(&mut mesh, a, group, "Bed 4: lactate 4.1, starting bundle");
    send(&mut mesh, b, channel, "Handover at 07:00");
    mesh.run_until_quiet();
    assert_eq!(mesh.devices[b].node.conversation(&group).unwrap().len(), 1);
    (mesh, group, channel)
}

/// The byte strings that say who `cert`'s holder is.
fn identity_bytes(cert: &Certificate) -> Vec<(String, Vec<u8>)> {
    let mut v = vec![
        (
            "display name".to_owned(),
            cert.display_name.as_bytes().to_vec(),
        ),
        ("member id".to_owned(), cert.member.0.to_vec()),
        ("team name".to_owned(), cert.team_name.as_bytes().to_vec()),
    ];
    for r in &cert.roles {
        v.push((format!("role {r}"), r.as_bytes().to_vec()));
    }
    v
}

/// Panics if any frame in `frames` holds any byte string naming `cert`'s holder.
fn assert_no_identity(frames: &[Vec<u8>], cert: &Certificate, to: &str) {
    for (what, needle) in identity_bytes(cert) {
        for f in frames {
            assert!(
                !f.windows(needle.len()).any(|w| w == needle.as_slice()),
                "{to} received {}'s {what}",
                cert.display_name
            );
        }
    }
}

/// Everything Ana's node (device 0) sends a device holding `cert` that
/// connects, sends its hello and then its identify (as a hostile peer may,
/// whatever it was told), until the hello timer fires. Driven by hand, so a
/// frame in flight when a side hangs up still counts.
fn sent_by_ana(mesh: &mut Mesh, cert: &Certificate) -> Vec<Vec<u8>> {
    let peer = cert.device;
    let now = mesh.now;
    let node = &mut mesh.devices[0].node;
    let mut out = node.handle(now, Input::PeerConnected { peer });
    for f in [
        Frame::Hello {
            version: PROTOCOL_VERSION,
            pass: cert.pass(),
        },
        Frame::Identify {
            secret: cert.secret(),
        },
    ] {
        out.extend(node.handle(
            now,
            Input::Frame {
                peer,
                bytes: f.encode(),
            },
        ));
    }
    out.extend(node.handle(now + 60_000, Input::Timer(Timer::Hello(peer))));
    node.handle(now, Input::PeerDisconnected { peer });
    out.into_iter()
        .filter_map(|o| match o {
            Output::Send { peer: p, frame, .. } if p == peer => Some(frame),
            _ => None,
        })
        .collect()
}

/// Hole 7 (issue 18): our hello told strangers who we are. A device that
/// speaks no huddle (or is a fake listener we dialled), one holding another
/// team's certificate, and a revoked member's device all connect to Ana:
/// none of the bytes Ana sends them names her (or anyone), while two
/// members still meet and sync.
#[test]
fn strangers_other_teams_and_revoked_members_never_learn_who_we_are() {
    let (mut mesh, group, _) = ward();
    let ana = mesh.devices[0].cert.clone().expect("member");
    let ben = mesh.devices[1].cert.clone().expect("member");
    let now = mesh.now;

    // A stranger that says nothing (or a fake listener we dialled after its
    // mDNS advert): everything Ana sends it until the hello timer fires.
    let stranger = DeviceKey::generate(&mut mesh.rng).device_id();
    let node = &mut mesh.devices[0].node;
    let mut out = node.handle(now, Input::PeerConnected { peer: stranger });
    out.extend(node.handle(now + 60_000, Input::Timer(Timer::Hello(stranger))));
    let to_stranger: Vec<Vec<u8>> = out
        .into_iter()
        .filter_map(|o| match o {
            Output::Send { peer, frame, .. } if peer == stranger => Some(frame),
            _ => None,
        })
        .collect();
    assert!(!to_stranger.is_empty(), "Ana spoke first");

    // Another team's member.
    let other = AuthorityKey::generate(&mut mesh.rng);
    let key = DeviceKey::generate(&mut mesh.rng);
    let cert = request("Olu Other", &["nurse"], key.device_id(), MemberId([8; 16]))
        .sign(&other)
        .unwrap();
    let o = mesh.add_device(key, Some(cert));

    // A member revoked as a member (its device was never named).
    let key = DeviceKey::generate(&mut mesh.rng);
    let rui = MemberId([0x52; 16]);
    let cert = request("Rui Gone", &["nurse"], key.device_id(), rui)
        .sign(&mesh.authority)
        .unwrap();
    let revocation = Revocation::sign(&mesh.authority, RevocationTarget::Member(rui), now);
    mesh.command(0, Command::Revoke(revocation))
        .expect("revoke");
    mesh.run_until_quiet();
    let r = mesh.add_device(key, Some(cert));

    mesh.connect(0, o);
    mesh.connect(0, r);
    mesh.run_until_quiet();
    for (dev, to) in [(o, "another team's device"), (r, "a revoked member")] {
        assert!(
            !mesh.devices[dev].received.is_empty(),
            "{to} received Ana's hello"
        );
        assert_no_identity(&mesh.devices[dev].received, &ana, to);
        assert_no_identity(&mesh.devices[dev].received, &ben, to);
        // And by hand, counting what a hang-up leaves in flight.
        mesh.links.remove(&(0, dev));
        let cert = mesh.devices[dev].cert.clone().expect("a certificate");
        let sent = sent_by_ana(&mut mesh, &cert);
        assert!(!sent.is_empty(), "Ana spoke first");
        assert_no_identity(&sent, &ana, to);
    }
    assert_no_identity(&to_stranger, &ana, "a stranger");
    assert!(refused_with(&mesh, 0, Reason::Revoked));

    // Members still meet and sync.
    send(&mut mesh, 0, group, "after the strangers");
    mesh.run_until_quiet();
    assert_eq!(mesh.devices[1].node.conversation(&group).unwrap().len(), 2);
}

/// A member revoked as a member, on a device never named in a revocation:
/// its pass's member tag gives it away, so it gets our pass and a refusal,
/// never our identify.
#[test]
fn a_revoked_member_gets_only_the_pass() {
    let (mut mesh, _, _) = ward();
    let key = DeviceKey::generate(&mut mesh.rng);
    let rui = MemberId([0x52; 16]);
    let cert = request("Rui Gone", &["nurse"], key.device_id(), rui)
        .sign(&mesh.authority)
        .unwrap();
    let revocation = Revocation::sign(&mesh.authority, RevocationTarget::Member(rui), mesh.now);
    mesh.command(0, Command::Revoke(revocation))
        .expect("revoke");
    mesh.run_until_quiet();
    let sent = sent_by_ana(&mut mesh, &cert);
    let sent: Vec<Frame> = sent.iter().map(|f| Frame::decode(f).unwrap()).collect();
    assert!(
        matches!(
            sent.as_slice(),
            [
                Frame::Hello { .. },
                Frame::Revoked { revocation },
                Frame::Refuse {
                    reason: Reason::Revoked
                }
            ] if revocation.target == RevocationTarget::Member(rui)
        ),
        "only our pass, Rui's own revocation and a refusal: {sent:?}"
    );
    let r = mesh.add_device(key, Some(cert));
    mesh.connect(0, r);
    mesh.run_until_quiet();
    assert_only_handshake(&mesh, r);
    assert!(refused_with(&mesh, 0, Reason::Revoked));
    assert!(!mesh.devices[0]
        .events
        .iter()
        .any(|e| matches!(e, Event::PeerJoined { member, .. } if *member == rui)));
}

/// An identify before our acceptance of the sender's hello, or a second
/// one, is refused (ProtocolViolation) and makes no member.
#[test]
fn an_identify_out_of_order_or_twice_is_refused() {
    let mut mesh = Mesh::new(12);
    let a = mesh.add_member("Ana Silva", &["nurse"]);
    let key = DeviceKey::generate(&mut mesh.rng);
    let cert = request(
        "Ben Okafor",
        &["nurse"],
        key.device_id(),
        MemberId([0x42; 16]),
    )
    .sign(&mesh.authority)
    .unwrap();
    let ben = key.device_id();
    let hello = Frame::Hello {
        version: PROTOCOL_VERSION,
        pass: cert.pass(),
    }
    .encode();
    let identify = Frame::Identify {
        secret: cert.secret(),
    }
    .encode();
    let now = mesh.now;
    let node = &mut mesh.devices[a].node;
    let refused = |out: &[Output]| {
        out.iter().any(|o| {
            matches!(o, Output::Send { frame, .. }
                if Frame::decode(frame) == Ok(Frame::Refuse { reason: Reason::ProtocolViolation }))
        }) && out
            .iter()
            .any(|o| matches!(o, Output::Disconnect { peer, .. } if *peer == ben))
    };
    let joined = |out: &[Output]| {
        out.iter()
            .any(|o| matches!(o, Output::Emit(Event::PeerJoined { .. })))
    };
    for (name, frames) in [
        ("identify before hello", vec![identify.clone()]),
        (
            "identify twice",
            vec![hello.clone(), identify.clone(), identify.clone()],
        ),
    ] {
        node.handle(now, Input::PeerConnected { peer: ben });
        let mut outs = Vec::new();
        for f in frames {
            outs.push(node.handle(
                now,
                Input::Frame {
                    peer: ben,
                    bytes: f,
                },
            ));
        }
        let last = outs.pop().expect("a frame");
        assert!(refused(&last), "{name}: refused");
        assert!(!joined(&last), "{name}: no member made");
        node.handle(now, Input::PeerDisconnected { peer: ben });
    }
}

#[test]
fn a_member_outside_a_conversation_never_receives_it() {
    let (mut mesh, group, channel) = ward();
    // A porter: a valid team member, neither in the group nor a nurse.
    let c = mesh.add_member("Cai Porter", &["porter"]);
    mesh.connect(0, c);
    mesh.connect(1, c);
    send(&mut mesh, 0, group, "more patient detail");
    send(&mut mesh, 1, channel, "more channel detail");
    mesh.run_until_quiet();
    for f in frames(&mesh, c) {
        match f {
            Frame::Header { header } => panic!("porter received header of {}", header.id),
            Frame::Sync { doc, .. } => assert_eq!(
                doc,
                huddle::team::TEAM_DOC_ID,
                "porter received a conversation's sync"
            ),
            Frame::Catalog { entries, .. } => {
                assert!(
                    entries.iter().all(|e| e.doc == huddle::team::TEAM_DOC_ID),
                    "catalog named a conversation"
                )
            }
            _ => {}
        }
    }
    assert!(mesh.devices[c].node.conversation(&group).is_none());
    assert!(mesh.devices[c].node.conversation(&channel).is_none());
    // It did join the team and knows the directory: the gate is per conversation.
    assert!(mesh.devices[c].node.directory().count() >= 3);
}

#[test]
fn a_device_without_a_certificate_gets_nothing() {
    let (mut mesh, _, _) = ward();
    let key = DeviceKey::generate(&mut mesh.rng);
    let n = mesh.add_device(key, None);
    mesh.connect(0, n);
    mesh.run_until_quiet();
    assert_only_handshake(&mesh, n);
    assert!(!mesh.links.contains(&(0, n)), "the connection is closed");
}

#[test]
fn an_expired_certificate_gets_nothing() {
    let (mut mesh, _, _) = ward();
    let key = DeviceKey::generate(&mut mesh.rng);
    let mut req = request("Old Tablet", &["nurse"], key.device_id(), MemberId([9; 16]));
    req.issued = T0 - 100 * DAY;
    req.expires = T0 - DAY;
    let cert = req.sign(&mesh.authority).unwrap();
    let e = mesh.add_device(key, Some(cert));
    mesh.connect(0, e);
    mesh.run_until_quiet();
    assert_only_handshake(&mesh, e);
    assert!(refused_with(&mesh, 0, Reason::Expired));
}

#[test]
fn another_teams_certificate_gets_nothing() {
    let (mut mesh, _, _) = ward();
    let other = AuthorityKey::generate(&mut mesh.rng);
    let key = DeviceKey::generate(&mut mesh.rng);
    let cert = request("Stranger", &["nurse"], key.device_id(), MemberId([8; 16]))
        .sign(&other)
        .unwrap();
    let o = mesh.add_device(key, Some(cert));
    mesh.connect(0, o);
    mesh.run_until_quiet();
    assert_only_handshake(&mesh, o);
    assert!(refused_with(&mesh, 0, Reason::WrongTeam) || refused_with(&mesh, o, Reason::WrongTeam));
}

#[test]
fn a_certificate_for_another_device_gets_nothing() {
    let (mut mesh, _, _) = ward();
    // A stolen certificate: valid, but bound to someone else's key.
    let stolen = mesh.devices[1].cert.clone();
    let key = DeviceKey::generate(&mut mesh.rng);
    let t = mesh.add_device(key, stolen);
    mesh.connect(0, t);
    mesh.run_until_quiet();
    assert_only_handshake(&mesh, t);
    assert!(refused_with(&mesh, 0, Reason::WrongDevice));
}

#[test]
fn a_revoked_device_is_cut_off_and_the_revocation_spreads() {
    let (mut mesh, group, _) = ward();
    let r = mesh.add_member("Lost Phone", &["nurse"]);
    let c = mesh.add_member("Cara Lee", &["nurse"]);
    mesh.connect(0, r);
    mesh.connect(0, c);
    mesh.run_until_quiet();
    let revocation = Revocation::sign(
        &mesh.authority,
        RevocationTarget::Device(mesh.devices[r].id()),
        mesh.now,
    );
    mesh.command(0, Command::Revoke(revocation))
        .expect("revoke");
    mesh.run_until_quiet();
    assert!(
        !mesh.links.contains(&(0, r)),
        "the revoked device was disconnected"
    );
    assert!(refused_with(&mesh, 0, Reason::Revoked));
    // Cara learned the revocation from the team document and refuses too.
    mesh.devices[r].received.clear();
    mesh.connect(c, r);
    mesh.run_until_quiet();
    assert!(refused_with(&mesh, c, Reason::Revoked));
    let after: Vec<Frame> = frames(&mesh, r);
    assert!(after.iter().all(|f| mesh.is_handshake(r, f)), "{after:?}");
    // And new messages never reach it.
    send(&mut mesh, 0, group, "after revocation");
    mesh.connect(0, r);
    mesh.run_until_quiet();
    assert!(mesh.devices[r].node.conversation(&group).is_none());
}

#[test]
fn garbage_and_protocol_violations_disconnect_without_harm() {
    let (mut mesh, group, _) = ward();
    let key = DeviceKey::generate(&mut mesh.rng);
    let attacker = key.device_id();
    let node = &mut mesh.devices[0].node;
    let now = mesh.now;
    for bytes in [
        vec![],
        vec![0xff; 10],
        vec![5, 1, 2],                            // truncated sync
        vec![3, 1, 0xff, 0xff, 0xff, 0xff, 0x0f], // absurd catalog count
        Frame::Sync {
            doc: group.0,
            more: false,
            data: vec![1, 2, 3],
        }
        .encode(), // before hello
        vec![0u8; huddle::wire::MAX_FRAME_LEN + 1],
    ] {
        let out = node.handle(now, Input::PeerConnected { peer: attacker });
        assert!(out.iter().any(|o| matches!(o, Output::Send { .. })));
        let out = node.handle(
            now,
            Input::Frame {
                peer: attacker,
                bytes,
            },
        );
        assert!(
            out.iter()
                .any(|o| matches!(o, Output::Disconnect { peer, .. } if *peer == attacker)),
            "garbage must end the session"
        );
        assert!(out.iter().all(|o| !matches!(o, Output::Persist(_))));
    }
    // Everyone else is unaffected.
    send(&mut mesh, 1, group, "still here");
    mesh.run_until_quiet();
    assert_eq!(mesh.devices[0].node.conversation(&group).unwrap().len(), 2);
}
