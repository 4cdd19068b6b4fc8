//! The checkers can fail: deliberately broken node wrappers (they live only
//! here, never in product code) are caught by the invariant they break, and
//! the failure names the seed and the command that replays it.

use std::collections::{BTreeMap, BTreeSet};

use huddle::node::Output;
use huddle::store::{keys, StoreOp};
use huddle::team::TEAM_DOC_ID;
use huddle::wire::{Frame, HeadsEntry};
use huddle::DeviceId;
use huddle_sim::{replay_command, run, Invariant, Options, Outcome, Scenario, Tamper};

fn scenario(text: &str) -> Scenario {
    Scenario::parse(text).expect("test scenario parses")
}

/// Runs `seed` with `tamper` and returns the outcome, printing its report.
fn broken_run(sc: &Scenario, seed: u64, tamper: Box<dyn Tamper>, contract_check: bool) -> Outcome {
    let opts = Options {
        tamper: Some(tamper),
        contract_check,
        ..Options::default()
    };
    let out = run(sc, seed, opts);
    let report = out.failure_report(&replay_command(&sc.name, seed));
    println!("{report}");
    out
}

fn assert_caught(out: &Outcome, expected: Invariant) {
    let v = out
        .violation
        .as_ref()
        .unwrap_or_else(|| panic!("seed {}: the broken node went unnoticed", out.seed));
    assert_eq!(v.invariant, expected, "seed {}: {}", out.seed, v.detail);
    let report = out.failure_report(&replay_command(&out.scenario, out.seed));
    assert!(report.contains(&format!("seed {}", out.seed)), "{report}");
    assert!(
        report.contains("replay: cargo run -p huddle-sim"),
        "{report}"
    );
}

fn is_sync(frame: &[u8]) -> bool {
    matches!(Frame::decode(frame), Ok(Frame::Sync { .. }))
}

/// Drops every Sync frame device `0` sends, without breaking its
/// connections: its changes never reach anyone. (Dropping only some frames
/// is no longer enough to break convergence: a stalled exchange asks
/// again with a sync reset, sync.md §5.2 (3), and the lost changes come.)
struct DropDeviceZerosSync;

impl Tamper for DropDeviceZerosSync {
    fn outputs(&mut self, device: usize, outputs: &mut Vec<Output>) {
        if device == 0 {
            outputs.retain(|o| !matches!(o, Output::Send { frame, .. } if is_sync(frame)));
        }
    }
}

#[test]
fn dropped_sync_frames_break_convergence() {
    let sc = scenario(include_str!("scenarios/quiet-lan.toml"));
    for seed in 1..=3 {
        let out = broken_run(&sc, seed, Box::new(DropDeviceZerosSync), true);
        assert_caught(&out, Invariant::Convergence);
    }
}

/// A node (or shell) that never flushes device `0`'s writes.
struct NeverFlush;

impl Tamper for NeverFlush {
    fn outputs(&mut self, device: usize, outputs: &mut Vec<Output>) {
        if device == 0 {
            outputs.retain(|o| !matches!(o, Output::Flush));
        }
    }
}

#[test]
fn sent_before_flush_is_caught_as_it_happens() {
    let sc = scenario(include_str!("scenarios/lonely-crash.toml"));
    let out = broken_run(&sc, 1, Box::new(NeverFlush), true);
    assert_caught(&out, Invariant::NoLoss);
    assert!(out.violation.unwrap().detail.contains("output contract"));
}

#[test]
fn messages_lost_in_a_crash_are_caught_at_the_end() {
    // Without the per-step contract check, the end-to-end check still sees
    // that what device 0 confirmed did not survive its power cut.
    let sc = scenario(include_str!("scenarios/lonely-crash.toml"));
    for seed in 1..=3 {
        let out = broken_run(&sc, seed, Box::new(NeverFlush), false);
        assert_caught(&out, Invariant::NoLoss);
        assert!(out.violation.unwrap().detail.contains("missing on"));
    }
}

#[test]
fn honest_nodes_pass_the_same_scenarios() {
    for text in [
        include_str!("scenarios/lonely-crash.toml"),
        include_str!("scenarios/quiet-lan.toml"),
    ] {
        let sc = scenario(text);
        for seed in 1..=3 {
            let out = run(&sc, seed, Options::default());
            assert!(
                out.passed(),
                "{}",
                out.failure_report(&replay_command(&sc.name, seed))
            );
            assert!(
                out.metrics.messages > 0,
                "{} seed {seed}: no traffic",
                sc.name
            );
        }
    }
}

/// Copies every conversation frame a node sends to every other peer it
/// has ever talked to: a conversation's bytes reach non-members.
#[derive(Default)]
struct Gossip(BTreeMap<usize, BTreeSet<DeviceId>>);

