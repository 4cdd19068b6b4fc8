//! Urgent messages that cannot be missed (sync.md §7.6), on the in-memory
//! mesh in virtual time: re-notification on the recipients' devices,
//! escalation into a role channel once per level, on-call conflicts,
//! reminders with no network, and the version-2 team document upgrade.

mod common;

use common::{group_of, request, Mesh, T0};
use huddle::clinical::{AssignmentDraft, ClinicalPolicy, SignedPolicy, Step};
use huddle::message::{AckBy, Fields, Priority, Reminder};
use huddle::node::{Command, Event, Reply};
use huddle::{ConversationId, MessageId};

const S: u64 = 1_000;

/// STAT shortened to seconds: any recipient, every 2 s, 3 times; level 1
/// (charge-nurse) after 5 s.
fn seconds_policy() -> ClinicalPolicy {
    let mut p = ClinicalPolicy::default();
    p.stat.every_ms = 2 * S;
    p.stat.times = 3;
    p.stat.ladder = vec![Step {
        after_ms: 5 * S,
        role: "charge-nurse".into(),
    }];
    p
}

fn set_policy(m: &mut Mesh, by: usize, p: ClinicalPolicy) {
    let signed = SignedPolicy::sign(&m.authority, p, m.now).expect("a valid policy");
    m.command(by, Command::SetPolicy(Box::new(signed)))
        .expect("the authority's policy is installed");
}

fn send(
    m: &mut Mesh,
    i: usize,
    conv: ConversationId,
    priority: Priority,
    fields: Fields,
) -> MessageId {
    let cmd = Command::Send {
        conversation: conv,
        body: "Bed 12 SpO2 84%, need a physician now".into(),
        priority,
        reply_to: None,
        fields,
    };
    match m.command(i, cmd) {
        Ok(Reply::Message(id)) => id,
        other => panic!("send failed: {other:?}"),
    }
}

/// The alerts device `i` raised for `msg`, as (n, virtual time).
fn alerts(m: &Mesh, i: usize, msg: MessageId) -> Vec<u16> {
    m.devices[i]
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Alert { message, n, .. } if *message == msg => Some(*n),
            _ => None,
        })
        .collect()
}

fn escalations(m: &Mesh, i: usize) -> Vec<(MessageId, u8)> {
    m.devices[i]
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Escalated { message, level, .. } => Some((*message, *level)),
            _ => None,
        })
        .collect()
}

/// A second device of the member of device `of`.
fn second_device(m: &mut Mesh, of: usize, name: &str) -> usize {
    let key = huddle::crypto::DeviceKey::generate(&mut m.rng);
    let member = m.devices[of].member();
    let cert = request(name, &[], key.device_id(), member)
        .sign(&m.authority)
        .expect("valid request");
    m.add_device(key, Some(cert))
}

/// Ana (with `ana_roles`), Ben on two devices, the seconds policy, and
/// their group "Bed 12".
fn ward(seed: u64, ana_roles: &[&str]) -> (Mesh, [usize; 3], ConversationId) {
    let mut m = Mesh::new(seed);
    let ana = m.add_member("Ana Silva", ana_roles);
    let ben = m.add_member("Ben Okafor", &["physician"]);
    let ben2 = second_device(&mut m, ben, "Ben Okafor");
    m.connect_all(&[ana, ben, ben2]);
    m.run_until_quiet();
    set_policy(&mut m, ana, seconds_policy());
    let conv = group_of(&mut m, ana, &[ana, ben, ben2], "Bed 12");
    m.run_until_quiet();
    (m, [ana, ben, ben2], conv)
}

#[test]
fn a_stat_nobody_acknowledges_alerts_at_each_interval_and_escalates_once() {
    let (mut m, [ana, ben, ben2], conv) = ward(1, &["charge-nurse"]);
    let start = m.now;
    let stat = send(&mut m, ana, conv, Priority::Stat, Fields::default());
    m.run_until(start + 4 * S + 500);
    assert_eq!(alerts(&m, ben, stat), [1, 2], "Ben's phone at 2 s and 4 s");
    assert_eq!(alerts(&m, ben2, stat), [1, 2], "and his tablet");
    assert!(alerts(&m, ana, stat).is_empty(), "the author owes nothing");
    m.run_until(start + 30 * S);
    assert_eq!(
        alerts(&m, ben, stat),
        [1, 2, 3],
        "three times, then no more"
    );
    // Level 1 came due at 5 s: Ana's device holds the conversation and the
    // charge-nurse role, so it wrote the entry into #charge-nurse, once.
    assert_eq!(escalations(&m, ana), [(stat, 1)]);
    assert!(
        escalations(&m, ben).is_empty(),
        "Ben does not hold the role"
    );
    let channel = m.devices[ana]
        .node
        .conversations()
        .into_iter()
        .find(|c| c.role.as_deref() == Some("charge-nurse"))
        .expect("the role channel")
        .id;
    let shown = m.devices[ana].node.history(&channel, None).unwrap();
    assert_eq!(shown.len(), 1);
    let e = shown[0].escalation.as_ref().expect("an escalation entry");
    assert_eq!((e.message, e.level), (stat, 1));
    assert!(
        !shown[0].body.contains("SpO2"),
        "never the original's text: {}",
        shown[0].body
    );
}

