use super::*;
use crate::crypto::AuthorityKey;

fn key(n: u8) -> DeviceKey {
    DeviceKey::from_secret([n; 32])
}

fn actions() -> Vec<Action> {
    let c = ConversationId([3; 16]);
    let m = MessageId([4; 16]);
    vec![
        Action::Unlocked { via: Via::Run },
        Action::UnlockFailed {
            via: Via::Screen,
            count: 3,
        },
        Action::Opened {
            conversation: c,
            via: Via::Screen,
        },
        Action::Sent {
            conversation: c,
            message: m,
        },
        Action::Acknowledged {
            conversation: c,
            message: m,
        },
        Action::Exported {
            conversation: c,
            fhir: true,
            since: 1_700_000_000_000,
        },
        Action::Admitted {
            member: MemberId([5; 16]),
            device: DeviceId([6; 32]),
        },
        Action::Revoked {
            target: RevocationTarget::Device(DeviceId([7; 32])),
        },
        Action::Revoked {
            target: RevocationTarget::Member(MemberId([8; 16])),
        },
        Action::PassphraseChanged { first: true },
        Action::PinChanged { cleared: false },
        Action::Other {
            tag: 200,
            body: vec![1, 2, 3],
        },
    ]
}

/// A trail of every kind of action, stored as the node stores it.
fn trail(k: &DeviceKey) -> Vec<(u64, Vec<u8>)> {
    let mut prev = None;
    let mut out = Vec::new();
    for (i, a) in actions().into_iter().enumerate() {
        let e = Entry::sign(k, prev, 1000 + i as u64, a);
        prev = Some((e.seq, e.hash()));
        out.push((e.seq, e.encode()));
    }
    out
}

#[test]
fn every_action_round_trips_and_verifies() {
    let k = key(1);
    for (place, bytes) in trail(&k) {
        assert!(bytes.len() <= MAX_ENTRY_LEN);
        let e = Entry::decode(&bytes).unwrap();
        assert_eq!(e.seq, place);
        assert!(e.verify());
        assert_eq!(e.encode(), bytes);
        assert_eq!(e.action, actions()[place as usize]);
    }
}

#[test]
fn an_honest_trail_verifies() {
    let k = key(1);
    let t = trail(&k);
    let r = verify_chain(k.device_id(), &t);
    assert_eq!(r.problem, None);
    assert_eq!(r.good, t.len() as u64);
    assert_eq!(r.head, Some(hash_of(&t.last().unwrap().1)));
}

#[test]
fn an_altered_entry_is_named() {
    let k = key(1);
    let mut t = trail(&k);
    // A Sent entry's message id, one bit.
    let n = t[3].1.len();
    t[3].1[n - SIGNATURE_LEN - 1] ^= 1;
    let r = verify_chain(k.device_id(), &t);
    assert_eq!(r.problem, Some(Problem::Altered { seq: 3 }));
    assert_eq!(r.good, 3);
}

#[test]
fn a_removed_entry_is_named() {
    let k = key(1);
    let mut t = trail(&k);
    t.remove(5);
    let r = verify_chain(k.device_id(), &t);
    assert_eq!(r.problem, Some(Problem::Removed { seq: 5 }));
}

#[test]
fn reordered_entries_are_named() {
    let k = key(1);
    let mut t = trail(&k);
    let (a, b) = (t[6].1.clone(), t[7].1.clone());
    t[6].1 = b;
    t[7].1 = a;
    let r = verify_chain(k.device_id(), &t);
    assert_eq!(r.problem, Some(Problem::Reordered { seq: 6, holds: 7 }));
}

#[test]
fn an_entry_replaced_by_its_own_device_breaks_the_chain_after_it() {
    let k = key(1);
    let mut t = trail(&k);
    let prev = Entry::decode(&t[3].1).unwrap();
    let forged = Entry::sign(
        &k,
        Some((prev.seq, prev.hash())),
        5,
        Action::Unlocked { via: Via::Cli },
    );
    t[4].1 = forged.encode();
    let r = verify_chain(k.device_id(), &t);
    assert_eq!(r.problem, Some(Problem::Unchained { seq: 5 }));
}

#[test]
fn another_devices_entry_is_not_taken_for_ours() {
    let (a, b) = (key(1), key(2));
    let mut t = trail(&a);
    t[0].1 = Entry::sign(&b, None, 1, Action::Unlocked { via: Via::Run }).encode();
    let r = verify_chain(a.device_id(), &t);
    assert_eq!(r.problem, Some(Problem::Altered { seq: 0 }));
}

#[test]
fn hostile_bytes_are_refused_without_panic() {
    let k = key(1);
    let t = trail(&k);
    for (_, bytes) in &t {
        for cut in 0..bytes.len() {
            assert!(Entry::decode(&bytes[..cut]).is_err());
        }
    }
    assert!(Entry::decode(&vec![1; MAX_ENTRY_LEN + 1]).is_err());
    let mut bad = t[0].1.clone();
    bad[0] = 9;
    assert!(Entry::decode(&bad).is_err());
}

#[test]
fn an_admin_proof_is_bound_to_its_team_and_device() {
    let authority = AuthorityKey::from_secret([9; 32]);
    let other = AuthorityKey::from_secret([10; 32]);
    let (d, e) = (key(1).device_id(), key(2).device_id());
    let proof = AdminProof::sign(&authority, &d);
    assert!(proof.verify(&authority.team_id(), &d));
    assert!(!proof.verify(&authority.team_id(), &e));
    assert!(!proof.verify(&other.team_id(), &d));
}

#[test]
fn findings_round_trip() {
    let f = Finding {
        device: DeviceId([1; 32]),
        holder: DeviceId([2; 32]),
        shown: 3,
        held: 9,
        diverged: false,
        at: 77,
    };
    assert_eq!(Finding::decode(&f.encode()).unwrap(), f);
    let said = f.describe(&|d| d.short());
    assert!(said.contains("shorter") && said.contains("3..=8"), "{said}");
}