impl Tamper for Gossip {
    fn outputs(&mut self, device: usize, outputs: &mut Vec<Output>) {
        let known = self.0.entry(device).or_default();
        let mut extra = Vec::new();
        for o in outputs.iter() {
            if let Output::Send { peer, frame, prio } = o {
                known.insert(*peer);
                if matches!(Frame::decode(frame), Ok(Frame::Header { .. })) {
                    for other in known.iter().filter(|p| *p != peer) {
                        extra.push(Output::Send {
                            peer: *other,
                            frame: frame.clone(),
                            prio: *prio,
                        });
                    }
                }
            }
        }
        outputs.extend(extra);
    }
}

#[test]
fn leaked_headers_are_caught() {
    let sc = scenario(include_str!("scenarios/mini.toml"));
    let out = broken_run(&sc, 1, Box::<Gossip>::default(), true);
    assert_caught(&out, Invariant::NoLeak);
}

#[test]
fn queues_are_bounded() {
    let sc = scenario(include_str!("scenarios/quiet-lan.toml"));
    let opts = Options {
        max_queue: 1,
        ..Options::default()
    };
    let out = run(&sc, 1, opts);
    assert_caught(&out, Invariant::Bounded);
}

/// With the documents' append-only rules switched off, the forger's
/// deletion and overwrite of others' messages spread, and a device that
/// showed those messages would not show them after a restart: the
/// append-only checker catches it. With the rules on, the same runs pass
/// (`honest_nodes_pass_the_same_scenarios` and the CI sweep hold the
/// forger scenarios).
#[test]
fn erasures_are_caught_with_the_append_only_rules_off() {
    let sc = scenario(include_str!("scenarios/mini.toml"));
    let mut caught = 0;
    for seed in 1..=4 {
        let opts = Options {
            append_only: false,
            ..Options::default()
        };
        let out = run(&sc, seed, opts);
        if let Some(v) = &out.violation {
            assert!(
                v.invariant == Invariant::AppendOnly,
                "seed {seed}: {}",
                v.detail
            );
            caught += 1;
        }
        let on = run(&sc, seed, Options::default());
        assert!(
            on.passed(),
            "{}",
            on.failure_report(&replay_command(&sc.name, seed))
        );
    }
    assert!(caught >= 3, "only {caught} of 4 runs caught the erasures");
}

fn urgent_ward() -> Scenario {
    let text = huddle_sim::scenario::BUILTIN
        .iter()
        .find(|(n, _)| *n == "urgent-ward")
        .map(|(_, t)| *t)
        .expect("built in");
    scenario(text)
}

/// Drops every `Emit` of one kind of clinical event from every device.
struct Silence(fn(&huddle::node::Event) -> bool);

impl Tamper for Silence {
    fn outputs(&mut self, _device: usize, outputs: &mut Vec<Output>) {
        let hide = self.0;
        outputs.retain(|o| !matches!(o, Output::Emit(e) if hide(e)));
    }
}

/// A node that never tells its user of a re-notification: checker (a).
#[test]
fn silent_alerts_are_caught() {
    let sc = urgent_ward();
    let tamper = Silence(|e| matches!(e, huddle::node::Event::Alert { .. }));
    let out = broken_run(&sc, 1, Box::new(tamper), true);
    assert_caught(&out, Invariant::Clinical);
    let detail = &out.violation.as_ref().expect("caught").detail;
    assert!(detail.contains("raised no re-notification"), "{detail}");
}

/// A node whose reminders never go off: checker (c).
#[test]
fn reminders_that_never_fire_are_caught() {
    let sc = urgent_ward();
    let tamper = Silence(|e| matches!(e, huddle::node::Event::Reminder { .. }));
    let out = broken_run(&sc, 1, Box::new(tamper), true);
    assert_caught(&out, Invariant::Clinical);
    let detail = &out.violation.as_ref().expect("caught").detail;
    assert!(detail.contains("reminder"), "{detail}");
}

/// Nodes that escalate what was already acknowledged, and nodes that show
/// every copy of a level: checker (b), both halves.
#[test]
fn wrong_escalations_are_caught() {
    for (fault, what) in [
        (
            huddle::node::ClinicalFault::EscalateSettled,
            "although nobody owed",
        ),
        (huddle::node::ClinicalFault::ShowEveryCopy, "times in"),
    ] {
        let sc = urgent_ward();
        let mut caught = None;
        for seed in 1..=10 {
            let opts = Options {
                clinical_fault: fault,
                ..Options::default()
            };
            let out = run(&sc, seed, opts);
            if out.violation.is_some() {
                caught = Some(out);
                break;
            }
        }
        let out = caught.unwrap_or_else(|| panic!("{fault:?} went unnoticed in 10 seeds"));
        assert_caught(&out, Invariant::Clinical);
        let detail = &out.violation.as_ref().expect("caught").detail;
        assert!(detail.contains(what), "{fault:?}: {detail}");
    }
}

