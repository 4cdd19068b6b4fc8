//! A member's device whose frames are corrupted — by a bug, a bad disk, or
//! on purpose — must not crash the node it talks to, corrupt its store, make
//! it render anything that was not genuinely sent, or stop it from syncing
//! with everyone else (DESIGN.md: bad input from a peer gets a clear error
//! and loses nothing).
//!
//! The garbage tests in `membership.rs` send hand-made junk before or
//! instead of a hello. These go further: the hostile device is a real,
//! verified member, and its frames are the very ones an honest sync sends
//! (hello, catalog, sync messages for the team document and a group
//! conversation, with messages the victim lacks), recorded from an honest
//! run and replayed with bits flipped, bytes cut, overwritten or inserted.
//! So the mutations reach the deep decoders: frame fields, Automerge sync
//! messages and changes, message and receipt entries, signatures.

mod common;

use std::collections::BTreeSet;
use std::sync::OnceLock;

use common::mutate::{corruptions, Mutation};
use common::Mesh;
use huddle::node::{Command, Input};
use huddle::{ConversationId, ConversationKind, MessageId, Reply};
use proptest::prelude::*;

/// Ana (the victim), Mo (turns hostile) and Bea (honest), one group
/// conversation; Mo wrote three messages while away from Ana.
struct Scene {
    mesh: Mesh,
    ana: usize,
    mo: usize,
    bea: usize,
    group: ConversationId,
}

const SEED: u64 = 0x0405_711e;

fn scene() -> Scene {
    let mut mesh = Mesh::new(SEED);
    let ana = mesh.add_member("Ana Silva", &["nurse"]);
    let mo = mesh.add_member("Mo Reyes", &["nurse"]);
    let bea = mesh.add_member("Bea Okafor", &["doctor"]);
    let members = [ana, mo, bea]
        .iter()
        .map(|&i| mesh.devices[i].member())
        .collect();
    let group = match mesh.command(
        ana,
        Command::CreateConversation {
            kind: ConversationKind::Group {
                title: "Ward 7".into(),
                members,
            },
        },
    ) {
        Ok(Reply::Conversation(c)) => c,
        other => panic!("create failed: {other:?}"),
    };
    mesh.connect_all(&[ana, mo, bea]);
    mesh.run_until_quiet();
    mesh.send_text(ana, group, "Bed 4: obs every 15 min");
    mesh.send_text(bea, group, "Seen bed 4, fluids started");
    mesh.run_until_quiet();
    // Mo goes away and writes while away; Bea leaves Ana's side too, so
    // that everything Ana hears next comes from Mo.
    mesh.disconnect(ana, mo);
    mesh.disconnect(bea, mo);
    mesh.disconnect(ana, bea);
    for body in [
        "Bed 9 febrile 38.9",
        "Family of bed 2 here",
        "K+ 5.9 bed 12",
    ] {
        mesh.send_text(mo, group, body);
    }
    Scene {
        mesh,
        ana,
        mo,
        bea,
        group,
    }
}

/// The frames Mo sends Ana when they meet again, honestly (in order);
/// recorded once per test binary.
fn honest_frames() -> &'static [Vec<u8>] {
    static FRAMES: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    FRAMES.get_or_init(record_frames)
}

fn record_frames() -> Vec<Vec<u8>> {
    let mut s = scene();
    s.mesh.devices[s.ana].received.clear();
    s.mesh.connect(s.ana, s.mo);
    s.mesh.run_until_quiet();
    let frames = std::mem::take(&mut s.mesh.devices[s.ana].received);
    assert!(
        frames.len() >= 4,
        "hello, catalog and sync: {}",
        frames.len()
    );
    frames
}

/// Every message any device genuinely composed.
fn genuine(mesh: &Mesh) -> BTreeSet<MessageId> {
    mesh.devices
        .iter()
        .flat_map(|d| d.sent.iter().map(|(_, m)| *m))
        .collect()
}

/// Replays Mo's frames to Ana, `corrupt` changing some of them, until the
/// last frame or until Ana hangs up. Returns the scene afterwards, and
/// whether Ana hung up on Mo.
fn replay(corrupt: &[(usize, Vec<Mutation>)], frames: &[Vec<u8>]) -> (Scene, bool) {
    let mut s = scene();
    let mut hung_up = false;
    s.mesh.connect(s.ana, s.mo);
    let mo_id = s.mesh.devices[s.mo].id();
    for (k, frame) in frames.iter().enumerate() {
        let linked = s.mesh.links.contains(&(s.ana.min(s.mo), s.ana.max(s.mo)));
        if !linked {
            hung_up = true; // nothing more reaches her
            break;
        }
        let mut bytes = frame.clone();
        for (which, muts) in corrupt {
            if which % frames.len() == k {
                for m in muts {
                    m.apply(&mut bytes);
                }
            }
        }
        let now = s.mesh.now;
        let out = s.mesh.devices[s.ana]
            .node
            .handle(now, Input::Frame { peer: mo_id, bytes });
        s.mesh.apply(s.ana, out);
    }
    hung_up |= !s.mesh.links.contains(&(s.ana.min(s.mo), s.ana.max(s.mo)));
    // Mo is scripted: whatever Ana said to him is dropped with the link.
    s.mesh.disconnect(s.ana, s.mo);
    (s, hung_up)
}

