//! Conversations are read from the store on first use (src/node/docs.rs):
//! a restarted node holds only headers and index entries until a command, a
//! view or a peer's differing heads need a document, and what it shows from
//! the index is what it shows once the documents are loaded.

mod common;

use std::collections::BTreeSet;

use common::Mesh;
use huddle::node::{Command, CommandError, Event};
use huddle::store::{keys, Store, StoreOp};
use huddle::{ConversationId, ConversationKind, Reply};

fn group(mesh: &mut Mesh, by: usize, members: &[usize], title: &str) -> ConversationId {
    let members: BTreeSet<_> = members.iter().map(|&i| mesh.devices[i].member()).collect();
    match mesh.command(
        by,
        Command::CreateConversation {
            kind: ConversationKind::Group {
                title: title.into(),
                members,
            },
        },
    ) {
        Ok(Reply::Conversation(c)) => c,
        other => panic!("create failed: {other:?}"),
    }
}

fn send(mesh: &mut Mesh, by: usize, conversation: ConversationId, body: &str) {
    mesh.send_text(by, conversation, body);
}

/// Two nurses, three conversations with traffic both ways, all delivered.
fn ward() -> (Mesh, Vec<ConversationId>) {
    let mut mesh = Mesh::new(11);
    let a = mesh.add_member("ana", &["nurse"]);
    let b = mesh.add_member("ben", &["nurse"]);
    mesh.connect(a, b);
    mesh.run_until_quiet();
    let convs: Vec<ConversationId> = (0..3)
        .map(|i| group(&mut mesh, a, &[a, b], &format!("bay {i}")))
        .collect();
    mesh.run_until_quiet();
    for (i, &c) in convs.iter().enumerate() {
        for k in 0..=i * 2 {
            send(&mut mesh, a, c, &format!("a{k}"));
            mesh.now += 10;
            send(&mut mesh, b, c, &format!("b{k}"));
            mesh.now += 10;
        }
    }
    mesh.run_until_quiet();
    let r = mesh.command(
        a,
        Command::MarkRead {
            conversation: convs[0],
        },
    );
    assert!(r.is_ok());
    send(&mut mesh, b, convs[0], "after the read");
    mesh.run_until_quiet();
    (mesh, convs)
}

fn loaded(mesh: &Mesh, i: usize) -> usize {
    mesh.devices[i].node.loaded_conversations()
}

#[test]
fn a_restart_loads_no_conversation_until_one_is_used() {
    let (mut mesh, convs) = ward();
    let (a, b) = (0, 1);
    let list = mesh.devices[a].node.conversations();
    let histories: Vec<_> = convs
        .iter()
        .map(|c| mesh.devices[a].node.history(c, None).expect("held"))
        .collect();
    assert!(list.iter().any(|s| s.unread == 1), "one unread message");

    mesh.crash_restart(a);
    assert_eq!(loaded(&mesh, a), 0, "a restart reads no document");
    assert_eq!(
        mesh.devices[a].node.conversations(),
        list,
        "the list comes from the index, exactly as before"
    );
    assert_eq!(loaded(&mesh, a), 0, "listing loads nothing");

    mesh.connect(a, b);
    mesh.run_until_quiet();
    assert_eq!(
        loaded(&mesh, a),
        0,
        "catalogs that agree are compared from the index"
    );

    send(&mut mesh, b, convs[1], "new on bay 1");
    mesh.run_until_quiet();
    assert_eq!(loaded(&mesh, a), 1, "only the conversation that changed");

    for (c, before) in convs.iter().zip(&histories) {
        let now = mesh.devices[a].node.history(c, None).expect("held");
        let on_b = mesh.devices[b].node.history(c, None).expect("held");
        assert_eq!(now, on_b, "converged");
        if *c != convs[1] {
            assert_eq!(&now, before, "loaded as it was stored");
        }
    }
    // Every document is loaded now, so the list is computed, not read: the
    // index said the same.
    assert_eq!(loaded(&mesh, a), 3);
    let computed = mesh.devices[a].node.conversations();
    mesh.crash_restart(a);
    assert_eq!(mesh.devices[a].node.conversations(), computed);
}

#[test]
fn a_restart_never_reissues_an_earlier_timestamp() {
    let (mut mesh, convs) = ward();
    let a = 0;
    mesh.now += 3_600_000;
    send(&mut mesh, a, convs[2], "an hour later");
    let last = |mesh: &Mesh| {
        mesh.devices[a]
            .events
            .iter()
            .rev()
            .find_map(|e| match e {
                Event::MessageAdded {
                    hlc, local: true, ..
                } => Some(*hlc),
                _ => None,
            })
            .expect("a local message")
    };
    let before = last(&mesh);
    // The wall clock steps back an hour across the restart; the message is
    // written to a conversation the restarted node has not loaded.
    mesh.now -= 3_600_000;
    mesh.crash_restart(a);
    send(&mut mesh, a, convs[0], "after the restart");
    assert!(
        last(&mesh) > before,
        "the index carries the clock across the restart"
    );
}

