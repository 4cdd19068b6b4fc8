//! The audit trail on the in-memory mesh (protocol/sync.md §8): entries
//! reach the team's administrators and nobody else, a held copy names a
//! tail cut from a device's trail and a trail rewritten under it, and a
//! proof or entry that does not verify costs the peer its session.

mod common;

use common::*;
use huddle::node::{Command, Event, Input, Timer};
use huddle::store::{keys, Store, StoreOp};
use huddle::trail::{verify_chain, Action, AdminProof, Entry, Via};
use huddle::wire::{Frame, TrailHave};
use huddle::DeviceId;

/// Ana and Ben are members; Chidi's laptop holds the team key.
fn ward() -> (Mesh, usize, usize, usize) {
    let mut m = Mesh::new(7);
    let ana = m.add_member("Ana", &["nurse"]);
    let ben = m.add_member("Ben", &["nurse"]);
    let chidi = m.add_member("Chidi", &["charge"]);
    make_admin(&mut m, chidi);
    (m, ana, ben, chidi)
}

fn make_admin(m: &mut Mesh, i: usize) {
    let proof = AdminProof::sign(&m.authority, &m.devices[i].id());
    m.devices[i].node.set_trail_admin(proof);
}

fn audit(m: &mut Mesh, i: usize, action: Action) {
    m.command(i, Command::Audit(action)).expect("recorded");
}

fn held(m: &Mesh, at: usize, of: usize) -> u64 {
    let of = m.devices[of].id();
    m.devices[at]
        .node
        .trail_heads()
        .find(|(d, _)| **d == of)
        .map_or(0, |(_, (len, _))| *len)
}

/// The entries of `of`'s trail in `at`'s store, as `huddle audit verify` reads them.
fn stored(m: &Mesh, at: usize, of: DeviceId) -> Vec<(u64, Vec<u8>)> {
    let prefix = [keys::TRAIL_PREFIX, of.as_bytes().as_slice()].concat();
    m.devices[at]
        .store
        .scan_prefix(&prefix)
        .unwrap()
        .into_iter()
        .map(|(k, v)| (u64::from_be_bytes(k[k.len() - 8..].try_into().unwrap()), v))
        .collect()
}

fn trail_frames_to(m: &Mesh, i: usize) -> usize {
    m.devices[i]
        .received
        .iter()
        .filter(|f| matches!(Frame::decode(f), Ok(Frame::Trail { .. })))
        .count()
}

#[test]
fn entries_reach_administrators_and_nobody_else() {
    let (mut m, ana, ben, chidi) = ward();
    audit(&mut m, ana, Action::Unlocked { via: Via::Run });
    m.connect_all(&[ana, ben, chidi]);
    m.run_until_quiet();
    let conv = group_of(&mut m, ana, &[ana, ben, chidi], "Bay 3");
    m.send_text(ana, conv, "obs due at 14:00");
    audit(
        &mut m,
        ben,
        Action::Opened {
            conversation: conv,
            via: Via::Screen,
        },
    );
    m.run_until_quiet();

    // Ana's unlock and send, Ben's open: held by Chidi as written.
    assert_eq!(held(&m, ana, ana), 2);
    assert_eq!(held(&m, chidi, ana), 2);
    assert_eq!(held(&m, chidi, ben), 1);
    let ana_id = m.devices[ana].id();
    let copy = stored(&m, chidi, ana_id);
    assert_eq!(copy, stored(&m, ana, ana_id));
    let report = verify_chain(ana_id, &copy);
    assert_eq!((report.problem, report.good), (None, 2));
    let sent = Entry::decode(&copy[1].1).unwrap();
    assert!(matches!(sent.action, Action::Sent { conversation, .. } if conversation == conv));

    // Members are never sent anyone's entries, nor hold others' trails.
    assert_eq!(trail_frames_to(&m, ana) + trail_frames_to(&m, ben), 0);
    assert!(trail_frames_to(&m, chidi) > 0);
    assert_eq!(held(&m, ben, ana), 0);
    assert_eq!(held(&m, ana, ben), 0);
}

