//! What happens to the world besides the network: the workload (users
//! creating conversations, writing, reading, acknowledging), scripted
//! scenario events, random faults and churn (the malicious member is in
//! [`crate::forger`]).
//!
//! Invariant: every decision here draws from the world's seeded generators
//! (`wrng` for the workload, `rng` for faults), in event order.

use std::collections::BTreeSet;

use huddle::membership::{Revocation, RevocationTarget};
use huddle::{Command, ConversationId, ConversationKind, Priority};
use rand::seq::SliceRandom;
use rand::Rng;

use crate::check::{member_devices, Invariant};
use crate::net::Dev;
use crate::queue::{Ev, FaultKind, UserCmd};
use crate::scenario::{Action, ConvKind, Dur, LinkUp};
use crate::topo;
use crate::trace::Kind;
use crate::world::World;

pub(crate) const RETRY_US: u64 = 10_000_000;

fn exp_after(w: &mut World, per_hour: f64) -> u64 {
    let u: f64 = w.rng.gen_range(f64::EPSILON..1.0);
    (-u.ln() * 3_600e6 / per_hour) as u64
}

fn uniform(rng: &mut impl Rng, [lo, hi]: [Dur; 2]) -> u64 {
    rng.gen_range(lo.us()..=hi.us().max(lo.us()))
}

/// Puts every initial event of the scenario on the queue.
pub fn schedule_all(w: &mut World) {
    let sc = w.sc.clone();
    let late: BTreeSet<Dev> = match &sc.churn.late {
        Some(set) => sc.resolve(set).expect("validated").into_iter().collect(),
        None => BTreeSet::new(),
    };
    let team = sc.team_devices();
    for dev in 0..team {
        let at = if late.contains(&dev) {
            w.rng.gen_range(0..=sc.churn.join_by.us())
        } else {
            w.rng.gen_range(0..2_000_000)
        };
        w.q.push(at, Ev::Boot { dev });
    }
    for (i, o) in sc.outsider.iter().enumerate() {
        w.q.push(o.at.us(), Ev::Boot { dev: team + i });
    }
    for (l, link) in sc.link.iter().enumerate() {
        w.net.links[l].up = match &link.up {
            LinkUp::Fixed(s) => s == "always",
            LinkUp::Intermittent { fraction, .. } => w.rng.gen_bool(fraction.clamp(0.0, 1.0)),
        };
        topo::schedule_flip(w, l);
    }
    for (i, c) in sc.conversation.iter().enumerate() {
        let at = c.at.us().max(3_000_000);
        w.q.push(
            at,
            Ev::Create {
                conv: i,
                dev: c.creator,
            },
        );
        if c.kind == ConvKind::Direct && c.both {
            let members = sc
                .resolve(c.members.as_ref().expect("validated"))
                .expect("validated");
            let other = *members
                .iter()
                .find(|d| **d != c.creator)
                .unwrap_or(&c.creator);
            w.q.push(
                at,
                Ev::Create {
                    conv: i,
                    dev: other,
                },
            );
        }
    }
    if sc.policy.is_some() {
        w.q.push(3_000_000, Ev::Policy);
    }
    if sc.traffic.rate_per_min > 0.0 {
        w.q.push(sc.traffic.start.us(), Ev::Traffic);
    }
    for (i, e) in sc.event.iter().enumerate() {
        w.q.push(e.at.us(), Ev::Script(i));
    }
    let f = &sc.faults;
    let c = &sc.churn;
    for (kind, rate) in [
        (FaultKind::Crash, f.crashes_per_hour),
        (FaultKind::Jump, f.jumps_per_hour),
        (FaultKind::Break, f.breaks_per_hour),
        (FaultKind::Leave, c.leaves_per_hour),
        (FaultKind::Partition, c.partitions_per_hour),
    ] {
        if rate > 0.0 {
            let at = exp_after(w, rate);
            w.q.push(at, Ev::Fault(kind));
        }
    }
    w.q.push(sc.duration.us(), Ev::FinalHeal);
}

