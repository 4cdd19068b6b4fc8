//! Sealed relaying on the in-memory mesh (protocol/sealed.md): a
//! conversation crosses a device that is a member of nothing, which never
//! holds a byte of it in the clear; envelopes are deleted once delivered;
//! what a carrier is handed is bounded, and what a non-member seals is not
//! taken.

mod common;

use common::sealed::*;
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
    let held = envelopes_received(&m, cleo);
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

/// An envelope whose changes wait for others that never come is
/// forgotten with it when it expires, not kept waiting for good.
#[test]
fn what_waits_of_an_envelope_goes_when_it_expires() {
    let (mut m, ana, ben, cleo) = sites();
    let t = m.now + 120_000;
    m.run_until(t);
    m.connect(ana, cleo);
    let conv = group_of(&mut m, ana, &[ana, ben], "Transfer");
    m.run_until_quiet();
    m.send_text(ana, conv, "first");
    m.run_until_quiet();
    m.send_text(ana, conv, "second");
    m.run_until_quiet();
    // Only the envelope of "second" reaches Ben, through a porter who
    // carries nothing else: it opens, and its change waits for "first".
    let last = envelopes_received(&m, cleo).pop().expect("carried");
    let eve = m.add_member("Eve", &["porter"]);
    m.connect(ben, eve);
    m.run_until_quiet();
    let frame = Frame::Sealed {
        envelopes: vec![last],
    }
    .encode();
    m.queue.push_back((eve, ben, frame));
    m.run_until_quiet();
    assert!(bodies(&m, ben, conv).is_empty());
    assert_eq!(m.devices[ben].node.mail_stats().waiting, 1);
    let t = m.now + sealed::MAX_LIFETIME_MS + 3_600_000;
    m.run_until(t);
    assert_eq!(m.devices[ben].node.mail_stats().waiting, 0);
    // What Ben holds is his latest request for what it waited on (repair:
    // each withdrawn when the next is sealed), not the expired envelope.
    assert!(m.devices[ben].node.mail_stats().envelopes <= 1);
    // A week of asking, twice as far apart each time: a few dozen
    // requests at most, not one every five minutes (2,016).
    let withdrawn = m.devices[ben].node.mail_stats().delivered;
    assert!((5..32).contains(&withdrawn), "{withdrawn} requests");
}

/// Ana and Ben, members of "Transfer", are connected; Cleo (a member of
/// nothing) is connected to Ana.
fn ward() -> (Mesh, usize, usize, usize, huddle::ConversationId) {
    let (mut m, ana, ben, cleo) = sites();
    m.connect(ana, ben);
    m.connect(ana, cleo);
    let conv = group_of(&mut m, ana, &[ana, ben], "Transfer");
    m.run_until_quiet();
    // Long after every start: a device away now is not in a grace period
    // that our own start began.
    let t = m.now + 120_000;
    m.run_until(t);
    (m, ana, ben, cleo, conv)
}

fn urgent(conversation: huddle::ConversationId, body: &str) -> huddle::Command {
    huddle::Command::Send {
        conversation,
        body: body.into(),
        priority: huddle::Priority::Urgent,
        reply_to: None,
        fields: Default::default(),
    }
}

fn sealed_by(m: &Mesh, i: usize) -> usize {
    m.devices[i].node.mail_stats().envelopes
}

#[test]
fn a_push_lost_long_before_a_member_leaves_is_sealed_to_it() {
    let (mut m, ana, ben, cleo, conv) = ward();
    m.send_text(ana, conv, "lost push marker-81");
    // The push to Ben is lost; nothing else tells him for a while, and
    // then the link goes (longer after the push than any in-flight window).
    m.queue.retain(|(a, b, _)| !(*a == ana && *b == ben));
    m.now += 20_000;
    m.disconnect(ana, ben);
    m.run_until_quiet();
    assert!(bodies(&m, ben, conv).is_empty());
    // Ben never showed he holds it: once his grace ends, it is sealed to
    // him and Cleo carries it.
    assert!(
        sealed_by(&m, cleo) >= 1,
        "{:?}",
        m.devices[cleo].node.mail_stats()
    );
    walk(&mut m, cleo, ana, ben);
    assert_eq!(bodies(&m, ben, conv), ["lost push marker-81"]);
}

#[test]
fn an_urgent_push_lost_with_the_link_is_sealed_at_once() {
    let (mut m, ana, ben, cleo, conv) = ward();
    m.command(ana, urgent(conv, "lost urgent marker-17"))
        .expect("send");
    m.queue.retain(|(a, b, _)| !(*a == ana && *b == ben));
    m.disconnect(ana, ben);
    // Well inside Ben's grace period: an urgent message does not wait it out.
    let t = m.now + 5_000;
    m.run_until(t);
    assert!(
        sealed_by(&m, cleo) >= 1,
        "{:?}",
        m.devices[cleo].node.mail_stats()
    );
    walk(&mut m, cleo, ana, ben);
    assert_eq!(bodies(&m, ben, conv), ["lost urgent marker-17"]);
}