#[test]
fn entries_written_apart_arrive_when_the_administrator_reconnects() {
    let (mut m, ana, _ben, chidi) = ward();
    for _ in 0..300 {
        audit(&mut m, ana, Action::Unlocked { via: Via::Cli });
    }
    // Older entries are read from the store, as after any restart; more
    // than one frame holds: the administrator asks again.
    m.crash_restart(ana);
    m.connect(ana, chidi);
    m.run_until_quiet();
    assert_eq!(held(&m, chidi, ana), 300);
    m.disconnect(ana, chidi);
    audit(&mut m, ana, Action::PassphraseChanged { first: false });
    m.crash_restart(ana);
    m.connect(ana, chidi);
    m.run_until_quiet();
    assert_eq!(held(&m, chidi, ana), 301);
    let ana_id = m.devices[ana].id();
    assert_eq!(verify_chain(ana_id, &stored(&m, chidi, ana_id)).good, 301);
}

/// Ana's trail loses its last entry in her store (someone with the device
/// and its passphrase covering their tracks).
fn cut_last_entry(m: &mut Mesh, ana: usize) {
    let id = m.devices[ana].id();
    let copy = stored(m, ana, id);
    let (last, _) = copy.last().cloned().unwrap();
    let prev = Entry::decode(&copy[copy.len() - 2].1).unwrap();
    let head = [last.to_be_bytes().as_slice(), &prev.hash()].concat();
    let store = &mut m.devices[ana].store;
    store
        .apply(&[
            StoreOp::Delete {
                key: keys::trail(&id, last),
            },
            StoreOp::Put {
                key: keys::trail_head(&id),
                value: head,
            },
        ])
        .unwrap();
    store.flush().unwrap();
    m.crash_restart(ana);
}

#[test]
fn a_tail_cut_from_a_trail_is_named_by_the_administrators_copy() {
    let (mut m, ana, _ben, chidi) = ward();
    audit(&mut m, ana, Action::Unlocked { via: Via::Run });
    let conv = huddle::ConversationId([7; 16]);
    audit(
        &mut m,
        ana,
        Action::Exported {
            conversation: conv,
            fhir: true,
            since: 0,
        },
    );
    m.connect(ana, chidi);
    m.run_until_quiet();
    m.disconnect(ana, chidi);
    cut_last_entry(&mut m, ana);
    // Her own chain still verifies: a hash chain cannot show a cut tail.
    let ana_id = m.devices[ana].id();
    assert_eq!(verify_chain(ana_id, &stored(&m, ana, ana_id)).problem, None);

    m.connect(ana, chidi);
    m.run_until_quiet();
    let chidi_id = m.devices[chidi].id();
    for at in [chidi, ana] {
        let f: Vec<_> = m.devices[at].node.trail_findings().cloned().collect();
        assert_eq!(f.len(), 1, "device {at}: {f:?}");
        assert_eq!((f[0].device, f[0].holder), (ana_id, chidi_id));
        assert_eq!((f[0].shown, f[0].held, f[0].diverged), (1, 2, false));
    }
    // The administrator's copy keeps the entry that was cut.
    assert_eq!(held(&m, chidi, ana), 2);
}

#[test]
fn a_trail_rewritten_under_a_held_copy_is_named() {
    let (mut m, ana, _ben, chidi) = ward();
    audit(&mut m, ana, Action::Unlocked { via: Via::Run });
    audit(&mut m, ana, Action::PinChanged { cleared: true });
    m.connect(ana, chidi);
    m.run_until_quiet();
    m.disconnect(ana, chidi);
    cut_last_entry(&mut m, ana);
    // A different, validly signed entry 1 in its place, and more after it:
    // the copy takes none of them, and nobody asks round in circles (the
    // mesh would never become quiet).
    for _ in 0..4 {
        audit(&mut m, ana, Action::Unlocked { via: Via::Cli });
    }
    m.connect(ana, chidi);
    m.run_until_quiet();
    let f: Vec<_> = m.devices[chidi].node.trail_findings().cloned().collect();
    assert_eq!(f.len(), 1, "{f:?}");
    assert!(f[0].diverged);
    // Nothing of the rewrite is taken over the copy.
    assert_eq!(held(&m, chidi, ana), 2);
}

