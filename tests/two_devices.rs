//! Two devices, Ana and Ben, in the situations one sync protocol step at a
//! time must get right: a crash before a received message is flushed, a
//! reconnection that starts from what was last shared, kept sync state
//! against a peer that lost changes, a change the receiver dropped, and
//! pages made while apart.

mod common;

use common::Mesh;
use huddle::ConversationId;

/// Ana and Ben, connected, with a nurses' channel Ana created, settled.
fn ana_and_ben(seed: u64) -> (Mesh, usize, usize, ConversationId) {
    let mut mesh = Mesh::new(seed);
    let a = mesh.add_member("Ana", &["nurse"]);
    let b = mesh.add_member("Ben", &["nurse"]);
    mesh.connect(a, b);
    let conv = mesh.create_role_channel(a, "nurse");
    mesh.run_until_quiet();
    (mesh, a, b, conv)
}

/// Does device `i` render message `m` of `conv`?
fn holds(mesh: &Mesh, i: usize, conv: ConversationId, m: huddle::MessageId) -> bool {
    mesh.devices[i]
        .node
        .history(&conv, None)
        .is_some_and(|h| h.iter().any(|r| r.id == m))
}

/// Taking in a peer's message asks for no flush: the sender holds it, so a
/// crash before the receiver's next flush loses it only there, and the next
/// sync brings it back. The receiver's own delivered receipt is flushed, and
/// that flush covers the message too.
#[test]
fn a_received_message_waits_for_the_next_flush_and_survives_its_loss() {
    let (mut mesh, a, b, conv) = ana_and_ben(6);
    let first = mesh.send_text(a, conv, "bed 4 needs obs");
    // Deliver the push, fire no timer (so no receipt is written yet).
    while mesh.step() {}
    let held = |mesh: &Mesh, i: usize, m| holds(mesh, i, conv, m);
    assert!(held(&mesh, b, first), "Ben shows it at once");
    mesh.crash_restart(b);
    assert!(
        !held(&mesh, b, first),
        "not flushed: lost here by the crash"
    );
    mesh.crash_restart(a);
    assert!(
        held(&mesh, a, first),
        "Ana's copy was flushed before 'sent'"
    );
    mesh.connect(a, b);
    mesh.run_until_quiet();
    assert!(held(&mesh, b, first), "the next sync brings it back");

    // The delivered receipt Ben writes is flushed, and covers the message.
    let second = mesh.send_text(a, conv, "and bed 5");
    mesh.run_until_quiet();
    mesh.crash_restart(b);
    assert!(held(&mesh, b, first) && held(&mesh, b, second));
}

/// A change its sender believes delivered but the receiver never took in
/// (as a node drops sync messages for a document it is reloading after a
/// contained panic, contain.rs). Ben learns Ana's heads from her next
/// message and asks for what he lacks; Automerge never sends a change twice
/// in a session, so Ana answered with nothing, and the two asked and
/// answered each other for ever (found by the `member_peer` fuzz target).
/// Now the stalled answer makes Ben ask again with a sync reset, and the
/// change comes.
#[test]
fn a_change_the_receiver_dropped_is_sent_again() {
    let (mut mesh, a, b, conv) = ana_and_ben(8);
    let first = mesh.send_text(a, conv, "bed 4 needs obs");
    let push = (mesh.queue.iter())
        .position(|(from, to, _)| (*from, *to) == (a, b))
        .expect("Ana's push to Ben");
    mesh.queue.remove(push);
    let second = mesh.send_text(a, conv, "and bed 5");
    assert!(
        mesh.run_until_quiet_within(1_000),
        "Ana and Ben are still asking and answering"
    );
    assert!(holds(&mesh, b, conv, first) && holds(&mesh, b, conv, second));
}

/// Two devices that shared a long history and drifted a little apart while
/// disconnected: the reconnection's sync starts from what they last shared
/// (kept per peer), so it costs about the missing changes, not a Bloom
/// filter of the whole history each way, as it does after a restart.
#[test]
fn a_reconnection_syncs_from_what_was_last_shared() {
    let (mut mesh, a, b, conv) = ana_and_ben(8);
    for k in 0..1500 {
        mesh.send_text(a, conv, &format!("obs round {k}: all stable"));
        mesh.send_text(b, conv, &format!("ack {k}"));
    }
    mesh.run_until_quiet();
    let drift = |mesh: &mut Mesh, round: usize| -> u64 {
        mesh.disconnect(a, b);
        for k in 0..10 {
            mesh.send_text(a, conv, &format!("while apart {round}.{k}"));
        }
        mesh.run_until_quiet();
        let before = mesh.bytes_delivered;
        mesh.connect(a, b);
        mesh.run_until_quiet();
        let on = |i: usize| mesh.devices[i].node.history(&conv, None).unwrap();
        assert_eq!(on(a), on(b), "converged");
        mesh.bytes_delivered - before
    };
    let kept = drift(&mut mesh, 1);
    // A restart forgets what was shared: the sync starts from nothing.
    mesh.disconnect(a, b);
    mesh.crash_restart(a);
    mesh.crash_restart(b);
    let fresh = drift(&mut mesh, 2);
    assert!(
        kept * 2 < fresh,
        "a reconnection sent {kept} bytes, one after a restart {fresh}"
    );
}

