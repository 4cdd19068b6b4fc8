//! The upgrade pass of store format 3 (storage.md §5, sync.md §7.5): a
//! store written before documents were append-only may hold a member's
//! deletion of someone's message, and honest changes built on it. At the
//! first start after the upgrade, the node replays every stored change
//! through the rules: the deletion is set aside (kept in the store) and
//! reported, the message is shown again, and the honest message built on
//! the deletion is written again so that it is not stranded.

mod common;

use std::collections::BTreeSet;

use automerge::transaction::Transactable;
use automerge::ReadDoc;
use common::Mesh;
use huddle::node::{Command, Event, Input};
use huddle::store::FORMAT_VERSION;
use huddle::store::{check_format, keys, Store, StoreOp};
use huddle::{ConversationId, Priority};

fn bodies(m: &Mesh, i: usize, id: &ConversationId) -> BTreeSet<String> {
    m.devices[i]
        .node
        .history(id, None)
        .map(|h| h.into_iter().map(|r| r.body).collect())
        .unwrap_or_default()
}

#[test]
fn a_stored_erasure_is_set_aside_and_what_was_built_on_it_written_again() {
    let mut m = Mesh::new(23);
    // A ward from before the rules.
    m.config.append_only = false;
    let ana = m.add_member("Ana", &[]);
    let ben = m.add_member("Ben", &[]);
    let mal = m.add_member("Mallory", &[]);
    m.connect_all(&[ana, ben, mal]);
    m.run_until_quiet();
    let id = common::group_of(&mut m, ana, &[ana, ben, mal], "Bed 4");
    let stat = "STAT: bed 4 BP 80/40";
    m.command(
        ana,
        Command::Send {
            conversation: id,
            body: stat.into(),
            priority: Priority::Stat,
            reply_to: None,
            fields: Default::default(),
        },
    )
    .unwrap();
    m.run_until_quiet();
    m.disconnect(ana, ben);
    m.disconnect(ana, mal);

    // Mallory erases it in her copy and sends that to Ben, who takes it.
    let frame = common::tampered_frame(&m, mal, id, |tx| {
        let msgs = tx.get(automerge::ROOT, "msgs")?.expect("root").1;
        tx.delete(&msgs, 0)
    });
    let peer = m.devices[mal].id();
    let out = m.devices[ben]
        .node
        .handle(m.now, Input::Frame { peer, bytes: frame });
    m.apply(ben, out);
    m.run_until_quiet();
    // Ben writes on top of it (his change depends on the erasure).
    let after = "Ben: seen, on my way";
    m.command(
        ben,
        Command::Send {
            conversation: id,
            body: after.into(),
            priority: Priority::Routine,
            reply_to: None,
            fields: Default::default(),
        },
    )
    .unwrap();
    m.devices[ben].store.flush().unwrap();
    m.crash_restart(ben);
    assert!(
        !bodies(&m, ben, &id).contains(stat),
        "before the upgrade, the erasure held across a restart"
    );

    // The store is a format-2 store: open it as a node of today would.
    let store = &mut m.devices[ben].store;
    store
        .apply(&[StoreOp::Put {
            key: keys::FORMAT.to_vec(),
            value: 2u32.to_be_bytes().to_vec(),
        }])
        .unwrap();
    check_format(store).unwrap();
    m.config.append_only = true;
    m.devices[ben].events.clear();
    m.crash_restart(ben);

    let shown = bodies(&m, ben, &id);
    assert!(
        shown.contains(stat),
        "the erased message is back: {shown:?}"
    );
    assert!(
        shown.contains(after),
        "Ben's own message is not stranded: {shown:?}"
    );
    let aside = m.devices[ben]
        .store
        .scan_prefix(&keys::doc_prefix(&id.0))
        .unwrap()
        .into_iter()
        .filter(|(k, _)| k.windows(3).any(|w| w == b"/x/"))
        .count();
    assert_eq!(aside, 2, "the erasure, and Ben's change built on it, kept");
    assert!(m.devices[ben].events.iter().any(|e| matches!(
        e,
        Event::Rejected { conversation: Some(c), count: 2 } if *c == id
    )));
    assert!(m.devices[ben]
        .store
        .get(keys::AUDIT_TEAM)
        .unwrap()
        .is_none());
    // And it stays so: the next start reads what the pass wrote.
    m.crash_restart(ben);
    let again = bodies(&m, ben, &id);
    assert_eq!(again, shown);
}

/// Format 4 → 5 → 6 → 7 (the index entry grew the list's badges and
/// preview, storage.md §5; then held times and audit trails, key forms
/// only): the version and an unknown index entry for every
/// conversation, so the next start reads each document once and lists it
/// exactly as before, now with its preview and badges.
#[test]
fn a_format_4_store_opens_as_current_and_lists_as_before() {
    let mut m = Mesh::new(31);
    let ana = m.add_member("Ana", &[]);
    let ben = m.add_member("Ben", &[]);
    m.connect_all(&[ana, ben]);
    m.run_until_quiet();
    let id = common::group_of(&mut m, ana, &[ana, ben], "Bed 9");
    m.send_text(ben, id, "obs at 4");
    m.run_until_quiet();
    let listed = m.devices[ana].node.conversations();
    assert!(listed[0].last.is_some(), "the loaded list has a preview");
    // Ana's store as format 4 wrote it: the entry without the new tail.
    let store = &mut m.devices[ana].store;
    let entry = store.get(&keys::index(&id.0)).unwrap().unwrap();
    let heads = usize::from(u16::from_be_bytes([entry[24], entry[25]]));
    store
        .apply(&[
            StoreOp::Put {
                key: keys::FORMAT.to_vec(),
                value: 4u32.to_be_bytes().to_vec(),
            },
            StoreOp::Put {
                key: keys::index(&id.0),
                value: entry[..26 + 32 * heads].to_vec(),
            },
        ])
        .unwrap();
    let before = store.scan_prefix(b"").unwrap();
    check_format(store).unwrap();
    let after = store.scan_prefix(b"").unwrap();
    let changed: BTreeSet<_> = after.iter().filter(|kv| !before.contains(kv)).collect();
    assert_eq!(
        changed,
        BTreeSet::from([
            &(keys::FORMAT.to_vec(), FORMAT_VERSION.to_be_bytes().to_vec()),
            &(keys::index(&id.0), Vec::new()),
        ]),
        "the version, and the entry now unknown"
    );
    m.crash_restart(ana);
    assert_eq!(m.devices[ana].node.conversations(), listed);
    assert_eq!(
        bodies(&m, ana, &id),
        BTreeSet::from(["obs at 4".to_string()])
    );
}
