//! No leak, and authenticity: devices that are not members of a
//! conversation, or hold no valid certificate (none, expired, revoked,
//! another team's, another device's), receive no conversation bytes; a
//! forged, altered or impersonating message is never rendered as genuine.

mod common;

use common::{request, Mesh, DAY, T0};
use huddle::conversation::Conversation;
use huddle::crypto::{AuthorityKey, DeviceKey};
use huddle::membership::{Revocation, RevocationTarget};
use huddle::message::{Draft, Message, ReceiptKind};
use huddle::node::{Command, Event, Input, Output};
use huddle::store::Store;
use huddle::wire::{Frame, Reason, PROTOCOL_VERSION};
use huddle::{ConversationId, ConversationKind, MemberId, Priority, Reply};

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

/// Asserts a device received nothing but hellos and refusals.
fn assert_only_handshake(mesh: &Mesh, dev: usize) {
    // (It may have hung up before even our hello arrived.)
    for f in frames(mesh, dev) {
        assert!(
            matches!(f, Frame::Hello { .. } | Frame::Refuse { .. }),
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
    assert!(after
        .iter()
        .all(|f| matches!(f, Frame::Hello { .. } | Frame::Refuse { .. })));
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

/// A member who rewrites the document by hand: altered, garbage and
/// impersonating entries must never render as genuine.
#[test]
fn forged_altered_and_impersonating_messages_are_never_genuine() {
    let mut mesh = Mesh::new(11);
    let a = mesh.add_member("Ana Silva", &["nurse"]);
    // Mallory is a real member, but talks to Ana by hand.
    let m_key = DeviceKey::generate(&mut mesh.rng);
    let m_member = MemberId([0x4d; 16]);
    let m_cert = request("Mallory", &["nurse"], m_key.device_id(), m_member)
        .sign(&mesh.authority)
        .unwrap();
    let ana = mesh.devices[a].member();
    let group = create(
        &mut mesh,
        a,
        ConversationKind::Group {
            title: "Ward 7".into(),
            members: [ana, m_member].into(),
        },
    );
    send(&mut mesh, a, group, "Bed 4 needs review");
    let now = mesh.now;
    let m_id = m_key.device_id();
    let dev = &mut mesh.devices[a];
    let (node, store) = (&mut dev.node, &mut dev.store);

    // Handshake by hand.
    let mut to_m = node.handle(now, Input::PeerConnected { peer: m_id });
    let hello = Frame::Hello {
        version: PROTOCOL_VERSION,
        certificate: m_cert,
    };
    to_m.extend(node.handle(
        now,
        Input::Frame {
            peer: m_id,
            bytes: hello.encode(),
        },
    ));
    let catalog = Frame::Catalog {
        entries: vec![],
        last: true,
    };
    to_m.extend(node.handle(
        now,
        Input::Frame {
            peer: m_id,
            bytes: catalog.encode(),
        },
    ));

    let mut conv: Option<Conversation> = None;
    let mut state = automerge::sync::State::new();
    let actor = automerge::ActorId::from([0x4d; 16].as_slice());
    let mut rejected = 0;
    let mut pending = to_m;
    for round in 0..20 {
        let mut replies = Vec::new();
        for o in pending.drain(..) {
            match &o {
                Output::Emit(Event::Rejected { count, .. }) => rejected += count,
                Output::Persist(ops) => store.apply(ops).unwrap(),
                Output::Flush => store.flush().unwrap(),
                _ => {}
            }
            let Output::Send { frame, .. } = o else {
                continue;
            };
            match Frame::decode(&frame).unwrap() {
                Frame::Header { header } if header.id == group => {
                    conv = Some(Conversation::new(header, &actor))
                }
                Frame::Sync {
                    doc,
                    data,
                    more: false,
                } if doc == group.0 => {
                    let c = conv.as_mut().expect("header before sync");
                    c.receive_sync(&mut state, &data).unwrap();
                }
                _ => {}
            }
        }
        let c = conv.as_mut().expect("Ana shared the group with a member");
        if round == 1 {
            // Tamper: an altered copy of Ana's message, garbage, and a
            // message signed by Mallory's device claiming to be Ana.
            let original = c.messages().next().expect("Ana's message arrived").clone();
            let mut altered = original.clone();
            altered.body = "Bed 4 is fine, no review needed".into();
            c.replica_mut().insert(now, 0, altered.encode()).unwrap();
            c.replica_mut()
                .insert(now, 0, b"not a message".to_vec())
                .unwrap();
            let draft = |member, body: &str| Draft {
                author_member: member,
                hlc: huddle::hlc::Hlc::new(now, 7),
                priority: Priority::Routine,
                reply_to: None,
                body: body.into(),
            };
            let impostor = Message::sign(&m_key, &group, draft(ana, "Cancel the bundle - Ana"));
            c.replica_mut().insert(now, 0, impostor.encode()).unwrap();
            let honest = Message::sign(&m_key, &group, draft(m_member, "Mallory here"));
            c.replica_mut().insert(now, 0, honest.encode()).unwrap();
            // An acknowledgement of Ana's message in Ana's name, signed by
            // Mallory's device; and Mallory's own, genuine one.
            let upto = original.order_key();
            let at = huddle::hlc::Hlc::new(now, 9);
            for member in [ana, m_member] {
                let r = huddle::message::Receipt::sign(
                    &m_key,
                    &group,
                    ReceiptKind::Ack,
                    member,
                    upto,
                    at,
                );
                c.replica_mut()
                    .put(now, 1, &r.doc_key(), r.encode())
                    .unwrap();
            }
        }
        if let Some(msg) = c.replica().generate_sync(&mut state) {
            let f = Frame::Sync {
                doc: group.0,
                more: false,
                data: msg,
            };
            replies.extend(node.handle(
                now,
                Input::Frame {
                    peer: m_id,
                    bytes: f.encode(),
                },
            ));
        }
        if replies.is_empty() && round > 1 {
            break;
        }
        pending = replies;
    }
    let history = node.history(&group, None).unwrap();
    let bodies: Vec<&str> = history.iter().map(|m| m.body.as_str()).collect();
    assert!(bodies.contains(&"Bed 4 needs review"));
    assert!(
        !bodies.contains(&"Bed 4 is fine, no review needed"),
        "an altered message rendered"
    );
    assert_eq!(
        rejected, 2,
        "the altered message and the garbage are rejected"
    );
    let impostor = history
        .iter()
        .find(|m| m.body.starts_with("Cancel"))
        .expect("signed, so kept");
    assert!(
        !impostor.author_verified,
        "an impersonation must not render as Ana's"
    );
    let ana_msg = history
        .iter()
        .find(|m| m.body == "Bed 4 needs review")
        .unwrap();
    assert!(ana_msg.author_verified);
    assert_eq!(
        ana_msg.acked_by,
        vec![m_member],
        "an ack in someone else's name must not count"
    );
    let honest = history.iter().find(|m| m.body == "Mallory here").unwrap();
    assert!(
        honest.author_verified,
        "Mallory's certificate was proved in her hello"
    );
}