#[test]
fn a_format_1_store_is_upgraded_and_then_starts_lazily() {
    let (mut mesh, convs) = ward();
    let (a, b) = (0, 1);
    let histories: Vec<_> = convs
        .iter()
        .map(|c| mesh.devices[a].node.history(c, None).expect("held"))
        .collect();
    // Make the store what format 1 wrote: no index, version 1.
    let store = &mut mesh.devices[a].store;
    let mut ops: Vec<StoreOp> = store
        .scan_prefix(keys::INDEX_PREFIX)
        .expect("scan")
        .into_iter()
        .map(|(key, _)| StoreOp::Delete { key })
        .collect();
    assert_eq!(ops.len(), 3);
    ops.push(StoreOp::Put {
        key: keys::FORMAT.to_vec(),
        value: 1u32.to_be_bytes().to_vec(),
    });
    store.apply(&ops).expect("apply");
    store.flush().expect("flush");

    huddle::store::check_format(store).expect("upgrades");
    mesh.crash_restart(a);
    assert_eq!(
        loaded(&mesh, a),
        3,
        "without an index entry a conversation is read at start"
    );
    // The node wrote real index entries at start; the next start is lazy.
    mesh.crash_restart(a);
    assert_eq!(loaded(&mesh, a), 0);
    mesh.connect(a, b);
    mesh.run_until_quiet();
    assert_eq!(loaded(&mesh, a), 0, "the written digests match the peer's");
    for (c, before) in convs.iter().zip(&histories) {
        assert_eq!(
            &mesh.devices[a].node.history(c, None).expect("held"),
            before
        );
    }
}

#[test]
fn a_damaged_conversation_is_refused_alone() {
    let (mut mesh, convs) = ward();
    let (a, b) = (0, 1);
    let store = &mut mesh.devices[a].store;
    let damaged: Vec<StoreOp> = store
        .scan_prefix(&keys::doc_prefix(&convs[1].0))
        .expect("scan")
        .into_iter()
        .filter(|(k, _)| !k.ends_with(b"/h"))
        .map(|(key, _)| StoreOp::Put {
            key,
            value: b"not an automerge document".to_vec(),
        })
        .collect();
    assert!(!damaged.is_empty());
    store.apply(&damaged).expect("apply");
    store.flush().expect("flush");

    mesh.crash_restart(a);
    assert_eq!(
        mesh.devices[a].node.conversations().len(),
        3,
        "still listed"
    );
    let r = mesh.command(
        a,
        Command::MarkRead {
            conversation: convs[1],
        },
    );
    assert_eq!(r, Err(CommandError::Unreadable(convs[1])));
    assert!(
        r.unwrap_err().to_string().contains("could not be read"),
        "a sentence a user can act on"
    );
    assert!(mesh.devices[a].node.history(&convs[1], None).is_none());

    // The rest of the node works, with its peer too.
    send(&mut mesh, a, convs[0], "bay 0 still works");
    send(&mut mesh, b, convs[1], "ben writes to the damaged one");
    mesh.connect(a, b);
    mesh.run_until_quiet();
    assert_eq!(
        mesh.devices[a].node.history(&convs[0], None),
        mesh.devices[b].node.history(&convs[0], None)
    );
}

/// The list's badges and preview (storage.md §2.1) come from the index
/// after a restart exactly as from the documents: an urgent and a STAT
/// message awaiting acknowledgement, and the newest message.
#[test]
fn badges_and_preview_survive_a_restart_unloaded() {
    let (mut mesh, convs) = ward();
    let (a, b) = (0, 1);
    for (priority, body) in [
        (huddle::Priority::Urgent, "bed 3 needs review"),
        (huddle::Priority::Stat, "bed 4 arrest"),
    ] {
        let r = mesh.command(
            b,
            Command::Send {
                conversation: convs[2],
                body: body.into(),
                priority,
                reply_to: None,
                fields: Default::default(),
            },
        );
        assert!(r.is_ok(), "{r:?}");
        mesh.now += 10;
    }
    mesh.run_until_quiet();
    let list = mesh.devices[a].node.conversations();
    let bay2 = list.iter().find(|c| c.id == convs[2]).expect("listed");
    assert_eq!((bay2.to_ack, bay2.stat_to_ack), (2, 1));
    assert_eq!(
        bay2.last.as_ref().map(|l| l.preview.as_str()),
        Some("bed 4 arrest")
    );

    mesh.crash_restart(a);
    assert_eq!(mesh.devices[a].node.conversations(), list);
    assert_eq!(loaded(&mesh, a), 0, "listed from the index alone");
}