/// Creates conversation spec `conv` on `dev`.
pub fn create(w: &mut World, conv: usize, dev: Dev) {
    if !w.devs[dev].up() {
        if !w.final_heal {
            w.q.push(w.now + RETRY_US, Ev::Create { conv, dev });
        }
        return;
    }
    let spec = w.sc.conversation[conv].clone();
    let member_of = |w: &World, set: &crate::scenario::DeviceSet| -> Vec<huddle::MemberId> {
        let mut m: Vec<_> =
            w.sc.resolve(set)
                .expect("validated")
                .into_iter()
                .filter_map(|d| w.devs[d].member)
                .collect();
        m.sort();
        m.dedup();
        m
    };
    let kind = match spec.kind {
        ConvKind::Group => ConversationKind::Group {
            title: spec.title.clone(),
            members: member_of(w, spec.members.as_ref().expect("validated"))
                .into_iter()
                .collect(),
        },
        ConvKind::Role => ConversationKind::Role {
            role: spec.role.clone(),
        },
        ConvKind::Direct => {
            let m = member_of(w, spec.members.as_ref().expect("validated"));
            ConversationKind::Direct {
                members: [m[0], m[1]],
            }
        }
    };
    match w.command(dev, Command::CreateConversation { kind }) {
        Some(Ok(huddle::Reply::Conversation(id))) => w.ledger.convs[conv] = Some(id),
        Some(Err(e)) => w.fail(
            Invariant::Setup,
            vec![dev],
            format!("scenario conversation {conv} could not be created on d{dev}: {e}"),
        ),
        _ => {}
    }
}

fn body(w: &mut World) -> String {
    const WORDS: &[&str] = &[
        "bed", "4", "obs", "stable", "BP", "110/70", "please", "review", "meds", "given", "pain",
        "score", "3", "transfer", "ward", "x-ray", "ordered", "family", "called", "ok",
    ];
    let [lo, hi] = w.sc.traffic.body;
    let target = w.wrng.gen_range(lo..=hi.max(lo)).max(1);
    let mut s = String::new();
    while s.len() < target {
        if !s.is_empty() {
            s.push(' ');
        }
        s.push_str(WORDS.choose(&mut w.wrng).expect("non-empty"));
    }
    s.truncate(target);
    s
}

/// One message of the workload, from a random up member device.
pub fn traffic(w: &mut World) {
    let t = w.sc.traffic.clone();
    if w.final_heal || w.now >= t.stop.us() {
        return;
    }
    let mean = 60e6 / t.rate_per_min;
    let u: f64 = w.wrng.gen_range(f64::EPSILON..1.0);
    w.q.push(w.now + (-u.ln() * mean) as u64 + 1, Ev::Traffic);
    let senders: Option<BTreeSet<Dev>> = t
        .senders
        .as_ref()
        .map(|s| w.sc.resolve(s).expect("validated").into_iter().collect());
    let candidates: Vec<Dev> = (0..w.devs.len())
        .filter(|d| w.devs[*d].is_member())
        .filter(|d| senders.as_ref().is_none_or(|s| s.contains(d)))
        .filter(|d| {
            w.devs[*d]
                .node
                .as_ref()
                .is_some_and(|n| n.conversation_ids().next().is_some())
        })
        .collect();
    let Some(&dev) = candidates.choose(&mut w.wrng) else {
        return;
    };
    let convs: Vec<ConversationId> = w.devs[dev]
        .node
        .as_ref()
        .expect("up")
        .conversation_ids()
        .copied()
        .collect();
    let conversation = *convs.choose(&mut w.wrng).expect("non-empty");
    let priority = if w.wrng.gen_bool(t.urgent.clamp(0.0, 1.0)) {
        // Drawn only where a scenario asks, so older scenarios' draws stay.
        if t.stat > 0.0 && w.wrng.gen_bool(t.stat.min(1.0)) {
            Priority::Stat
        } else {
            Priority::Urgent
        }
    } else {
        Priority::Routine
    };
    let reminder = crate::clinical_work::maybe_reminder(w, dev, &conversation);
    let body = body(w);
    let fields = huddle::message::Fields {
        reminder: reminder.clone(),
        ..Default::default()
    };
    let sent = write(w, dev, conversation, body, priority, fields);
    if let (Some(r), Some(Ok(huddle::Reply::Message(id)))) = (reminder, sent) {
        crate::clinical_work::reminder_sent(w, dev, id, r);
    }
}

pub fn user(w: &mut World, dev: Dev, inc: u32, cmd: UserCmd) {
    // Users act while the workload runs; after it the network must settle.
    if w.final_heal || w.devs[dev].inc != inc || w.now >= w.sc.traffic.stop.us() {
        return;
    }
    let cmd = match cmd {
        UserCmd::MarkRead(conversation) => Command::MarkRead { conversation },
        UserCmd::Ack(conversation, message) => Command::Ack {
            conversation,
            message,
        },
    };
    // Errors (e.g. the message was lost with a crash) are the user's problem.
    let _ = w.command(dev, cmd);
}