#[test]
fn an_acknowledgement_long_delivered_costs_no_envelope_on_a_blip() {
    let (mut m, ana, ben, cleo, conv) = ward();
    let Ok(huddle::Reply::Message(message)) = m.command(ana, urgent(conv, "to acknowledge")) else {
        panic!("send failed");
    };
    m.run_until_quiet();
    let ack = huddle::Command::Ack {
        conversation: conv,
        message,
    };
    m.command(ben, ack).expect("ack");
    // Ana reads the acknowledgement and says nothing back; a minute later
    // her device blips for 10 s.
    let t = m.now + 60_000;
    m.run_until(t);
    m.disconnect(ana, ben);
    let t = m.now + 10_000;
    m.run_until(t);
    m.connect(ana, ben);
    m.run_until_quiet();
    for i in [ana, ben, cleo] {
        assert_eq!(sealed_by(&m, i), 0, "device {i} holds an envelope");
    }
}

#[test]
fn a_member_back_within_its_grace_costs_no_envelope() {
    let (mut m, ana, ben, cleo, conv) = ward();
    m.disconnect(ana, ben);
    m.send_text(ana, conv, "while Ben restarts");
    // Ben is back half a minute later: sync brings it, nothing is sealed.
    let t = m.now + 30_000;
    m.run_until(t);
    m.connect(ana, ben);
    m.run_until_quiet();
    assert_eq!(bodies(&m, ben, conv), ["while Ben restarts"]);
    for i in [ana, ben, cleo] {
        assert_eq!(sealed_by(&m, i), 0, "device {i} holds an envelope");
    }
    // Gone for longer, he is sealed to when the grace ends.
    m.disconnect(ana, ben);
    m.send_text(ana, conv, "while Ben is away");
    m.run_until_quiet();
    assert!(sealed_by(&m, cleo) >= 1);
}

#[test]
fn what_is_owed_survives_a_visit_too_short_to_sync() {
    let (mut m, ana, ben, cleo, conv) = ward();
    m.disconnect(ana, ben);
    m.send_text(ana, conv, "owed across a visit marker-93");
    // Ben is back 20 s later, proves he is a member, and is gone again
    // before anything of the conversation crosses.
    m.now += 20_000;
    m.connect(ana, ben);
    let catalog = |f: &Vec<u8>| matches!(Frame::decode(f), Ok(Frame::Catalog { .. }));
    while !m.queue.iter().any(|(_, _, f)| catalog(f)) {
        assert!(m.step(), "the hello ends");
    }
    m.disconnect(ana, ben);
    m.run_until_quiet();
    walk(&mut m, cleo, ana, ben);
    assert_eq!(bodies(&m, ben, conv), ["owed across a visit marker-93"]);
}

#[test]
fn what_is_owed_survives_a_restart_in_the_grace_period() {
    let (mut m, ana, ben, cleo, conv) = ward();
    m.disconnect(ana, ben);
    m.send_text(ana, conv, "owed across a crash");
    m.crash_restart(ana);
    m.connect(ana, cleo);
    m.run_until_quiet();
    walk(&mut m, cleo, ana, ben);
    assert_eq!(bodies(&m, ben, conv), ["owed across a crash"]);
}

#[test]
fn a_history_for_a_device_new_to_the_directory_is_sealed_by_the_creator_only() {
    let (mut m, [ana, ben, dan, cleo], conv) = transfer(12, "history marker-91");
    let phone = enrol_bens_phone(&mut m, ben, cleo);
    // Ana (the creator) and then Dan learn of it; only Ana seals it the
    // conversation's history.
    m.connect(ana, cleo);
    m.run_until_quiet();
    let phone_x = sealed::device_x25519_secret(&m.devices[phone].key);
    let of = |i: usize| sealed::device_x25519_public(&m.devices[i].id()).unwrap();
    let sealed_by = |i: usize| -> Vec<automerge::ChangeHash> {
        envelopes_received(&m, cleo)
            .into_iter()
            .filter_map(|e| Envelope::decode(&e).ok()?.open(&phone_x))
            .filter(|o| o.sender == of(i))
            .flat_map(|o| huddle::replica::sync_change_hashes(&o.body.sync).unwrap())
            .collect()
    };
    let (history, dans) = (sealed_by(ana), sealed_by(dan));
    assert!(!history.is_empty(), "the creator seals the history");
    // Dan seals at most its own changes (its receipts), which Ana's
    // history holds too: one copy of the history, not one per member.
    assert!(
        dans.len() < history.len() && dans.iter().all(|h| history.contains(h)),
        "Dan seals no history: {} of Dan's, {} in the history",
        dans.len(),
        history.len()
    );
    walk(&mut m, cleo, ana, phone);
    assert_eq!(bodies(&m, phone, conv), ["history marker-91"]);
}

/// Dan writes while cut off from Ana, the creator; a new device of Ben's
/// enrols, and Ana seals it the history, which lacks Dan's message. Dan,
/// learning of the device later, seals it his own changes: nobody else
/// can (hospital-sites seed 313).
#[test]
fn a_members_change_the_creator_never_held_reaches_a_device_new_to_both() {
    let (mut m, [ana, ben, dan, cleo], conv) = transfer(13, "history marker-93");
    m.disconnect(ana, dan);
    m.send_text(dan, conv, "far side marker-94");
    m.run_until_quiet();
    let phone = enrol_bens_phone(&mut m, ben, cleo);
    // Ana learns of the phone and seals it the history she holds.
    m.connect(ana, cleo);
    m.run_until_quiet();
    // Then Dan, after his grace for the phone.
    walk(&mut m, cleo, ana, dan);
    let t = m.now + 120_000;
    m.run_until(t);
    walk(&mut m, cleo, dan, phone);
    let mut got = bodies(&m, phone, conv);
    got.sort();
    assert_eq!(got, ["far side marker-94", "history marker-93"]);
}

use rand_core::SeedableRng;
