//! Repair over envelopes (protocol/sealed.md §3.1): a recipient whose
//! envelopes wait on changes nobody sealed it asks one member device for
//! them; what is answered, and what is not.

mod common;

use common::sealed::*;
use common::*;
use huddle::sealed::{self, Body, Class, Envelope};
use huddle::wire::Frame;
use rand_core::SeedableRng;

/// Ana created "Transfer" and is revoked; Ben's new phone is sealed Dan's
/// message, which depends on Ana's changes, and nobody seals it the
/// history. The phone asks a member for what it lacks, and gets it.
#[test]
fn a_device_missing_what_an_envelope_depends_on_asks_a_member_for_it() {
    let (mut m, [ana, ben, dan, cleo], conv) = transfer(14, "history marker-95");
    m.disconnect(ana, dan);
    let rev = huddle::membership::Revocation::sign(
        &m.authority,
        huddle::membership::RevocationTarget::Device(m.devices[ana].id()),
        m.now,
    );
    m.command(dan, huddle::Command::Revoke(rev))
        .expect("revoke");
    m.run_until_quiet();
    let phone = enrol_bens_phone(&mut m, ben, cleo);
    // Dan learns of the phone (and Cleo of the revocation), and writes.
    walk(&mut m, cleo, phone, dan);
    m.send_text(dan, conv, "dan marker-96");
    let t = m.now + 120_000;
    m.run_until(t);
    walk(&mut m, cleo, dan, phone);
    assert!(
        bodies(&m, phone, conv).is_empty(),
        "it waits for Ana's changes"
    );
    // The phone asks one member device at a time, Ben's laptop (which
    // never got the conversation) or Dan; Cleo carries the requests and
    // the answer back.
    for _ in 0..2 {
        let t = m.now + 300_000;
        m.run_until(t);
        walk(&mut m, cleo, phone, dan);
        walk(&mut m, cleo, dan, ben);
        walk(&mut m, cleo, ben, phone);
    }
    let mut got = bodies(&m, phone, conv);
    got.sort();
    assert_eq!(got, ["dan marker-96", "history marker-95"]);
}

/// Only a request sealed to one device that names changes it needs is
/// answered: not one sealed to many (one small envelope must not make
/// every recipient seal a history), and not a new conversation's
/// announcement.
#[test]
fn a_request_to_many_devices_or_naming_no_need_is_not_answered() {
    let (mut m, [ana, ben, dan, cleo], conv) = transfer(15, "history marker-97");
    m.disconnect(ana, dan);
    let need = {
        let c = m.devices[ana].node.conversation(&conv).unwrap();
        c.replica().heads()
    };
    // The header, from what Ana sealed Ben (carried by Cleo).
    m.connect(ana, cleo);
    m.run_until_quiet();
    let ben_x = sealed::device_x25519_secret(&m.devices[ben].key);
    let header = envelopes_received(&m, cleo)
        .iter()
        .find_map(|e| Envelope::decode(e).ok()?.open(&ben_x))
        .expect("sealed to Ben")
        .body
        .header;
    let x = |i: usize| sealed::device_x25519_public(&m.devices[i].id()).unwrap();
    let request = |to: &[[u8; 32]], need: Vec<automerge::ChangeHash>| {
        let sync = huddle::replica::LocalPush::request(Vec::new(), need)
            .message_for(&mut automerge::sync::State::new());
        Envelope::seal(
            &sealed::device_x25519_secret(&m.devices[ben].key),
            to,
            Class::Routine,
            [0; 16],
            m.now + 3_600_000,
            &Body {
                conversation: conv,
                header: header.clone(),
                sync,
            },
            &mut rand_chacha::ChaCha20Rng::from_seed([6; 32]),
        )
        .unwrap()
        .encode()
    };
    let to_many = request(&[x(ana), x(dan)], need.clone());
    let no_need = request(&[x(ana)], Vec::new());
    let alone = request(&[x(ana)], need);
    // Ana's own envelopes go to Cleo, her one peer: an answer would.
    let sent = |m: &Mesh| envelopes_received(m, cleo).len();
    let before = sent(&m);
    for env in [to_many, no_need] {
        let frame = Frame::Sealed {
            envelopes: vec![env],
        }
        .encode();
        m.queue.push_back((cleo, ana, frame));
        m.run_until_quiet();
    }
    assert_eq!(sent(&m), before, "not answered");
    // The same request to Ana alone is answered: the positive control.
    let frame = Frame::Sealed {
        envelopes: vec![alone],
    }
    .encode();
    m.queue.push_back((cleo, ana, frame));
    m.run_until_quiet();
    assert_eq!(sent(&m), before + 1, "answered");
}
