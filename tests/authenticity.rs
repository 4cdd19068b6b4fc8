//! Authenticity: a member who rewrites a shared document by hand cannot
//! make a forged, altered or impersonating message (or receipt) render as
//! genuine on another device.

mod common;

use common::{request, Mesh};
use huddle::conversation::Conversation;
use huddle::crypto::DeviceKey;
use huddle::message::{Draft, Message, ReceiptKind};
use huddle::node::{Command, Event, Input, Output};
use huddle::store::Store;
use huddle::wire::{Frame, PROTOCOL_VERSION};
use huddle::{ConversationId, ConversationKind, MemberId, Priority, Reply};

fn create(mesh: &mut Mesh, dev: usize, kind: ConversationKind) -> ConversationId {
    match mesh.command(dev, Command::CreateConversation { kind }) {
        Ok(Reply::Conversation(id)) => id,
        other => panic!("create failed: {other:?}"),
    }
}

/// A member who rewrites the document by hand: altered, garbage and
/// impersonating entries must never render as genuine. Ana's node here
/// takes any change (as before documents were append-only, sync.md §7.5),
/// so this shows how a reader treats such entries in a store from then;
/// `tampered_changes_are_refused_at_the_door` shows a node of today.
#[test]
fn forged_altered_and_impersonating_messages_are_never_genuine() {
    let (history, rejected, refused) = tampered(false);
    assert!(!refused);
    check_reader(&history, rejected);
}

/// The same tampering reaches a node of today: the change carrying it is
/// refused with Mallory (not a message that verifies for the conversation,
/// sync.md §7.5), and nothing of it is shown.
#[test]
fn tampered_changes_are_refused_at_the_door() {
    let (history, rejected, refused) = tampered(true);
    assert!(refused, "Ana refused Mallory");
    assert_eq!(rejected, 0, "nothing of it was even taken in");
    let bodies: Vec<&str> = history.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, vec!["Bed 4 needs review"]);
}

/// Mallory's tampering, sent to Ana's node (`append_only` as given): what
/// Ana shows, how many entries she rejected, and whether she refused
/// Mallory.
fn tampered(append_only: bool) -> (Vec<huddle::node::RenderedMessage>, usize, bool) {
    let mut mesh = Mesh::new(11);
    mesh.config.append_only = append_only;
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
    // Urgent, so that an acknowledgement of it can count (sync.md §7.2).
    let urgent = Command::Send {
        conversation: group,
        body: "Bed 4 needs review".into(),
        priority: Priority::Urgent,
        reply_to: None,
        fields: Default::default(),
    };
    assert!(matches!(mesh.command(a, urgent), Ok(Reply::Message(_))));
    let now = mesh.now;
    let m_id = m_key.device_id();
    let dev = &mut mesh.devices[a];
    let (node, store) = (&mut dev.node, &mut dev.store);

    // Handshake by hand.
    let mut to_m = node.handle(now, Input::PeerConnected { peer: m_id });
    let hello = Frame::Hello {
        version: PROTOCOL_VERSION,
        pass: m_cert.pass(),
    };
    let identify = Frame::Identify {
        secret: m_cert.secret(),
    };
    for f in [hello, identify] {
        to_m.extend(node.handle(
            now,
            Input::Frame {
                peer: m_id,
                bytes: f.encode(),
            },
        ));
    }
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
    let mut refused = false;
    let mut pending = to_m;
    for round in 0..20 {
        let mut replies = Vec::new();
        for o in pending.drain(..) {
            match &o {
                Output::Emit(Event::Rejected { count, .. }) => rejected += count,
                Output::Emit(Event::PeerRefused { by_us: true, .. }) => refused = true,
                Output::Reload { doc } => {
                    // A whole document that broke the rules: Ana reads hers
                    // back, as a shell would.
                    let stored =
                        huddle::store::DocLoader::load_doc(&*store, doc).map_err(|e| e.to_string());
                    let back = node.handle(now, Input::Reloaded { doc: *doc, stored });
                    replies.extend(back);
                }
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
                fields: Default::default(),
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
    (history, rejected, refused)
}

fn check_reader(history: &[huddle::node::RenderedMessage], rejected: usize) {
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
        vec![MemberId([0x4d; 16])],
        "an ack in someone else's name must not count"
    );
    let honest = history.iter().find(|m| m.body == "Mallory here").unwrap();
    assert!(
        honest.author_verified,
        "Mallory's certificate was proved in her hello"
    );
}