pub fn script(w: &mut World, i: usize) {
    let action = w.sc.event[i].action.clone();
    w.trace.log(w.now, Kind::Script, None, None, i as u64, 0);
    match action {
        Action::Partition { groups } => {
            for g in groups {
                let devs = w.sc.resolve(&g).expect("validated");
                let Some(first) = devs.first() else { continue };
                let site = w.net.site_of_segment(w.net.segment[*first]);
                let seg = w.net.new_segment(site);
                for d in devs {
                    topo::set_segment(w, d, seg);
                }
            }
            topo::rewire_all(w);
        }
        Action::Heal => topo::heal(w),
        Action::Move { device, to } => {
            let seg = w.sc.site_index(&to).expect("validated") as u32;
            topo::set_segment(w, device, seg);
            topo::rewire_dev(w, device);
        }
        Action::Crash {
            device,
            restart_after,
            mid_step,
        } => {
            if let Some(r) = restart_after {
                w.restart_delay.insert(device, r.us());
            }
            if mid_step {
                w.devs[device].crash_mid_step = true;
            } else {
                w.crash(device, None);
            }
        }
        Action::Jump { device, by } => jump(w, device, by.0 / 1000),
        Action::Revoke { device, by, member } => {
            if !w.devs[by].up() {
                w.q.push(w.now + RETRY_US, Ev::Script(i));
                return;
            }
            let target = match (member, w.devs[device].member) {
                (true, Some(m)) => RevocationTarget::Member(m),
                _ => RevocationTarget::Device(w.devs[device].id),
            };
            let issued = w.devs[by].now_ms(w.now);
            let rev = Revocation::sign(&w.authority, target, issued);
            let (m, target_id) = (w.devs[device].member, w.devs[device].id);
            for d in &mut w.devs {
                if d.id == target_id || (member && d.member == m) {
                    d.revoked = true;
                }
            }
            let _ = w.command(by, Command::Revoke(rev));
        }
        Action::Forge {
            device,
            conversation,
        } => {
            if !crate::forger::forge(w, device, conversation) && !w.final_heal {
                w.q.push(w.now + RETRY_US, Ev::Script(i));
            }
        }
        Action::Link { link, up } => {
            let l =
                w.sc.link
                    .iter()
                    .position(|l| l.name == link)
                    .expect("validated");
            if w.net.links[l].up != up {
                w.net.links[l].up = up;
                w.trace
                    .log(w.now, Kind::Link, None, None, l as u64, u64::from(up));
                topo::rewire_all(w);
                if up {
                    topo::mark_heal(w);
                }
            }
        }
        Action::CheckCarried {
            from,
            to,
            before,
            since,
            priority,
        } => {
            let least = priority.unwrap_or(Priority::Routine);
            check_carried(w, &from, &to, since.us()..before.us(), least)
        }
        Action::Send {
            device,
            conversation,
            priority,
            bytes,
        } => {
            let conv = w.ledger.convs[conversation];
            let holds = conv.is_some_and(|c| {
                w.devs[device].up()
                    && w.devs[device]
                        .node
                        .as_ref()
                        .is_some_and(|n| n.conversation(&c).is_some())
            });
            match conv {
                Some(c) if holds => scripted_send(w, device, c, priority, bytes),
                _ if !w.final_heal => w.q.push(w.now + RETRY_US, Ev::Script(i)),
                _ => {}
            }
        }
    }
}

fn jump(w: &mut World, d: Dev, by_ms: i64) {
    w.devs[d].skew_ms += by_ms;
    w.trace
        .log(w.now, Kind::Jump, Some(d), None, 0, by_ms as u64);
}

/// A scripted message (`Action::Send`): its body is `bytes` of a fixed
/// letter, marked so the leak checker knows it.
fn scripted_send(
    w: &mut World,
    dev: Dev,
    conversation: ConversationId,
    priority: Priority,
    bytes: usize,
) {
    let body: String = std::iter::repeat_n('s', bytes.max(1)).collect();
    let _ = write(w, dev, conversation, body, priority, Default::default());
}

/// `dev`'s user writes `body`: recorded for the leak checker before the
/// node sees it (its first frames go out in this step).
fn write(
    w: &mut World,
    dev: Dev,
    conversation: ConversationId,
    body: String,
    priority: Priority,
    fields: huddle::message::Fields,
) -> Option<Result<huddle::Reply, huddle::node::CommandError>> {
    if let Some(c) = w.devs[dev]
        .node
        .as_ref()
        .and_then(|n| n.conversation(&conversation))
    {
        w.ledger.bodies.record(&c.header, body.as_bytes());
    }
    w.command(
        dev,
        Command::Send {
            conversation,
            body,
            priority,
            reply_to: None,
            fields,
        },
    )
}

