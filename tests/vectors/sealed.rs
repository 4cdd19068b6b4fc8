//! sealed.json: a sealed envelope (sealed.md): the devices' X25519 keys
//! derived from their Ed25519 identities, an envelope sealed by Ana's
//! phone to Ben's tablet and Chidi's laptop from a fixed random input,
//! what each recipient opens, the blinded tag, the done commitments, the
//! mailbox's record, and envelopes that must be refused.

use super::*;
use huddle::sealed::mailbox::{Limits, Mailbox, Offer, OURS};
use huddle::sealed::{self, Body, Class, Envelope};

/// The random input of the vector's sealing: ChaCha20 from a fixed seed.
const SEED: &str = "sealed:seed";

fn body(c: &Cast) -> (ConversationHeader, Body) {
    let header = headers(c)
        .into_iter()
        .find(|(n, _)| *n == "group")
        .expect("the group header")
        .1;
    let b = Body {
        conversation: header.id,
        header: header.encode(),
        // Stand-in bytes: the envelope's format does not read them (a
        // recipient hands them to the sync checks, sync.md §5.7).
        sync: b"an automerge sync message".to_vec(),
    };
    (header, b)
}

fn seal(c: &Cast) -> Envelope {
    let (header, b) = body(c);
    let to: Vec<[u8; 32]> = ["ben-tablet", "chidi-laptop"]
        .iter()
        .map(|d| sealed::device_x25519_public(&c.dev(d)).expect("a valid key"))
        .collect();
    Envelope::seal(
        &sealed::device_x25519_secret(c.key("ana-phone")),
        &to,
        Class::Urgent,
        sealed::tag(&header, T0),
        T0 + sealed::MAX_LIFETIME_MS,
        &b,
        &mut rand_chacha::ChaCha20Rng::from_seed(label(SEED)),
    )
    .expect("seals")
}

pub(crate) fn gen_sealed(c: &Cast) -> Value {
    let env = seal(c);
    let bytes = env.encode();
    let (header, b) = body(c);
    let keys: Vec<Value> = DEVICES
        .iter()
        .map(|(d, _)| {
            json!({
                "device": d,
                "ed25519_public": hex(&c.dev(d).0),
                "x25519_secret": hex(&sealed::device_x25519_secret(c.key(d))[..]),
                "x25519_public": hex(&sealed::device_x25519_public(&c.dev(d)).unwrap()),
            })
        })
        .collect();
    let opened: Vec<Value> = ["ben-tablet", "chidi-laptop"]
        .iter()
        .map(|d| {
            let o = env
                .open(&sealed::device_x25519_secret(c.key(d)))
                .expect("opens");
            json!({ "device": d, "slot": o.slot, "done_secret": hex(&o.done_secret) })
        })
        .collect();
    let mut mailbox = Mailbox::new(Limits::default());
    assert!(matches!(
        mailbox.offer(T0, bytes.clone(), env.clone(), OURS),
        Offer::Taken { .. }
    ));
    let record = mailbox.record(&Envelope::id_of(&bytes)).expect("held");
    let mut bad_version = bytes.clone();
    bad_version[0] = 2;
    let mut bad_class = bytes.clone();
    bad_class[1] = 3;
    let mut no_slots = bytes[..26].to_vec();
    no_slots.push(0);
    no_slots.extend_from_slice(&bytes[26 + 1 + 2 * (16 + sealed::SLOT_LEN)..]);
    let mut tampered = bytes.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    json!({
        "pattern": "Noise_X_25519_ChaChaPoly_BLAKE2s",
        "body_aead": "XChaCha20-Poly1305",
        "random_input": format!("ChaCha20 seeded with SHA-256(\"huddle/test-vectors/{SEED}\")"),
        "keys": keys,
        "header": hex(&header.encode()),
        "day_ms": T0,
        "tag": hex(&sealed::tag(&header, T0)),
        "body": {
            "conversation": hex(&b.conversation.0),
            "sync": hex(&b.sync),
            "hex": hex(&b.encode()),
        },
        "envelope": {
            "sender": "ana-phone",
            "class": 1,
            "expires": env.expires,
            "done": env.slots.iter().map(|s| hex(&s.done)).collect::<Vec<_>>(),
            "id": hex(&Envelope::id_of(&bytes)),
            "hex": hex(&bytes),
        },
        "opened": opened,
        "not_recipients": ["ana-phone", "max-device"],
        "record": { "received": T0, "hex": hex(&record) },
        "invalid": [
            { "why": "version 2", "hex": hex(&bad_version), "error": "Unknown" },
            { "why": "class 3", "hex": hex(&bad_class), "error": "Unknown" },
            { "why": "no recipients", "hex": hex(&no_slots), "error": "Invalid" },
            { "why": "trailing byte", "hex": hex(&[bytes.as_slice(), &[0]].concat()), "error": "Trailing" },
        ],
        "unopenable": [
            { "why": "the sealed body's last byte flipped", "hex": hex(&tampered) },
        ],
    })
}

