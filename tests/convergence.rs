//! Property: devices appending, reading and acknowledging across several
//! conversations, with frames dropped (links breaking), duplicated and
//! reordered and devices crashing, always converge after a clean heal to
//! identical heads and an identical rendered history, lose no message whose
//! "sent" was emitted, and leak nothing to non-members.
//!
//! Replay a failure with `PROPTEST_CASES=1` and the seed proptest prints, or
//! run `converges_for_fixed_seeds` which walks seeds 0..SEEDS (env).

mod common;

use std::collections::BTreeSet;

use common::{Faults, Mesh};
use huddle::node::Command;
use huddle::{ConversationId, ConversationKind, Priority, Reply};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use rand_chacha::rand_core::RngCore;

#[derive(Clone, Debug)]
enum Op {
    Send {
        dev: usize,
        conv: usize,
        priority: u8,
    },
    AckLatest {
        dev: usize,
        conv: usize,
    },
    Read {
        dev: usize,
        conv: usize,
    },
    Cut {
        a: usize,
        b: usize,
    },
    Link {
        a: usize,
        b: usize,
    },
    Deliver {
        frames: usize,
    },
    Crash {
        dev: usize,
    },
    /// The command's effects stop before its flush: a crash mid-write.
    SendThenCrashBeforeFlush {
        dev: usize,
        conv: usize,
    },
    Wait {
        ms: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let d = 0..8usize;
    prop_oneof![
        6 => (d.clone(), 0..3usize, 0..3u8).prop_map(|(dev, conv, priority)| Op::Send { dev, conv, priority }),
        2 => (d.clone(), 0..3usize).prop_map(|(dev, conv)| Op::AckLatest { dev, conv }),
        2 => (d.clone(), 0..3usize).prop_map(|(dev, conv)| Op::Read { dev, conv }),
        2 => (d.clone(), d.clone()).prop_map(|(a, b)| Op::Cut { a, b }),
        2 => (d.clone(), d.clone()).prop_map(|(a, b)| Op::Link { a, b }),
        5 => (1..40usize).prop_map(|frames| Op::Deliver { frames }),
        1 => d.clone().prop_map(|dev| Op::Crash { dev }),
        1 => (d, 0..3usize).prop_map(|(dev, conv)| Op::SendThenCrashBeforeFlush { dev, conv }),
        1 => (1..2_000u64).prop_map(|ms| Op::Wait { ms }),
    ]
}

/// Builds a team of `n` devices and three conversations: a direct one
/// between devices 0 and 1, a group of a random subset, and a role channel.
fn setup(seed: u64, n: usize) -> (Mesh, Vec<ConversationId>) {
    let mut mesh = Mesh::new(seed);
    for i in 0..n {
        let roles: &[&str] = if i % 2 == 0 {
            &["nurse"]
        } else {
            &["physician"]
        };
        mesh.add_member(&format!("staff {i}"), roles);
    }
    let all: Vec<usize> = (0..n).collect();
    mesh.connect_all(&all);
    let m0 = mesh.devices[0].member();
    let m1 = mesh.devices[1].member();
    let mut group: BTreeSet<_> = [m0].into();
    for d in &mesh.devices[1..] {
        if mesh.rng.next_u32().is_multiple_of(2) {
            group.insert(d.member());
        }
    }
    let kinds = [
        (0, ConversationKind::Direct { members: [m0, m1] }),
        (
            0,
            ConversationKind::Group {
                title: "Sepsis review".into(),
                members: group,
            },
        ),
        (
            0,
            ConversationKind::Role {
                role: "nurse".into(),
            },
        ),
    ];
    let mut convs = Vec::new();
    for (creator, kind) in kinds {
        match mesh.command(creator, Command::CreateConversation { kind }) {
            Ok(Reply::Conversation(id)) => convs.push(id),
            other => panic!("create failed: {other:?}"),
        }
    }
    (mesh, convs)
}

fn run(seed: u64, n: usize, ops: &[Op]) -> Result<(usize, u64), TestCaseError> {
    let (mut mesh, convs) = setup(seed, n);
    mesh.faults = Faults {
        break_link: 0.01,
        duplicate: 0.03,
        reorder_window: 2,
    };
    let mut counter = 0u32;
    for op in ops {
        match *op {
            Op::Send {
                dev,
                conv,
                priority,
            } => {
                let (dev, conv) = (dev % n, convs[conv % convs.len()]);
                if mesh.devices[dev].node.conversation(&conv).is_none() {
                    continue;
                }
                counter += 1;
                let priority =
                    [Priority::Routine, Priority::Urgent, Priority::Stat][priority as usize % 3];
                let r = mesh.command(
                    dev,
                    Command::Send {
                        conversation: conv,
                        body: format!("message {counter} from {dev}"),
                        priority,
                        reply_to: None,
                    },
                );
                prop_assert!(r.is_ok(), "send failed: {r:?}");
            }
            Op::AckLatest { dev, conv } => {
                let (dev, conv) = (dev % n, convs[conv % convs.len()]);
                let latest = mesh.devices[dev].node.conversation(&conv).and_then(|c| {
                    c.messages()
                        .rev()
                        .find(|m| m.priority.wants_ack())
                        .map(|m| m.id())
                });
                if let Some(message) = latest {
                    let r = mesh.command(
                        dev,
                        Command::Ack {
                            conversation: conv,
                            message,
                        },
                    );
                    prop_assert!(r.is_ok(), "ack failed: {r:?}");
                }
            }
            Op::Read { dev, conv } => {
                let (dev, conv) = (dev % n, convs[conv % convs.len()]);
                if mesh.devices[dev].node.conversation(&conv).is_some() {
                    let r = mesh.command(dev, Command::MarkRead { conversation: conv });
                    prop_assert!(r.is_ok(), "read failed: {r:?}");
                }
            }
            Op::Cut { a, b } => mesh.disconnect(a % n, b % n),
            Op::Link { a, b } => mesh.connect(a % n, b % n),
            Op::Deliver { frames } => {
                for _ in 0..frames {
                    if !mesh.step() {
                        break;
                    }
                }
            }
            Op::Crash { dev } => mesh.crash_restart(dev % n),
            Op::SendThenCrashBeforeFlush { dev, conv } => {
                let (dev, conv) = (dev % n, convs[conv % convs.len()]);
                if mesh.devices[dev].node.conversation(&conv).is_none() {
                    continue;
                }
                let now = mesh.now;
                let (_, outputs) = {
                    let common::Mesh { devices, rng, .. } = &mut mesh;
                    devices[dev].node.command(
                        now,
                        rng,
                        Command::Send {
                            conversation: conv,
                            body: "lost in the crash".into(),
                            priority: Priority::Routine,
                            reply_to: None,
                        },
                    )
                };
                let before_flush: Vec<_> = outputs
                    .into_iter()
                    .take_while(|o| !matches!(o, huddle::Output::Flush))
                    .collect();
                mesh.apply(dev, before_flush);
                mesh.crash_restart(dev);
            }
            Op::Wait { ms } => mesh.now += ms,
        }
    }
    mesh.faults = Faults::default();
    mesh.heal();
    mesh.run_until_quiet();
    check(&mesh, &convs)?;
    Ok(stats(&mesh, &convs))
}

/// (confirmed sends, frames delivered) — to show the schedules do real work.
fn stats(mesh: &Mesh, _convs: &[ConversationId]) -> (usize, u64) {
    let sent = mesh.devices.iter().map(|d| d.sent.len()).sum();
    (sent, mesh.frames_delivered)
}

fn check(mesh: &Mesh, convs: &[ConversationId]) -> Result<(), TestCaseError> {
    for conv in convs {
        let holder = mesh
            .devices
            .iter()
            .find_map(|d| d.node.conversation(conv))
            .expect("the creator holds every conversation");
        let header = holder.header.clone();
        let members: Vec<usize> = (0..mesh.devices.len())
            .filter(|&i| header.admits(mesh.devices[i].cert.as_ref().unwrap()))
            .collect();
        let reference = &mesh.devices[members[0]].node;
        let heads = reference
            .conversation(conv)
            .map(|c| c.replica().heads_digest());
        let history = reference.history(conv, None);
        prop_assert!(history.is_some(), "member {} lacks {conv}", members[0]);
        for &i in &members[1..] {
            let node = &mesh.devices[i].node;
            prop_assert_eq!(
                node.conversation(conv).map(|c| c.replica().heads_digest()),
                heads,
                "heads differ on device {} for {}",
                i,
                conv
            );
            prop_assert_eq!(
                &node.history(conv, None),
                &history,
                "history differs on device {}",
                i
            );
        }
        for (i, d) in mesh.devices.iter().enumerate() {
            if !members.contains(&i) {
                prop_assert!(
                    d.node.conversation(conv).is_none(),
                    "non-member {i} holds {conv}"
                );
            }
        }
        // No loss: every confirmed send is everywhere.
        let history = history.unwrap();
        for d in &mesh.devices {
            for (c, m) in &d.sent {
                if c == conv {
                    prop_assert!(
                        history.iter().any(|r| r.id == *m),
                        "confirmed message {m} was lost"
                    );
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn random_schedules_converge(seed in any::<u64>(), n in 2..6usize, ops in prop::collection::vec(op(), 1..80)) {
        run(seed, n, &ops)?;
    }
}

/// A deterministic walk over seeds with long schedules (SEEDS=N to widen).
#[test]
fn converges_for_fixed_seeds() {
    let seeds: u64 = std::env::var("SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let (mut sent, mut frames) = (0, 0);
    for seed in 0..seeds {
        let ops = prop::collection::vec(op(), 150)
            .new_tree(&mut runner)
            .unwrap()
            .current();
        match run(seed, 5, &ops) {
            Ok((s, f)) => {
                sent += s;
                frames += f;
            }
            Err(e) => panic!("seed {seed} failed: {e}"),
        }
    }
    println!("{seeds} seeds: {sent} confirmed sends, {frames} frames delivered");
    assert!(
        sent as u64 > seeds * 10,
        "schedules should send plenty of messages"
    );
    assert!(frames > sent as u64, "messages should travel");
}

/// A conversation created and written at one end of a chain reaches the
/// other end through a member in the middle (A and C never meet): the relay
/// sends the header before its first sync message.
#[test]
fn conversations_relay_through_a_member_in_the_middle() {
    let mut mesh = Mesh::new(99);
    let a = mesh.add_member("Site lead", &["paramedic"]);
    let b = mesh.add_member("Medic laptop", &["paramedic"]);
    let c = mesh.add_member("Hospital desk", &["paramedic"]);
    mesh.connect(a, b);
    let conv = mesh.create_role_channel(a, "paramedic");
    mesh.command(
        a,
        Command::Send {
            conversation: conv,
            body: "two casualties, one critical".into(),
            priority: Priority::Stat,
            reply_to: None,
        },
    )
    .unwrap();
    mesh.run_until_quiet();
    // The laptop leaves the site and reaches the hospital.
    mesh.disconnect(a, b);
    mesh.connect(b, c);
    mesh.run_until_quiet();
    let at_c = mesh.devices[c]
        .node
        .history(&conv, None)
        .expect("the hospital holds the conversation");
    assert_eq!(at_c.len(), 1);
    assert_eq!(at_c[0].body, "two casualties, one critical");
    // The hospital answers; the laptop carries it back.
    mesh.command(
        c,
        Command::Send {
            conversation: conv,
            body: "theatre 2 ready".into(),
            priority: Priority::Urgent,
            reply_to: None,
        },
    )
    .unwrap();
    mesh.run_until_quiet();
    mesh.disconnect(b, c);
    mesh.connect(a, b);
    mesh.run_until_quiet();
    assert_eq!(mesh.devices[a].node.history(&conv, None).unwrap().len(), 2);
    assert_eq!(
        mesh.devices[a]
            .node
            .conversation(&conv)
            .unwrap()
            .history_digest(),
        mesh.devices[c]
            .node
            .conversation(&conv)
            .unwrap()
            .history_digest()
    );
}

/// A conversation created while peers are connected reaches them at once,
/// without waiting for a reconnect, and so does its first message.
#[test]
fn a_new_conversation_reaches_connected_members_live() {
    let mut mesh = Mesh::new(5);
    let a = mesh.add_member("Ana", &["nurse"]);
    let b = mesh.add_member("Ben", &["nurse"]);
    mesh.connect(a, b);
    mesh.run_until_quiet();
    let conv = mesh.create_role_channel(a, "nurse");
    mesh.command(
        a,
        Command::Send {
            conversation: conv,
            body: "first".into(),
            priority: Priority::Routine,
            reply_to: None,
        },
    )
    .unwrap();
    mesh.run_until_quiet();
    let at_b = mesh.devices[b]
        .node
        .history(&conv, None)
        .expect("Ben holds the new conversation");
    assert_eq!(at_b.len(), 1);
}

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
