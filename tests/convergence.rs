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
                        fields: Default::default(),
                    },
                );
                prop_assert!(r.is_ok(), "send failed: {r:?}");
            }
            Op::AckLatest { dev, conv } => {
                let (dev, conv) = (dev % n, convs[conv % convs.len()]);
                let latest = mesh.devices[dev].node.conversation(&conv).and_then(|c| {
                    c.messages()
                        .rev()
                        .find(|m| {
                            m.priority.wants_ack()
                                && Some(m.author_member)
                                    != mesh.devices[dev].cert.as_ref().map(|c| c.member)
                        })
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
                            fields: Default::default(),
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
            fields: Default::default(),
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
            fields: Default::default(),
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
            fields: Default::default(),
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
