//! The audit trail's decoders (protocol/sync.md §8): an entry, a finding,
//! a whole stored trail walked by `verify_chain`, and a store's `trail/`
//! records grouped by device.
//!
//! Promises checked: nothing panics on any bytes; a genuine entry damaged
//! in any way either still verifies as exactly the genuine entry or does
//! not verify; a genuine trail with one entry damaged, removed or two
//! swapped is named at the first place it touched, and never reported
//! whole; undamaged, every entry round-trips.

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use huddle::crypto::DeviceKey;
use huddle::ids::{ConversationId, MessageId};
use huddle::store::keys;
use huddle::trail::{group_records, verify_chain, Action, Entry, Finding, Problem, Via};

use super::{structured, Damage};

/// Eight genuine entries of one device's trail.
fn trail() -> &'static (DeviceKey, Vec<Vec<u8>>) {
    static T: OnceLock<(DeviceKey, Vec<Vec<u8>>)> = OnceLock::new();
    T.get_or_init(|| {
        let key = DeviceKey::from_secret([7; 32]);
        let c = ConversationId([1; 16]);
        let actions = [
            Action::Unlocked { via: Via::Run },
            Action::Opened {
                conversation: c,
                via: Via::Screen,
            },
            Action::Sent {
                conversation: c,
                message: MessageId([2; 16]),
            },
            Action::UnlockFailed {
                via: Via::Cli,
                count: 3,
            },
            Action::Exported {
                conversation: c,
                fhir: true,
                since: 5,
            },
            Action::PassphraseChanged { first: false },
            Action::PinChanged { cleared: true },
            Action::Other {
                tag: 99,
                body: vec![1, 2],
            },
        ];
        let mut prev = None;
        let mut out = Vec::new();
        for (i, a) in actions.into_iter().enumerate() {
            let e = Entry::sign(&key, prev, 1_000 + i as u64, a);
            prev = Some((e.seq, e.hash()));
            out.push(e.encode());
        }
        (key, out)
    })
}

#[derive(Arbitrary, Debug)]
enum Case {
    /// Any bytes as an entry and as a finding.
    Raw { bytes: Vec<u8> },
    /// A genuine entry, damaged.
    Entry { which: u8, damage: Vec<Damage> },
    /// The genuine trail with one change.
    Trail { which: u8, change: Change },
    /// Any records as a store's `trail/` prefix.
    Records { records: Vec<(Vec<u8>, Vec<u8>)> },
}

#[derive(Arbitrary, Debug)]
enum Change {
    Damage(Vec<Damage>),
    Remove,
    SwapWithNext,
}

pub fn trail_target(data: &[u8]) {
    let Some(case) = structured::<Case>(data) else {
        return;
    };
    let (key, genuine) = trail();
    let device = key.device_id();
    match case {
        Case::Raw { bytes } => {
            if let Ok(e) = Entry::decode(&bytes) {
                assert_eq!(e.encode(), bytes, "an entry re-encodes to other bytes");
                let _ = e.verify();
            }
            if let Ok(f) = Finding::decode(&bytes) {
                assert_eq!(f.encode(), bytes, "a finding re-encodes to other bytes");
            }
        }
        Case::Entry { which, damage } => {
            let original = &genuine[usize::from(which) % genuine.len()];
            let mut bytes = original.clone();
            for d in &damage {
                d.apply(&mut bytes);
            }
            if let Ok(e) = Entry::decode(&bytes) {
                if e.verify() {
                    assert_eq!(&bytes, original, "a damaged entry verified");
                }
            }
        }
        Case::Trail { which, change } => {
            let at = usize::from(which) % genuine.len();
            let mut records: Vec<(u64, Vec<u8>)> = (0u64..).zip(genuine.iter().cloned()).collect();
            let expected = match change {
                Change::Damage(damage) => {
                    for d in &damage {
                        d.apply(&mut records[at].1);
                    }
                    (records[at].1 != genuine[at]).then_some(Problem::Altered { seq: at as u64 })
                }
                Change::Remove => {
                    records.remove(at);
                    (at + 1 < genuine.len()).then_some(Problem::Removed { seq: at as u64 })
                }
                Change::SwapWithNext => {
                    if at + 1 == genuine.len() {
                        return;
                    }
                    let next = records[at + 1].1.clone();
                    records[at + 1].1 = std::mem::replace(&mut records[at].1, next);
                    Some(Problem::Reordered {
                        seq: at as u64,
                        holds: at as u64 + 1,
                    })
                }
            };
            let report = verify_chain(device, &records);
            assert_eq!(report.problem, expected, "the wrong place was named");
        }
        Case::Records { records } => {
            let pairs = records
                .into_iter()
                .map(|(k, v)| ([keys::TRAIL_PREFIX, k.as_slice()].concat(), v))
                .collect();
            for (d, entries) in group_records(pairs) {
                let _ = verify_chain(d, &entries);
            }
        }
    }
}
