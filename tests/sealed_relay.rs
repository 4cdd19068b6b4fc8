//! Sealed relaying on the in-memory mesh (protocol/sealed.md): a
//! conversation crosses a device that is a member of nothing, which never
//! holds a byte of it in the clear; envelopes are deleted once delivered;
//! what a carrier is handed is bounded, and what a non-member seals is not
//! taken.

mod common;

use common::*;
use huddle::node::Event;
use huddle::sealed::{self, Body, Class, Envelope};
use huddle::store::Store;
use huddle::wire::Frame;

/// Ana (site 1) and Ben (site 2) are in a group; Cleo is a member of the
/// team and of nothing else, and carries.
fn sites() -> (Mesh, usize, usize, usize) {
    let mut m = Mesh::new(11);
    let ana = m.add_member("Ana", &["nurse"]);
    let ben = m.add_member("Ben", &["nurse"]);
    let cleo = m.add_member("Cleo", &["porter"]);
    // Everyone learns everyone's certificate through Cleo, never meeting.
    m.connect(ana, cleo);
    m.connect(ben, cleo);
    m.run_until_quiet();
    m.disconnect(ana, cleo);
    m.disconnect(ben, cleo);
    m.run_until_quiet();
    (m, ana, ben, cleo)
}

fn bodies(m: &Mesh, i: usize, conv: huddle::ConversationId) -> Vec<String> {
    m.devices[i]
        .node
        .history(&conv, None)
        .unwrap_or_default()
        .into_iter()
        .map(|r| r.body)
        .collect()
}

fn holds_text(m: &Mesh, i: usize, text: &str) -> bool {
    let needle = text.as_bytes();
    m.devices[i]
        .store
        .scan_prefix(b"")
        .unwrap()
        .iter()
        .any(|(k, v)| {
            k.windows(needle.len()).any(|w| w == needle)
                || v.windows(needle.len()).any(|w| w == needle)
        })
}

#[test]
fn a_conversation_crosses_a_carrier_that_is_a_member_of_nothing() {
    let (mut m, ana, ben, cleo) = sites();
    let conv = group_of(&mut m, ana, &[ana, ben], "Transfer");
    m.send_text(ana, conv, "bed 4 transfer at 14:00 marker-71");
    m.run_until_quiet();
    assert!(bodies(&m, ben, conv).is_empty(), "Ben is out of reach");

    // Cleo picks it up on site 1 and walks to site 2.
    m.connect(ana, cleo);
    m.run_until_quiet();
    // The new conversation (its header, sealed when Ana made it) and the
    // message.
    assert_eq!(m.devices[cleo].node.mail_stats().envelopes, 2);
    m.disconnect(ana, cleo);
    m.crash_restart(cleo); // the mailbox is in the store
    m.connect(ben, cleo);
    m.run_until_quiet();
    assert_eq!(bodies(&m, ben, conv), ["bed 4 transfer at 14:00 marker-71"]);
    assert!(
        m.devices[ben].events.iter().any(
            |e| matches!(e, Event::ConversationAdded { conversation, .. } if *conversation == conv)
        ),
        "Ben takes the conversation from the envelope's header"
    );

    // Ben's answer and receipts ride back the same way.
    m.send_text(ben, conv, "ready marker-72");
    m.run_until_quiet();
    m.disconnect(ben, cleo);
    m.connect(ana, cleo);
    m.run_until_quiet();
    assert_eq!(
        bodies(&m, ana, conv),
        ["bed 4 transfer at 14:00 marker-71", "ready marker-72"]
    );

    // The carrier never held a byte of it in the clear, nor the conversation.
    assert!(!m.devices[cleo].node.conversation_ids().any(|c| *c == conv));
    for marker in ["marker-71", "marker-72", "Transfer"] {
        assert!(!holds_text(&m, cleo, marker), "Cleo's store holds {marker}");
        for f in &m.devices[cleo].received {
            assert!(
                !f.windows(marker.len()).any(|w| w == marker.as_bytes()),
                "Cleo was sent {marker}"
            );
        }
        assert!(
            holds_text(&m, ana, marker),
            "the check can see it: Ana's store holds {marker}"
        );
    }
}