#[test]
fn an_acknowledgement_from_a_second_device_stops_the_alerts_on_both() {
    let (mut m, [ana, ben, ben2], conv) = ward(2, &[]);
    let start = m.now;
    let stat = send(&mut m, ana, conv, Priority::Stat, Fields::default());
    m.run_until(start + 2 * S + 500);
    assert_eq!(alerts(&m, ben, stat), [1]);
    m.command(
        ben2,
        Command::Ack {
            conversation: conv,
            message: stat,
        },
    )
    .expect("ack");
    m.run_until(start + 30 * S);
    assert_eq!(
        alerts(&m, ben, stat),
        [1],
        "the phone stops once the tablet's ack is known"
    );
    assert_eq!(alerts(&m, ben2, stat), [1], "and the tablet itself");
    assert!(escalations(&m, ana).is_empty());
    assert!(m.devices[ben].node.alerts(m.now).is_empty());
}

#[test]
fn ack_by_all_keeps_alerting_those_who_have_not() {
    let mut m = Mesh::new(3);
    let ana = m.add_member("Ana Silva", &[]);
    let ben = m.add_member("Ben Okafor", &[]);
    let chidi = m.add_member("Chidi Obi", &[]);
    m.connect_all(&[ana, ben, chidi]);
    m.run_until_quiet();
    set_policy(&mut m, ana, seconds_policy());
    let conv = group_of(&mut m, ana, &[ana, ben, chidi], "Bed 12");
    m.run_until_quiet();
    let start = m.now;
    let all = Fields {
        ack_by: Some(AckBy::All),
        ..Fields::default()
    };
    let stat = send(&mut m, ana, conv, Priority::Stat, all);
    m.run_until(start);
    m.command(
        ben,
        Command::Ack {
            conversation: conv,
            message: stat,
        },
    )
    .expect("ack");
    m.run_until(start + 30 * S);
    assert!(alerts(&m, ben, stat).is_empty(), "Ben acknowledged");
    assert_eq!(alerts(&m, chidi, stat), [1, 2, 3], "Chidi has not");
    let waiting = m.devices[chidi].node.alerts(m.now);
    assert_eq!(waiting.len(), 1, "{waiting:?}");
    assert_eq!(waiting[0].message, stat);
}

#[test]
fn an_escalation_level_written_on_both_sides_of_a_partition_is_shown_once() {
    let mut m = Mesh::new(4);
    let ana = m.add_member("Ana Silva", &["charge-nurse"]);
    let dee = m.add_member("Dee Jones", &["charge-nurse"]);
    let ben = m.add_member("Ben Okafor", &[]);
    m.connect_all(&[ana, dee, ben]);
    m.run_until_quiet();
    set_policy(&mut m, ana, seconds_policy());
    let conv = group_of(&mut m, ana, &[ana, dee, ben], "Bed 12");
    m.create_role_channel(ana, "charge-nurse");
    m.run_until_quiet();
    let start = m.now;
    let stat = send(&mut m, ben, conv, Priority::Stat, Fields::default());
    let now = m.now;
    m.run_until(now);
    // Ana and Dee are cut apart before level 1 comes due: each writes it.
    m.disconnect(ana, dee);
    m.disconnect(dee, ben);
    m.run_until(start + 6 * S);
    assert_eq!(escalations(&m, ana), [(stat, 1)]);
    assert_eq!(escalations(&m, dee), [(stat, 1)]);
    m.heal();
    m.run_until(start + 60 * S);
    for i in [ana, dee] {
        let channel = m.devices[i]
            .node
            .conversations()
            .into_iter()
            .find(|c| c.role.as_deref() == Some("charge-nurse"))
            .expect("the role channel")
            .id;
        let shown: Vec<_> = m.devices[i]
            .node
            .history(&channel, None)
            .unwrap()
            .into_iter()
            .filter(|h| h.escalation.is_some())
            .collect();
        assert_eq!(shown.len(), 1, "device {i} shows level 1 once: {shown:?}");
    }
}

