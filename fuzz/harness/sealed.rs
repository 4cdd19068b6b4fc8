//! Sealed envelopes and the mailbox (protocol/sealed.md): an envelope, its
//! body, a mailbox record, and a `MailDone` secret, from any bytes or from
//! a genuine envelope damaged.
//!
//! Promises checked: nothing panics on any bytes; an envelope, a body and
//! a record that decode re-encode to the same bytes; a genuine envelope
//! damaged in any way either opens to exactly the genuine body or does not
//! open (another recipient's slot aside: slots are independent); the
//! mailbox's counts stay the sums of what it holds whatever is
//! offered, restored or shown done.

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use huddle::crypto::DeviceKey;
use huddle::ids::ConversationId;
use huddle::sealed::mailbox::{Limits, Mailbox, OURS};
use huddle::sealed::{self, Body, Class, Envelope};
use rand_chacha::rand_core::SeedableRng;

use super::{structured, Damage};

struct Genuine {
    recipient: [u8; 32],
    body: Body,
    bytes: Vec<u8>,
}

fn genuine() -> &'static Genuine {
    static G: OnceLock<Genuine> = OnceLock::new();
    G.get_or_init(|| {
        let (sender, recipient) = (
            DeviceKey::from_secret([1; 32]),
            DeviceKey::from_secret([2; 32]),
        );
        let body = Body {
            conversation: ConversationId([3; 16]),
            header: vec![4; 40],
            sync: vec![5; 60],
        };
        let to = [
            sealed::device_x25519_public(&recipient.device_id()).expect("a valid key"),
            sealed::device_x25519_public(&sender.device_id()).expect("a valid key"),
        ];
        let env = Envelope::seal(
            &sealed::device_x25519_secret(&sender),
            &to,
            Class::Urgent,
            [6; 16],
            10_000_000,
            &body,
            &mut rand_chacha::ChaCha20Rng::from_seed([7; 32]),
        )
        .expect("seals");
        Genuine {
            recipient: *sealed::device_x25519_secret(&recipient),
            body,
            bytes: env.encode(),
        }
    })
}

#[derive(Arbitrary, Debug)]
enum Case {
    /// Any bytes as an envelope, a body and a mailbox record.
    Raw { bytes: Vec<u8> },
    /// The genuine envelope, damaged, then opened and offered.
    Damaged { damage: Vec<Damage> },
    /// A mailbox with tiny limits, driven by a sequence of steps.
    Mailbox { steps: Vec<Step> },
}

#[derive(Arbitrary, Debug)]
enum Step {
    Offer {
        damage: Vec<Damage>,
        from: u8,
        now: u32,
    },
    Done {
        slot: u16,
        secret: [u8; 32],
    },
    Restore {
        record: Vec<u8>,
    },
    Expire {
        now: u32,
    },
}

pub fn sealed_target(data: &[u8]) {
    let Some(case) = structured::<Case>(data) else {
        return;
    };
    let g = genuine();
    match case {
        Case::Raw { bytes } => {
            if let Ok(e) = Envelope::decode(&bytes) {
                assert_eq!(e.encode(), bytes, "an envelope re-encodes to other bytes");
                let _ = e.open(&g.recipient);
            }
            if let Ok(b) = Body::decode(&bytes) {
                assert_eq!(b.encode(), bytes, "a body re-encodes to other bytes");
            }
            let mut m = Mailbox::new(Limits::default());
            if m.restore(0, Envelope::id_of(&bytes), &bytes).is_ok() {
                let id = m.known_ids().next().copied().expect("restored");
                assert_eq!(
                    m.record(&id).as_deref(),
                    Some(bytes.as_slice()),
                    "a record re-encodes to other bytes"
                );
            }
        }
        Case::Damaged { damage } => {
            let mut bytes = g.bytes.clone();
            for d in &damage {
                d.apply(&mut bytes);
            }
            if let Ok(e) = Envelope::decode(&bytes) {
                if let Some(o) = e.open(&g.recipient) {
                    // Slots are independent: another recipient's slot may
                    // be damaged (that copy is another envelope, by id);
                    // everything our slot binds must be untouched.
                    let genuine = Envelope::decode(&g.bytes).expect("genuine");
                    assert_eq!(o.body, g.body, "a damaged envelope opened to another body");
                    assert_eq!(
                        e.slots[o.slot], genuine.slots[o.slot],
                        "a damaged slot opened"
                    );
                    assert_eq!(
                        (e.class, e.tag, e.expires, e.nonce, &e.body),
                        (
                            genuine.class,
                            genuine.tag,
                            genuine.expires,
                            genuine.nonce,
                            &genuine.body
                        ),
                        "a damaged envelope opened"
                    );
                }
            }
        }
        Case::Mailbox { steps } => {
            let limits = Limits {
                envelopes: 3,
                bytes: 4 * g.bytes.len(),
                tag_envelopes: 2,
                tag_bytes: 3 * g.bytes.len(),
                neighbour_envelopes: 2,
                neighbour_bytes: 3 * g.bytes.len(),
                gone: 2,
            };
            let mut m = Mailbox::new(limits);
            let mut last = None;
            for step in steps.into_iter().take(32) {
                match step {
                    Step::Offer { damage, from, now } => {
                        let mut bytes = g.bytes.clone();
                        for d in &damage {
                            d.apply(&mut bytes);
                        }
                        if let Ok(e) = Envelope::decode(&bytes) {
                            last = Some(Envelope::id_of(&bytes));
                            let from = if from == 0 { OURS } else { [from; 32] };
                            let _ = m.offer(u64::from(now), bytes, e, from);
                        }
                    }
                    Step::Done { slot, secret } => {
                        if let Some(id) = last {
                            let _ = m.done(&id, slot, secret);
                        }
                    }
                    Step::Restore { record } => {
                        let _ = m.restore(0, Envelope::id_of(&record), &record);
                    }
                    Step::Expire { now } => {
                        let _ = m.expire(u64::from(now));
                    }
                }
                let (n, bytes) = m.usage();
                let held: Vec<_> = m.held_ids();
                assert_eq!(held.len(), n, "the order and the held set differ");
                let sum: usize = held
                    .iter()
                    .map(|id| m.get(id).expect("held").bytes.len())
                    .sum();
                assert_eq!(sum, bytes, "the byte count drifted");
            }
        }
    }
}