#[test]
fn envelopes_are_deleted_once_every_recipient_has_them() {
    let (mut m, ana, ben, cleo) = sites();
    let conv = group_of(&mut m, ana, &[ana, ben], "Transfer");
    m.send_text(ana, conv, "one");
    m.send_text(ana, conv, "two");
    // All three meet: Ben opens what Cleo carried, and his done secrets
    // delete the envelopes everywhere (his receipts, sealed to Ana before
    // she was connected, too).
    m.connect(ana, cleo);
    m.run_until_quiet();
    m.connect(ben, cleo);
    m.run_until_quiet();
    assert_eq!(bodies(&m, ben, conv), ["one", "two"]);
    m.run_until_quiet();
    for i in [ana, ben, cleo] {
        let s = m.devices[i].node.mail_stats();
        assert_eq!(s.envelopes, 0, "device {i} still holds {s:?}");
        assert!(s.delivered >= 2, "device {i}: {s:?}");
    }
    // After a restart the deleted ones are still known, so a late copy is
    // not taken again.
    m.crash_restart(cleo);
    assert!(m.devices[cleo].node.mail_stats().delivered >= 2);
}

#[test]
fn a_change_sealed_by_a_non_member_is_not_taken() {
    let (mut m, ana, ben, cleo) = sites();
    let conv = group_of(&mut m, ana, &[ana, ben], "Transfer");
    m.send_text(ana, conv, "genuine");
    m.connect(ana, cleo);
    m.run_until_quiet();
    m.disconnect(ana, cleo);
    // Cleo opens nothing (she is not a recipient), but she holds the
    // envelope; she re-seals its sync message under her own key to Ben.
    let held: Vec<Vec<u8>> = m.devices[cleo]
        .received
        .iter()
        .filter_map(|f| match Frame::decode(f) {
            Ok(Frame::Sealed { envelopes }) => Some(envelopes),
            _ => None,
        })
        .flatten()
        .collect();
    // The new conversation's header, then the message.
    assert_eq!(held.len(), 2);
    let env = Envelope::decode(&held[1]).unwrap();
    let ana_x = sealed::device_x25519_secret(&m.devices[ana].key);
    let body = env.open(&ana_x);
    assert!(body.is_none(), "Ana's own envelope is not sealed to her");
    let ben_x = sealed::device_x25519_secret(&m.devices[ben].key);
    let opened = env.open(&ben_x).expect("sealed to Ben");
    let forged = Envelope::seal(
        &sealed::device_x25519_secret(&m.devices[cleo].key),
        &[sealed::device_x25519_public(&m.devices[ben].id()).unwrap()],
        Class::Stat,
        env.tag,
        env.expires,
        &Body { ..opened.body },
        &mut rand_chacha::ChaCha20Rng::from_seed([5; 32]),
    )
    .unwrap();
    m.connect(ben, cleo);
    m.run_until_quiet();
    let before = m.devices[ben].node.mail_stats().refused;
    let frame = Frame::Sealed {
        envelopes: vec![forged.encode()],
    }
    .encode();
    m.queue.push_back((cleo, ben, frame));
    m.run_until_quiet();
    assert_eq!(m.devices[ben].node.mail_stats().refused, before + 1);
    // The genuine one, carried by the same Cleo, is taken.
    assert_eq!(bodies(&m, ben, conv), ["genuine"]);
}

#[test]
fn a_recipient_met_directly_gets_the_change_by_sync_and_its_slot_is_retired() {
    let (mut m, ana, ben, _cleo) = sites();
    let conv = group_of(&mut m, ana, &[ana, ben], "Transfer");
    m.send_text(ana, conv, "sealed while apart");
    m.run_until_quiet();
    assert_eq!(m.devices[ana].node.mail_stats().envelopes, 2);
    m.connect(ana, ben);
    m.run_until_quiet();
    assert_eq!(bodies(&m, ben, conv), ["sealed while apart"]);
    let sealed_frames = |m: &Mesh| {
        m.devices[ben]
            .received
            .iter()
            .filter(|f| matches!(Frame::decode(f), Ok(Frame::Sealed { .. })))
            .count()
    };
    assert_eq!(
        sealed_frames(&m),
        0,
        "Ben gets the change by sync, not the envelope"
    );
    // At the next maintenance Ana sees that Ben holds the change and
    // shows his slot's secret for him: the envelope is delivered.
    let t = m.now + 31_000;
    m.run_until(t);
    let s = m.devices[ana].node.mail_stats();
    assert_eq!((s.envelopes, s.delivered), (0, 2), "{s:?}");
}

use rand_core::SeedableRng;