#[test]
fn a_member_without_the_team_key_is_refused_its_ask() {
    let (mut m, ana, ben, _chidi) = ward();
    audit(&mut m, ana, Action::Unlocked { via: Via::Run });
    m.connect(ana, ben);
    m.run_until_quiet();
    // Ben signs his own "proof": not the authority's.
    let forged = Frame::TrailAsk {
        proof: m.devices[ben]
            .key
            .sign(huddle::trail::DOMAIN_ADMIN, m.devices[ben].id().as_bytes()),
        have: vec![TrailHave {
            device: m.devices[ana].id().0,
            len: 0,
            head: [0; 32],
        }],
    };
    m.queue.push_back((ben, ana, forged.encode()));
    m.run_until_quiet();
    assert_eq!(trail_frames_to(&m, ben), 0);
    let ben_id = m.devices[ben].id();
    assert!(m.devices[ana]
        .events
        .iter()
        .any(|e| matches!(e, Event::PeerRefused { peer, by_us: true, .. } if *peer == ben_id)));
}

#[test]
fn entries_pushed_to_a_member_that_is_no_administrator_are_refused() {
    let (mut m, ana, ben, _chidi) = ward();
    m.connect(ana, ben);
    m.run_until_quiet();
    let entry = Entry::sign(
        &m.devices[ana].key,
        None,
        T0,
        Action::Unlocked { via: Via::Run },
    );
    let frame = Frame::Trail {
        len: 1,
        head: entry.hash(),
        answer: false,
        more: false,
        entries: vec![entry.encode()],
    };
    m.queue.push_back((ana, ben, frame.encode()));
    m.run_until_quiet();
    assert_eq!(held(&m, ben, ana), 0);
    let ana_id = m.devices[ana].id();
    assert!(m.devices[ben]
        .events
        .iter()
        .any(|e| matches!(e, Event::PeerRefused { peer, by_us: true, .. } if *peer == ana_id)));
}

#[test]
fn an_entry_that_does_not_verify_costs_the_member_its_session() {
    let (mut m, ana, _ben, chidi) = ward();
    m.connect(ana, chidi);
    m.run_until_quiet();
    let mut bytes = Entry::sign(
        &m.devices[ana].key,
        None,
        T0,
        Action::Unlocked { via: Via::Run },
    )
    .encode();
    bytes[60] ^= 1;
    let frame = Frame::Trail {
        len: 1,
        head: [0; 32],
        answer: false,
        more: false,
        entries: vec![bytes],
    };
    m.queue.push_back((ana, chidi, frame.encode()));
    m.run_until_quiet();
    assert_eq!(held(&m, chidi, ana), 0);
    let ana_id = m.devices[ana].id();
    assert!(m.devices[chidi]
        .events
        .iter()
        .any(|e| matches!(e, Event::PeerRefused { peer, by_us: true, .. } if *peer == ana_id)));
}

/// Every `TrailAsk` device `i` was sent, decoded.
fn asks_to(m: &Mesh, i: usize) -> Vec<Vec<TrailHave>> {
    m.devices[i]
        .received
        .iter()
        .filter_map(|f| match Frame::decode(f) {
            Ok(Frame::TrailAsk { have, .. }) => Some(have),
            _ => None,
        })
        .collect()
}

#[test]
fn a_member_is_told_nothing_of_anyone_elses_trail() {
    let (mut m, ana, ben, chidi) = ward();
    audit(&mut m, ben, Action::Unlocked { via: Via::Run });
    m.connect_all(&[ben, chidi]);
    m.run_until_quiet();
    m.connect_all(&[ana, ben, chidi]);
    m.run_until_quiet();
    // Chidi holds Ben's trail (and his own); his ask to Ana lists only hers.
    assert_eq!(held(&m, chidi, ben), 1);
    let asks = asks_to(&m, ana);
    assert!(!asks.is_empty());
    for have in asks {
        let devices: Vec<[u8; 32]> = have.iter().map(|h| h.device).collect();
        assert_eq!(devices, vec![m.devices[ana].id().0]);
    }
}