#[test]
fn a_reminder_fires_with_no_network_and_done_stops_it_everywhere() {
    let mut m = Mesh::new(5);
    let ana = m.add_member("Ana Silva", &[]);
    let ana2 = second_device(&mut m, ana, "Ana Silva");
    let ben = m.add_member("Ben Okafor", &[]);
    m.connect_all(&[ana, ana2, ben]);
    m.run_until_quiet();
    let conv = group_of(&mut m, ben, &[ana, ana2, ben], "Bed 4");
    m.run_until_quiet();
    let start = m.now;
    let fields = Fields {
        reminder: Some(Reminder {
            due_ms: start + 60 * S,
            targets: vec![m.devices[ana].member()],
            every_ms: 60 * S,
            times: 3,
        }),
        ..Fields::default()
    };
    let cmd = Command::Send {
        conversation: conv,
        body: "Turn the patient in bed 4".into(),
        priority: Priority::Routine,
        reply_to: None,
        fields,
    };
    let Ok(Reply::Message(rem)) = m.command(ben, cmd) else {
        panic!("reminder not set")
    };
    let now = m.now;
    m.run_until(now);
    // Every link goes down: the reminder still fires on Ana's devices.
    m.disconnect(ana, ben);
    m.disconnect(ana2, ben);
    m.disconnect(ana, ana2);
    let fired = |m: &Mesh, i: usize| -> Vec<u16> {
        m.devices[i]
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Reminder {
                    message,
                    occurrence,
                    ..
                } if *message == rem => Some(*occurrence),
                _ => None,
            })
            .collect()
    };
    m.run_until(start + 60 * S);
    assert_eq!(fired(&m, ana), [0], "at its due time, offline");
    assert_eq!(fired(&m, ana2), [0]);
    assert!(fired(&m, ben).is_empty(), "not for Ben");
    // Ana marks the second occurrence done on her phone; once her tablet
    // hears of it, the tablet does not fire it.
    m.run_until(start + 119 * S);
    m.command(
        ana,
        Command::ReminderDone {
            conversation: conv,
            message: rem,
            occurrence: 1,
        },
    )
    .expect("done");
    m.connect(ana, ana2);
    m.run_until(start + 200 * S);
    assert_eq!(fired(&m, ana), [0, 2], "the phone skips the one done");
    assert_eq!(fired(&m, ana2), [0, 2], "and so does the tablet");
}

#[test]
fn concurrent_on_call_assignments_are_a_conflict_until_one_replaces_both() {
    let mut m = Mesh::new(6);
    let ana = m.add_member("Ana Silva", &["charge-nurse"]);
    let dee = m.add_member("Dee Jones", &["charge-nurse"]);
    m.connect_all(&[ana, dee]);
    m.run_until_quiet();
    m.disconnect(ana, dee);
    let shift = |who: usize, m: &Mesh| Command::OnCall {
        role: "charge-nurse".into(),
        holders: vec![m.devices[who].member()],
        from_ms: T0,
        to_ms: T0 + 12 * 3_600_000,
    };
    let c = shift(ana, &m);
    m.command(ana, c).expect("Ana sets herself");
    let c = shift(dee, &m);
    m.command(dee, c).expect("Dee sets herself");
    m.heal();
    m.run_until_quiet();
    let a = m.devices[ana].node.on_call("charge-nurse", m.now);
    let d = m.devices[dee].node.on_call("charge-nurse", m.now);
    assert_eq!(a, d, "the same answer on both devices");
    assert_eq!(a.conflicts.len(), 1, "and a conflict to fix: {a:?}");
    // The administrator settles it: one assignment replacing both.
    let replaces =
        m.devices[ana]
            .node
            .roster()
            .overlapping("charge-nurse", T0, T0 + 12 * 3_600_000);
    let settled = huddle::clinical::Assignment::sign_by_authority(
        &m.authority,
        AssignmentDraft {
            role: "charge-nurse".into(),
            holders: vec![m.devices[dee].member()],
            from_ms: T0,
            to_ms: T0 + 12 * 3_600_000,
            issued: huddle::hlc::Hlc::new(m.now, 0).0,
            replaces,
        },
    )
    .unwrap();
    m.command(ana, Command::AddAssignment(Box::new(settled)))
        .expect("installed");
    m.run_until_quiet();
    for i in [ana, dee] {
        let oc = m.devices[i].node.on_call("charge-nurse", m.now);
        assert!(oc.conflicts.is_empty(), "{oc:?}");
        assert_eq!(oc.holders, vec![m.devices[dee].member()]);
    }
    // A member without the role cannot set it.
    let ben = m.add_member("Ben Okafor", &["physician"]);
    let c = shift(ben, &m);
    assert!(m.command(ben, c).is_err());
}