/// The no-leak-by-content checks' ground: "Left" is devices 0 and 1,
/// "Right" devices 2 and 3; device 3 loses power at 4 minutes.
fn two_groups() -> Scenario {
    scenario(include_str!("scenarios/two-groups.toml"))
}

/// A chunk of a conversation (not the team document) in a `Persist`.
fn conversation_chunk(op: &StoreOp) -> Option<&[u8]> {
    let StoreOp::Put { key, value } = op else {
        return None;
    };
    let rest = key.strip_prefix(keys::DOC_PREFIX)?;
    let chunk = rest.len() == 16 + 3 + 8 && &rest[16..19] == b"/c/";
    (chunk && rest[..16] != TEAM_DOC_ID).then_some(value.as_slice())
}

fn chunks_written(outputs: &[Output]) -> Vec<Vec<u8>> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Persist(ops) => Some(ops),
            _ => None,
        })
        .flatten()
        .filter_map(conversation_chunk)
        .map(<[u8]>::to_vec)
        .collect()
}

/// A carrier that keeps the plaintext: every change device 0 writes into
/// "Left" is also put, as it is, into device 3's store under `mail/` (where
/// a sealed mailbox would keep envelopes), in device 3's next step that
/// flushes, just before its flush. Device 3 is in "Right" only.
#[derive(Default)]
struct PlainMailbox {
    pending: Vec<Vec<u8>>,
    planted: u64,
}

impl Tamper for PlainMailbox {
    fn outputs(&mut self, device: usize, outputs: &mut Vec<Output>) {
        if device == 0 {
            self.pending.extend(chunks_written(outputs));
        } else if device == 3 && !self.pending.is_empty() {
            let Some(flush) = outputs.iter().position(|o| matches!(o, Output::Flush)) else {
                return;
            };
            let mut ops = Vec::new();
            for value in self.pending.drain(..) {
                self.planted += 1;
                let key = [b"mail/".as_slice(), &self.planted.to_be_bytes()].concat();
                ops.push(StoreOp::Put { key, value });
            }
            outputs.insert(flush, Output::Persist(ops));
        }
    }
}

#[test]
fn plaintext_in_a_non_members_store_is_caught() {
    let sc = two_groups();
    for seed in 1..=2 {
        let out = broken_run(&sc, seed, Box::<PlainMailbox>::default(), true);
        assert_caught(&out, Invariant::NoLeak);
        let v = out.violation.expect("caught");
        assert!(
            v.detail.contains("d3's store holds, under key mail/"),
            "{}",
            v.detail
        );
        assert!(v.detail.contains("(\"Left\")"), "{}", v.detail);
        // Found when the power cut leaves it behind, before the end.
        assert_eq!(v.at, 4 * 60 * 1_000_000, "{}", v.detail);
    }
}

/// A node that tells every peer it ever met, in a `Heads` frame for the
/// team document (which any team device may receive), "heads" made of the
/// bytes of each change it writes into "Left": plaintext in a frame kind
/// no conversation gate looks inside.
#[derive(Default)]
struct PlainHeads(BTreeSet<DeviceId>);

impl Tamper for PlainHeads {
    fn outputs(&mut self, device: usize, outputs: &mut Vec<Output>) {
        if device != 0 {
            return;
        }
        for o in outputs.iter() {
            if let Output::Send { peer, .. } = o {
                self.0.insert(*peer);
            }
        }
        for chunk in chunks_written(outputs) {
            let heads = chunk
                .chunks(32)
                .map(|c| {
                    let mut h = [0u8; 32];
                    h[..c.len()].copy_from_slice(c);
                    h
                })
                .collect();
            let entries = vec![HeadsEntry {
                doc: TEAM_DOC_ID,
                heads,
            }];
            let frame = Frame::Heads { entries }.encode();
            for peer in &self.0 {
                outputs.push(Output::Send {
                    peer: *peer,
                    frame: frame.clone(),
                    prio: huddle::sendq::Prio::ANNOUNCE,
                });
            }
        }
    }
}

#[test]
fn plaintext_in_a_frame_to_a_non_member_is_caught() {
    let sc = two_groups();
    for seed in 1..=2 {
        let out = broken_run(&sc, seed, Box::<PlainHeads>::default(), true);
        assert_caught(&out, Invariant::NoLeak);
        let v = out.violation.expect("caught");
        assert!(
            v.detail.contains("d0 sent d2 a Heads frame holding")
                || v.detail.contains("d0 sent d3 a Heads frame holding"),
            "{}",
            v.detail
        );
        assert!(v.detail.contains("(\"Left\")"), "{}", v.detail);
    }
}

#[test]
fn honest_nodes_leak_nothing_in_two_groups() {
    let sc = two_groups();
    for seed in 1..=3 {
        let out = run(&sc, seed, Options::default());
        assert!(
            out.passed(),
            "{}",
            out.failure_report(&replay_command(&sc.name, seed))
        );
        assert!(out.metrics.messages > 20, "seed {seed}: little traffic");
    }
}