#[test]
fn administrators_fill_each_others_copies() {
    let (mut m, ana, _ben, chidi) = ward();
    let dana = m.add_member("Dana", &["charge"]);
    make_admin(&mut m, dana);
    for _ in 0..3 {
        audit(&mut m, ana, Action::Unlocked { via: Via::Cli });
    }
    // Ana meets Chidi only; Dana meets Chidi only, later.
    m.connect(ana, chidi);
    m.run_until_quiet();
    m.disconnect(ana, chidi);
    m.connect(dana, chidi);
    m.run_until_quiet();
    // Once Dana knows Ana (the team document) she lists her, at the latest
    // at the next maintenance, and Chidi serves his copy.
    m.run_until(m.now + 31_000);
    m.run_until_quiet();
    assert_eq!(held(&m, dana, ana), 3);
    let ana_id = m.devices[ana].id();
    assert_eq!(stored(&m, dana, ana_id), stored(&m, ana, ana_id));
}

#[test]
fn entries_that_overtake_an_answer_are_not_taken_for_a_cut() {
    // An administrator's copy grows (through another administrator, or a
    // push) while the member's answer to its older ask is on the way: the
    // answer is shorter than the copy, and that is no cut.
    let (mut m, ana, _ben, chidi) = ward();
    audit(&mut m, ana, Action::Unlocked { via: Via::Run });
    m.connect(ana, chidi);
    m.run_until_quiet();
    assert_eq!(held(&m, chidi, ana), 1);
    // Maintenance: Chidi asks again; Ana answers (length 1)...
    assert!(m.queue.is_empty());
    let out = m.devices[chidi]
        .node
        .handle(m.now, Input::Timer(Timer::Maintenance));
    m.apply(chidi, out);
    while m.queue.iter().any(|(from, _, _)| *from == chidi) {
        m.step();
    }
    let answer = m
        .queue
        .iter()
        .position(|(from, to, f)| {
            (*from, *to) == (ana, chidi)
                && matches!(Frame::decode(f), Ok(Frame::Trail { answer: true, .. }))
        })
        .expect("Ana's answer is on its way");
    let held_back = m.queue.remove(answer).unwrap();
    // ...and before it arrives, her next entry does.
    audit(&mut m, ana, Action::Unlocked { via: Via::Cli });
    m.run_until_quiet();
    assert_eq!(held(&m, chidi, ana), 2);
    m.queue.push_back(held_back);
    m.run_until_quiet();
    let f: Vec<_> = m.devices[chidi].node.trail_findings().cloned().collect();
    assert!(
        f.is_empty(),
        "an honest trail was taken for a cut one: {f:?}"
    );
}

#[test]
fn only_an_answer_may_carry_more_than_one_entry() {
    let (mut m, ana, _ben, chidi) = ward();
    m.connect(ana, chidi);
    m.run_until_quiet();
    let key = m.devices[ana].key.clone();
    let first = Entry::sign(&key, None, T0, Action::Unlocked { via: Via::Run });
    let second = Entry::sign(
        &key,
        Some((0, first.hash())),
        T0,
        Action::Unlocked { via: Via::Run },
    );
    for answer in [false, true] {
        let frame = Frame::Trail {
            len: 2,
            head: second.hash(),
            answer,
            more: false,
            entries: vec![first.encode(), second.encode()],
        };
        m.queue.push_back((ana, chidi, frame.encode()));
        m.run_until_quiet();
        assert_eq!(held(&m, chidi, ana), 0, "answer {answer}: unasked");
        let ana_id = m.devices[ana].id();
        assert!(m.devices[chidi]
            .events
            .iter()
            .any(|e| matches!(e, Event::PeerRefused { peer, by_us: true, .. } if *peer == ana_id)));
        m.disconnect(ana, chidi);
        m.devices[chidi].events.clear();
        m.connect(ana, chidi);
        m.run_until_quiet();
    }
}
