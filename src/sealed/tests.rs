use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use super::*;
use crate::crypto::DeviceKey;

fn key(n: u8) -> DeviceKey {
    DeviceKey::from_secret([n; 32])
}

fn body() -> Body {
    Body {
        conversation: ConversationId([7; 16]),
        header: b"a header".to_vec(),
        sync: b"a sync message".to_vec(),
    }
}

fn sealed(to: &[u8]) -> Envelope {
    sealed_with(to, [3; 32])
}

/// From device 1 to `to`, drawing from `seed`.
fn sealed_with(to: &[u8], seed: [u8; 32]) -> Envelope {
    let recipients: Vec<[u8; 32]> = to
        .iter()
        .map(|n| device_x25519_public(&key(*n).device_id()).unwrap())
        .collect();
    Envelope::seal(
        &device_x25519_secret(&key(1)),
        &recipients,
        Class::Urgent,
        [9; 16],
        1_000,
        &body(),
        &mut ChaCha20Rng::from_seed(seed),
    )
    .unwrap()
}

#[test]
fn each_recipient_opens_it_and_nobody_else() {
    // Opening runs Noise's static-static DH: it succeeds only if the X25519
    // keys each side derives from the other's device id agree.
    let env = sealed(&[2, 3]);
    let bytes = env.encode();
    assert_eq!(Envelope::decode(&bytes).unwrap(), env);
    for (n, slot) in [(2u8, 0usize), (3, 1)] {
        let o = env
            .open(&device_x25519_secret(&key(n)))
            .expect("a recipient opens it");
        assert_eq!(o.body, body());
        assert_eq!(o.slot, slot);
        assert_eq!(o.sender, device_x25519_public(&key(1).device_id()).unwrap());
        assert_eq!(done_commitment(&o.done_secret), env.slots[slot].done);
    }
    for n in [1u8, 4] {
        assert!(
            env.open(&device_x25519_secret(&key(n))).is_none(),
            "device {n}"
        );
    }
    assert!(
        !bytes.windows(14).any(|w| w == b"a sync message"),
        "the body is sealed"
    );
}

#[test]
fn any_change_to_the_outside_or_inside_fails_to_open() {
    let env = sealed(&[2]);
    let ours = device_x25519_secret(&key(2));
    let mut variants = Vec::new();
    let mut e = env.clone();
    e.class = Class::Stat;
    variants.push(e);
    let mut e = env.clone();
    e.tag[0] ^= 1;
    variants.push(e);
    let mut e = env.clone();
    e.expires += 1;
    variants.push(e);
    let mut e = env.clone();
    e.slots[0].done[0] ^= 1;
    variants.push(e);
    let mut e = env.clone();
    e.body[3] ^= 1;
    variants.push(e);
    let mut e = env.clone();
    e.nonce[0] ^= 1;
    variants.push(e);
    for (i, v) in variants.iter().enumerate() {
        assert!(v.open(&ours).is_none(), "variant {i} opened");
    }
    // A recipient cannot pass a body of its own off under another's slot:
    // the slot commits to the body's hash.
    let other = Envelope::seal(
        &device_x25519_secret(&key(2)),
        &[device_x25519_public(&key(3).device_id()).unwrap()],
        Class::Urgent,
        [9; 16],
        1_000,
        &Body {
            sync: b"forged".to_vec(),
            ..body()
        },
        &mut ChaCha20Rng::from_seed([4; 32]),
    )
    .unwrap();
    let mut spliced = sealed(&[3]);
    spliced.nonce = other.nonce;
    spliced.body = other.body;
    assert!(spliced.open(&device_x25519_secret(&key(3))).is_none());
}

#[test]
fn decoding_is_bounded() {
    let bytes = sealed(&[2]).encode();
    for cut in 0..bytes.len() {
        assert!(Envelope::decode(&bytes[..cut]).is_err(), "cut at {cut}");
    }
    let mut no_slots = bytes[..26].to_vec();
    no_slots.push(0);
    assert!(Envelope::decode(&no_slots).is_err());
    let mut long = bytes.clone();
    long.push(0);
    assert!(Envelope::decode(&long).is_err());
}

#[test]
fn the_tag_changes_daily_and_differs_by_conversation() {
    let k = key(1);
    let role = |r: &str| {
        ConversationHeader::create(
            &k,
            crate::header::ConversationKind::Role { role: r.into() },
            0,
        )
    };
    let (a, b) = (role("nurse"), role("porter"));
    let day = 24 * 3600 * 1000;
    assert_eq!(tag(&a, 5), tag(&a, day - 1));
    assert_ne!(tag(&a, 5), tag(&a, day));
    assert_ne!(tag(&a, 5), tag(&b, 5));
}

#[test]
fn the_slots_of_one_envelope_share_its_ephemeral_key_and_each_still_opens() {
    let env = sealed(&[2, 3, 4]);
    // A Noise X message begins with the ephemeral public key.
    let e = &env.slots[0].noise[..32];
    assert!(env.slots.iter().all(|s| &s.noise[..32] == e));
    // The next envelope has another.
    let next = sealed_with(&[2], [4; 32]);
    assert_ne!(&next.slots[0].noise[..32], e);
    for (n, slot) in [(2u8, 0usize), (3, 1), (4, 2)] {
        let o = env.open(&device_x25519_secret(&key(n))).expect("opens");
        assert_eq!((o.slot, o.body), (slot, body()));
    }
    // A slot swapped in from another envelope (its own ephemeral key,
    // another body) does not open for its recipient, and the others,
    // tried after it with another ephemeral key, still do.
    let mut mixed = env.clone();
    mixed.slots[0] = next.slots[0].clone();
    assert!(mixed.open(&device_x25519_secret(&key(2))).is_none());
    for (n, slot) in [(3u8, 1usize), (4, 2)] {
        let o = mixed.open(&device_x25519_secret(&key(n))).expect("opens");
        assert_eq!(o.slot, slot);
    }
}