/// After whatever Mo did: Ana renders only genuine messages, survives a
/// restart with the same history, still syncs with Bea both ways, and once
/// Mo is honest again all three converge on every message sent.
fn check_unharmed(mut s: Scene) {
    let ana = s.ana;
    let group = s.group;
    s.mesh.run_until_quiet();
    let real = genuine(&s.mesh);
    let conv = s.mesh.devices[ana]
        .node
        .conversation(&group)
        .expect("Ana keeps the conversation");
    for m in conv.messages() {
        assert!(real.contains(&m.id()), "Ana renders a message nobody sent");
    }
    let history = conv.history_digest();
    let len = conv.len();
    assert!(len >= 2, "Ana lost what she had: {len} messages");

    s.mesh.crash_restart(ana);
    let conv = s.mesh.devices[ana]
        .node
        .conversation(&group)
        .expect("the conversation survives a restart");
    assert_eq!(
        conv.history_digest(),
        history,
        "the store lost or changed history"
    );

    let from_bea = s.mesh.send_text(s.bea, group, "Still with you?");
    s.mesh.connect(ana, s.bea);
    let from_ana = s.mesh.send_text(ana, group, "Yes");
    s.mesh.run_until_quiet();
    let on_ana = s.mesh.devices[ana].node.conversation(&group).unwrap();
    assert!(
        on_ana.get(&from_bea).is_some(),
        "Ana no longer syncs with Bea"
    );
    let on_bea = s.mesh.devices[s.bea].node.conversation(&group).unwrap();
    assert!(on_bea.get(&from_ana).is_some(), "Bea no longer hears Ana");

    // Mo, honest again, meets both: the three converge on every message
    // anyone sent, so nothing the corruption touched is lost for good.
    s.mesh.connect_all(&[ana, s.mo, s.bea]);
    s.mesh.run_until_quiet();
    let real = genuine(&s.mesh);
    let digests: Vec<[u8; 32]> = [ana, s.mo, s.bea]
        .iter()
        .map(|&d| {
            let c = s.mesh.devices[d].node.conversation(&group).unwrap();
            assert_eq!(c.len(), real.len(), "d{d} lacks messages after the heal");
            c.history_digest()
        })
        .collect();
    assert!(digests.windows(2).all(|w| w[0] == w[1]), "no convergence");
}

/// The harness itself: replayed unchanged, Mo's frames give Ana his three
/// messages — so a corrupted replay that loses them is the corruption's doing.
#[test]
fn an_honest_replay_delivers_what_the_honest_run_did() {
    let (s, hung_up) = replay(&[], honest_frames());
    assert!(!hung_up, "Ana hung up on an honest replay");
    let mo_sent: Vec<MessageId> = s.mesh.devices[s.mo].sent.iter().map(|(_, m)| *m).collect();
    assert_eq!(mo_sent.len(), 3);
    let conv = s.mesh.devices[s.ana].node.conversation(&s.group).unwrap();
    for m in &mo_sent {
        assert!(conv.get(m).is_some(), "the replay lost Mo's message");
    }
    check_unharmed(s);
}

/// A flipped bit in the hello is refused, with a disconnect, and nothing
/// of Mo's reaches Ana.
#[test]
fn a_corrupted_hello_is_refused() {
    let (s, hung_up) = replay(
        &[(0, vec![Mutation::Flip { at: 40, bit: 3 }])],
        honest_frames(),
    );
    assert!(
        hung_up,
        "Ana kept talking to a peer with a broken certificate"
    );
    let conv = s.mesh.devices[s.ana].node.conversation(&s.group).unwrap();
    assert_eq!(conv.len(), 2, "Ana took something from an unverified peer");
    check_unharmed(s);
}

// 256 cases by default (about 2 s in a debug build); a longer hunt:
// `PROPTEST_CASES=20000 cargo test --release --test hostile_peer`.
proptest! {
    /// One to three of Mo's frames corrupted, one to three times each.
    #[test]
    fn corrupted_frames_from_a_member_do_no_harm(
        corrupt in corruptions()
    ) {
        let (s, _) = replay(&corrupt, honest_frames());
        check_unharmed(s);
    }
}