#[test]
fn a_role_channel_alerts_who_is_on_call_not_every_holder() {
    let mut m = Mesh::new(7);
    let ana = m.add_member("Ana Silva", &["charge-nurse"]);
    let dee = m.add_member("Dee Jones", &["charge-nurse"]);
    let ben = m.add_member("Ben Okafor", &["charge-nurse"]);
    m.connect_all(&[ana, dee, ben]);
    m.run_until_quiet();
    set_policy(&mut m, ana, seconds_policy());
    let channel = m.create_role_channel(ana, "charge-nurse");
    let c = Command::OnCall {
        role: "charge-nurse".into(),
        holders: vec![m.devices[dee].member()],
        from_ms: T0 - 3_600_000,
        to_ms: T0 + 12 * 3_600_000,
    };
    m.command(ana, c).expect("on call");
    m.run_until_quiet();
    let start = m.now;
    let stat = send(&mut m, ana, channel, Priority::Stat, Fields::default());
    m.run_until(start + 3 * S);
    assert_eq!(alerts(&m, dee, stat), [1], "Dee is on call");
    assert!(alerts(&m, ben, stat).is_empty(), "Ben is not");
}

/// Store format 5 → 6: the version-1 team document's certificates and
/// revocations are carried into version 2 at the next start; nothing is
/// lost and the old records go.
#[test]
fn a_version_1_team_document_is_carried_into_version_2() {
    use huddle::membership::{Revocation, RevocationTarget};
    use huddle::store::{keys, Store, StoreOp};
    let mut m = Mesh::new(8);
    let ana = m.add_member("Ana Silva", &[]);
    let ben = m.add_member("Ben Okafor", &[]);
    let gone = m.add_member("Gone Device", &[]);
    let certs: Vec<_> = [ana, ben, gone]
        .iter()
        .map(|&i| m.devices[i].cert.clone().unwrap())
        .collect();
    let rev = Revocation::sign(
        &m.authority,
        RevocationTarget::Device(m.devices[gone].id()),
        T0,
    );
    // Ana's store as version 5 left it: only the version-1 team document.
    let old = huddle::team::v1_document(&certs, std::slice::from_ref(&rev));
    let store = &mut m.devices[ana].store;
    let mut ops = vec![StoreOp::DeleteRange {
        from: keys::doc_prefix(&huddle::team::TEAM_DOC_ID),
        to: keys::doc_prefix(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3]),
    }];
    for (seq, bytes) in old.into_iter().enumerate() {
        ops.push(StoreOp::Put {
            key: keys::chunk(&huddle::team::TEAM_DOC_V1_ID, seq as u64),
            value: bytes,
        });
    }
    store.apply(&ops).unwrap();
    store.flush().unwrap();
    m.crash_restart(ana);
    let node = &m.devices[ana].node;
    for c in &certs {
        assert!(
            node.directory().any(|d| d.device == c.device),
            "{} carried over",
            c.display_name
        );
    }
    assert!(node.is_revoked(&m.devices[gone].id(), &m.devices[gone].member()));
    let left = m.devices[ana]
        .store
        .scan_prefix(&keys::doc_prefix(&huddle::team::TEAM_DOC_V1_ID))
        .unwrap();
    assert!(left.is_empty(), "the version-1 records are gone");
    // And it stays so after another restart, from the version-2 document.
    m.crash_restart(ana);
    assert!(m.devices[ana]
        .node
        .directory()
        .any(|d| d.device == m.devices[ben].id()));
}

/// A device that joins later and catches up on a thread gets no alarm for
/// a STAT written two days before: history, not an emergency.
#[test]
fn a_device_catching_up_on_old_history_is_not_alarmed() {
    let (mut m, [ana, ben, _], conv) = ward(9, &[]);
    let start = m.now;
    let stat = send(&mut m, ana, conv, Priority::Stat, Fields::default());
    m.run_until(start + 2 * 86_400_000);
    let late = second_device(&mut m, ben, "Ben Okafor");
    m.connect(ana, late);
    let now = m.now;
    m.run_until(now + 60 * S);
    assert!(
        m.devices[late]
            .node
            .conversation(&conv)
            .is_some_and(|c| c.get(&stat).is_some()),
        "the new device has the thread"
    );
    assert!(alerts(&m, late, stat).is_empty(), "and no alarm for it");
    assert_eq!(m.devices[late].node.clinical_tracked().0, 0);
}