fn check_carried(
    w: &mut World,
    from: &str,
    to: &str,
    confirmed: std::ops::Range<u64>,
    least: Priority,
) {
    let before = confirmed.end;
    let from = w.sc.site_index(from).expect("validated");
    let to = w.sc.site_index(to).expect("validated");
    let mut missing = None;
    for (mid, c) in &w.ledger.confirmed {
        if !confirmed.contains(&c.at)
            || w.home_site(c.author) != from
            || w.devs[c.author].revoked
            || w.ledger.priority.get(mid).is_none_or(|p| *p < least)
        {
            continue;
        }
        let h = &w.ledger.headers[&c.conv];
        for d in member_devices(&w.devs, h) {
            if w.home_site(d) != to || !w.devs[d].up() {
                continue;
            }
            let n = w.devs[d].node.as_ref().expect("up");
            if n.conversation(&c.conv)
                .is_none_or(|cv| cv.get(mid).is_none())
            {
                missing = Some((*mid, c.author, d, h.title()));
                break;
            }
        }
        if missing.is_some() {
            break;
        }
    }
    if let Some((mid, author, d, title)) = missing {
        let s = &w.sc.site;
        w.fail(
            Invariant::Carried,
            vec![author, d],
            format!(
                "message {mid} written by d{author} at {} before {} has not reached d{d} at {} (conversation \"{title}\")",
                s[from].name,
                crate::trace::fmt_time(before),
                s[to].name
            ),
        );
    }
}

/// A random fault or churn event, then the next one of its kind.
pub fn fault(w: &mut World, kind: FaultKind) {
    let (rate, stop) = match kind {
        FaultKind::Crash => (w.sc.faults.crashes_per_hour, w.sc.faults.stop),
        FaultKind::Jump => (w.sc.faults.jumps_per_hour, w.sc.faults.stop),
        FaultKind::Break => (w.sc.faults.breaks_per_hour, w.sc.faults.stop),
        FaultKind::Leave => (w.sc.churn.leaves_per_hour, w.sc.churn.stop),
        FaultKind::Partition => (w.sc.churn.partitions_per_hour, w.sc.churn.stop),
    };
    let stop = stop.map_or(w.sc.duration.us(), |s| s.us());
    if w.final_heal || w.now >= stop {
        return;
    }
    let next = exp_after(w, rate);
    w.q.push(w.now + next, Ev::Fault(kind));
    let up: Vec<Dev> = (0..w.devs.len())
        .filter(|d| w.devs[*d].up() && w.devs[*d].is_member())
        .collect();
    match kind {
        FaultKind::Crash => {
            let Some(&d) = up.choose(&mut w.rng) else {
                return;
            };
            let delay = uniform(&mut w.rng, w.sc.faults.restart_after);
            w.restart_delay.insert(d, delay);
            if w.rng.gen_bool(w.sc.faults.mid_step.clamp(0.0, 1.0)) {
                w.devs[d].crash_mid_step = true;
            } else {
                w.crash(d, None);
            }
        }
        FaultKind::Jump => {
            let Some(&d) = up.choose(&mut w.rng) else {
                return;
            };
            let j = w.sc.faults.jump.0 / 1000;
            let by = w.rng.gen_range(-j..=j);
            jump(w, d, by);
        }
        FaultKind::Break => {
            let open: Vec<u64> = w.net.open_sessions().map(|s| s.id).collect();
            if let Some(&id) = open.choose(&mut w.rng) {
                topo::break_session(w, id);
            }
        }
        FaultKind::Leave => {
            let Some(&d) = up.choose(&mut w.rng) else {
                return;
            };
            let away = uniform(&mut w.rng, w.sc.churn.away);
            w.trace.log(w.now, Kind::Away, Some(d), None, 0, 0);
            w.restart_delay.insert(d, away);
            w.crash(d, None);
        }
        FaultKind::Partition => {
            let sites = w.sc.site.len();
            let site = w.rng.gen_range(0..sites);
            let mut at_home: Vec<Dev> = (0..w.devs.len())
                .filter(|d| w.net.segment[*d] == site as u32)
                .collect();
            if at_home.len() < 4 {
                return;
            }
            at_home.shuffle(&mut w.rng);
            let half = at_home.split_off(at_home.len() / 2);
            let seg = w.net.new_segment(site);
            for d in &half {
                topo::set_segment(w, *d, seg);
            }
            topo::rewire_all(w);
            let for_us = uniform(&mut w.rng, w.sc.churn.partition_for);
            w.q.push(w.now + for_us, Ev::Unsplit { devices: half });
        }
    }
}