/// Kept heads the peer no longer has: Ben states heads that include a
/// message he took in but has not flushed, then crashes and loses it. Ana
/// kept those heads; on reconnecting, Ben cannot find them and answers with
/// Automerge's sync reset, and the exchange starts from nothing: the two
/// still converge, and Ben gets the message back.
#[test]
fn kept_sync_state_survives_a_peer_that_lost_changes() {
    let (mut mesh, a, b, conv) = ana_and_ben(10);
    for k in 0..50 {
        mesh.send_text(a, conv, &format!("obs {k}"));
    }
    mesh.run_until_quiet();
    // Apart, both write; on reconnecting, Ben takes in Ana's message (not
    // yet flushed: no timer fires, so no receipt) and states heads that
    // include it.
    mesh.disconnect(a, b);
    let lost = mesh.send_text(a, conv, "bed 9 febrile");
    mesh.send_text(b, conv, "bed 2 settled");
    mesh.run_until_quiet();
    mesh.connect(a, b);
    while mesh.step() {}
    mesh.disconnect(a, b);
    mesh.crash_restart(b);
    let held = |mesh: &Mesh, i: usize| holds(mesh, i, conv, lost);
    assert!(!held(&mesh, b), "Ben lost it in the crash");
    mesh.devices[a].received.clear();
    mesh.connect(a, b);
    mesh.run_until_quiet();
    let reset = mesh.devices[a].received.iter().any(|f| {
        let Ok(huddle::wire::Frame::Sync { data, .. }) = huddle::wire::Frame::decode(f) else {
            return false;
        };
        let m = automerge::sync::Message::decode(&data).expect("a sync message");
        m.changes.is_empty()
            && m.need.is_empty()
            && m.have.len() == 1
            && m.have[0].last_sync.is_empty()
            && m.have[0].bloom.to_bytes().is_empty()
    });
    assert!(reset, "Ben answered Ana's kept heads with a sync reset");
    assert!(held(&mesh, b), "the sync brought it back");
    let on = |i: usize| mesh.devices[i].node.history(&conv, None).unwrap();
    assert_eq!(on(a), on(b));
}

/// Pages (sync.md §7.1): two devices apart each fill the first page and
/// make the second by themselves; they make the same page, so after the
/// heal both hold one history in the same pages. Writing goes on across
/// page boundaries live, through a restart, and each device writes into the
/// pages the other made.
#[test]
fn devices_apart_make_the_same_pages_and_merge() {
    use huddle::conversation::PAGE_LEN;
    let (mut mesh, a, b, conv) = ana_and_ben(12);
    let pages = |mesh: &Mesh, i: usize| {
        let c = mesh.devices[i].node.conversation(&conv).unwrap();
        (c.replica().page_count(), c.len())
    };
    mesh.disconnect(a, b);
    let apart = PAGE_LEN + 100;
    for k in 0..apart {
        mesh.send_text(a, conv, &format!("ana apart {k}"));
        mesh.send_text(b, conv, &format!("ben apart {k}"));
        if k == PAGE_LEN + 50 {
            mesh.crash_restart(b); // reloads its pages from the store
        }
    }
    mesh.run_until_quiet();
    assert_eq!(pages(&mesh, a), (1, apart));
    assert_eq!(pages(&mesh, b), (1, apart));
    mesh.connect(a, b);
    mesh.run_until_quiet();
    let history = |mesh: &Mesh, i: usize| mesh.devices[i].node.history(&conv, None).unwrap();
    assert_eq!(history(&mesh, a), history(&mesh, b));
    assert_eq!(
        pages(&mesh, a),
        (1, 2 * apart),
        "page 1 made twice is one page"
    );
    assert_eq!(pages(&mesh, b), (1, 2 * apart));

    // Live, across the next boundary: page 1 holds 200 messages, so Ana's
    // 313th makes page 2 (that a push carries the page change with the
    // message is shown by the replica's a_push_carries_the_page_it_made).
    let live = PAGE_LEN - 200 + 1;
    let mut last = None;
    for k in 0..live {
        last = Some(mesh.send_text(a, conv, &format!("ana live {k}")));
    }
    mesh.run_until_quiet();
    assert_eq!(pages(&mesh, a).0, 2);
    assert_eq!(pages(&mesh, b).0, 2, "Ben has page 2");
    assert!(holds(&mesh, b, conv, last.unwrap()));
    let bens = mesh.send_text(b, conv, "ben writes into Ana's page");
    mesh.run_until_quiet();
    assert_eq!(
        pages(&mesh, b).0,
        2,
        "Ben wrote into page 2, made no page 3"
    );
    assert!(holds(&mesh, a, conv, bens));
    assert_eq!(history(&mesh, a), history(&mesh, b));
    assert_eq!(history(&mesh, a).len(), 2 * apart + live + 1);
}