#[test]
fn sealed_vectors() {
    let v = load("sealed.json");
    let devices: BTreeMap<String, DeviceKey> = list(&v, "keys")
        .iter()
        .map(|k| {
            let key = DeviceKey::from_secret(label(&format!("device:{}", st(k, "device"))));
            assert_eq!(hex(&key.device_id().0), st(k, "ed25519_public"));
            let id = DeviceId(fixed(k, "ed25519_public"));
            assert_eq!(
                hex(&sealed::device_x25519_public(&id).unwrap()),
                st(k, "x25519_public")
            );
            assert_eq!(
                hex(&sealed::device_x25519_secret(&key)[..]),
                st(k, "x25519_secret")
            );
            (st(k, "device").to_owned(), key)
        })
        .collect();
    let header = ConversationHeader::decode(&bytes(&v, "header")).expect("a header");
    assert_eq!(hex(&sealed::tag(&header, num(&v, "day_ms"))), st(&v, "tag"));
    let b = get(&v, "body");
    let body = Body::decode(&bytes(b, "hex")).expect("a body");
    assert_eq!(body.conversation.0, fixed::<16>(b, "conversation"));
    assert_eq!(body.header, bytes(&v, "header"));
    assert_eq!(body.sync, bytes(b, "sync"));
    assert_eq!(body.encode(), bytes(b, "hex"));

    let e = get(&v, "envelope");
    let raw = bytes(e, "hex");
    let env = Envelope::decode(&raw).expect("the envelope decodes");
    assert_eq!(env.encode(), raw, "it re-encodes byte for byte");
    assert_eq!(hex(&Envelope::id_of(&raw)), st(e, "id"));
    assert_eq!(env.class as u64, num(e, "class"));
    assert_eq!(env.expires, num(e, "expires"));
    assert_eq!(hex(&env.tag), st(&v, "tag"));
    let done: Vec<String> = env.slots.iter().map(|s| hex(&s.done)).collect();
    assert_eq!(
        done,
        list(e, "done")
            .iter()
            .map(|d| d.as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    );
    let sender = sealed::device_x25519_public(&devices[st(e, "sender")].device_id()).unwrap();
    for o in list(&v, "opened") {
        let opened = env
            .open(&sealed::device_x25519_secret(&devices[st(o, "device")]))
            .expect("a recipient opens it");
        assert_eq!(opened.sender, sender, "Noise authenticates the sealer");
        assert_eq!(opened.body, body);
        assert_eq!(opened.slot as u64, num(o, "slot"));
        assert_eq!(hex(&opened.done_secret), st(o, "done_secret"));
        assert_eq!(
            hex(&sealed::done_commitment(&opened.done_secret)),
            done[opened.slot],
            "the slot commits to the secret"
        );
    }
    for d in list(&v, "not_recipients") {
        assert!(env
            .open(&sealed::device_x25519_secret(&devices[d.as_str().unwrap()]))
            .is_none());
    }
    let r = get(&v, "record");
    let mut mailbox = Mailbox::new(Limits::default());
    mailbox
        .restore(num(r, "received"), Envelope::id_of(&raw), &bytes(r, "hex"))
        .expect("the record reads");
    assert_eq!(
        mailbox.record(&Envelope::id_of(&raw)).unwrap(),
        bytes(r, "hex")
    );
    for bad in list(&v, "invalid") {
        expect_decode_error(bad, Envelope::decode(&bytes(bad, "hex")));
    }
    for bad in list(&v, "unopenable") {
        let env = Envelope::decode(&bytes(bad, "hex")).expect("its outside decodes");
        for o in list(&v, "opened") {
            assert!(env
                .open(&sealed::device_x25519_secret(&devices[st(o, "device")]))
                .is_none());
        }
    }
}
