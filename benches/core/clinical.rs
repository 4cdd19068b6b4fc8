//! The clinical bookkeeping at 10k open urgent messages (sync.md §7.6):
//! what one clinical timer tick costs on the recipient's node while that
//! many messages await its acknowledgement, and what the schedule holds in
//! memory per open message.

use std::collections::HashMap;

use super::*;
use huddle::clinical::{ClinicalPolicy, Schedule, SignedPolicy};
use huddle::node::Event;

/// Messages written this far apart (virtual time): 10k take 16.7 minutes,
/// inside the default urgent horizon (10 re-notifications 2 minutes apart),
/// so every one is open when the ticks are timed.
const GAP_MS: u64 = 100;

pub(super) fn clinical_report(open: usize) {
    let mut mesh = Mesh::new(77);
    let ana = mesh.add_member("ana", &["nurse"]);
    let ben = mesh.add_member("ben", &["physician"]);
    // Chidi holds the role of the default ladder: his node also writes the
    // escalation entries. Ben's only re-notifies.
    let chidi = mesh.add_member("chidi", &["charge-nurse"]);
    mesh.connect_all(&[ana, ben, chidi]);
    mesh.run_until_quiet();
    let p = SignedPolicy::sign(&mesh.authority, ClinicalPolicy::default(), mesh.now)
        .expect("the default policy");
    mesh.command(ana, Command::SetPolicy(Box::new(p)))
        .expect("policy");
    let members = [ana, ben, chidi]
        .iter()
        .map(|&i| mesh.devices[i].member())
        .collect();
    let conv = match mesh.command(
        ana,
        Command::CreateConversation {
            kind: ConversationKind::Group {
                title: "Bed 12".into(),
                members,
            },
        },
    ) {
        Ok(Reply::Conversation(id)) => id,
        other => panic!("create failed: {other:?}"),
    };
    mesh.run_until_quiet();
    let t = Instant::now();
    for i in 0..open {
        let cmd = Command::Send {
            conversation: conv,
            body: body(i),
            priority: Priority::Urgent,
            reply_to: None,
            fields: Default::default(),
        };
        mesh.command(ana, cmd).expect("sent");
        let next = mesh.now + GAP_MS;
        mesh.run_until(next);
    }
    let tracked = |mesh: &Mesh, i: usize| mesh.devices[i].node.clinical_tracked().0;
    report(&format!(
        "setup: {} urgent messages to Ben and Chidi in {:.1} s; their nodes track {} and {} open",
        label(open),
        t.elapsed().as_secs_f64(),
        tracked(&mesh, ben),
        tracked(&mesh, chidi)
    ));
    assert!(
        tracked(&mesh, ben) >= open * 9 / 10,
        "most messages are open"
    );
    let now = mesh.now;
    for (who, i) in [("ben", ben), ("chidi", chidi)] {
        ticks(&mut mesh.devices[i].clone(), now, open, who);
    }
    // Memory: the schedule itself, built alone under the counting
    // allocator, and the held-time map the node keeps beside it.
    let rule = ClinicalPolicy::default().urgent;
    let before = super::allocated();
    let mut s = Schedule::default();
    let mut held: HashMap<(ConversationId, huddle::MessageId), u64> = HashMap::new();
    for i in 0..open as u64 {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&i.to_be_bytes());
        let key = (conv, huddle::MessageId(id));
        s.track(key, Priority::Urgent, i * GAP_MS, &rule);
        held.insert(key, i * GAP_MS);
    }
    let bytes = super::allocated().saturating_sub(before);
    report(&format!(
        "clinical/{}: the schedule and held times of {} open messages: {:.1} MiB ({} bytes per open message)",
        label(open),
        label(open),
        bytes as f64 / (1 << 20) as f64,
        bytes / open
    ));
    black_box((s, held));
}

/// One node alone, its clinical timer fired at each deadline for the next
/// two minutes: each tick raises the re-notifications due then (a few of
/// the `open` open messages) and perhaps writes an escalation entry.
fn ticks(dev: &mut Device, start: u64, open: usize, who: &str) {
    let mut now = start;
    let mut next = Some(now);
    let (mut alert_ticks, mut escalation_ticks) = (Vec::new(), Vec::new());
    let mut alerts = 0usize;
    let end = now + 120_000;
    while let Some(at) = next.filter(|at| *at <= end) {
        now = now.max(at);
        let c = Cpu::now();
        let out = dev.node.handle(now, Input::Timer(Timer::Clinical));
        let took = c.elapsed();
        let raised = out
            .iter()
            .filter(|o| matches!(o, Output::Emit(Event::Alert { .. })))
            .count();
        alerts += raised;
        let escalated = out
            .iter()
            .any(|o| matches!(o, Output::Emit(Event::Escalated { .. })));
        if escalated {
            escalation_ticks.push(took);
        } else if raised > 0 {
            alert_ticks.push(took);
        }
        next = out.iter().find_map(|o| match o {
            Output::SetTimer {
                timer: Timer::Clinical,
                at,
            } => Some(*at),
            _ => None,
        });
        carry_out(dev, out);
    }
    let ticks = alert_ticks.len() + escalation_ticks.len();
    report(&format!(
        "clinical/{}/{who}: {ticks} ticks in 2 simulated minutes raised {alerts} re-notifications ({:.1} per tick)",
        label(open),
        alerts as f64 / ticks.max(1) as f64
    ));
    for (what, times) in [
        ("re-notifications only", &alert_ticks),
        ("an escalation entry written too", &escalation_ticks),
    ] {
        if !times.is_empty() {
            report(&format!(
                "clinical/{}/{who}: a tick with {what}: {} ({} ticks, on-CPU)",
                label(open),
                distribution(times),
                times.len()
            ));
        }
    }
}
