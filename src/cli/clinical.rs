//! `huddle alerts`, `huddle oncall`, `huddle remind`, `huddle team policy`:
//! urgent messages that cannot be missed, from the command line.

use serde_json::json;

use super::args::{OncallCmd, OncallSetArgs, RemindActArgs, RemindCmd, RemindSetArgs};
use super::backend::{Backend, STORED_LOCALLY};
use super::{admin, now_ms, parse_duration, resolve, CliError, Ctx, Result};
use crate::api::types::{OnCallRequest, ReminderRequest, SendRequest};
use crate::clinical::{Assignment, AssignmentDraft, ClinicalPolicy, SignedPolicy};
use crate::ids::MemberId;
use crate::message::{AckBy, Priority};
use crate::node::AlertKind;

/// `--ack-by`: any, all, or a member.
pub(super) fn ack_by(b: &Backend, who: &str) -> Result<AckBy> {
    Ok(match who.trim().to_lowercase().as_str() {
        "any" => AckBy::Any,
        "all" => AckBy::All,
        _ => AckBy::Member(resolve::member(&b.directory()?, who)?.member),
    })
}

fn members(b: &Backend, names: &[String]) -> Result<Vec<MemberId>> {
    let dir = b.directory()?;
    let mut out = Vec::new();
    for n in names {
        out.push(resolve::member(&dir, n)?.member);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn minutes(ms: u64) -> String {
    match ms {
        ms if ms % 3_600_000 == 0 => format!("{} h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("{} min", ms / 60_000),
        ms => format!("{} s", ms / 1000),
    }
}

pub fn alerts(ctx: &Ctx) -> Result<()> {
    let b = Backend::open(ctx)?;
    let list = b.alerts()?;
    if ctx.out.json {
        ctx.out.print_json(&list);
        return Ok(());
    }
    if list.is_empty() {
        outln!("Nothing waits for you.");
        return Ok(());
    }
    for a in &list {
        let who = a
            .author_name
            .clone()
            .unwrap_or_else(|| a.author.to_hex()[..8].to_owned());
        let what = match (&a.kind, a.priority) {
            (AlertKind::Reminder, _) => "REMINDER".to_owned(),
            (_, Priority::Stat) => "STAT — acknowledge".to_owned(),
            _ => "URGENT — acknowledge".to_owned(),
        };
        let when = super::render::time(a.due_ms.unwrap_or(a.time_ms));
        let level = a
            .escalation_level
            .map(|l| format!(" (escalation, level {l})"))
            .unwrap_or_default();
        outln!(
            "{what}{level}  {}  in {}  from {who}  at {when}\n    {}",
            &a.message.to_hex()[..8],
            a.conversation_title,
            a.preview
        );
    }
    Ok(())
}

fn print_policy(p: &ClinicalPolicy, issued: Option<u64>) {
    for (name, r) in [("urgent", &p.urgent), ("STAT", &p.stat)] {
        let who = match r.ack_by {
            AckBy::Any => "any recipient acknowledges".to_owned(),
            AckBy::All => "every recipient acknowledges".to_owned(),
            AckBy::Member(m) => format!("member {} acknowledges", &m.to_hex()[..8]),
        };
        let renotify = if r.times == 0 {
            "no re-notification".to_owned()
        } else {
            format!("re-notify every {}, {} times", minutes(r.every_ms), r.times)
        };
        let ladder: Vec<String> = r
            .ladder
            .iter()
            .map(|s| format!("after {} → #{}", minutes(s.after_ms), s.role))
            .collect();
        let ladder = if ladder.is_empty() {
            "no escalation".to_owned()
        } else {
            format!("escalate {}", ladder.join(", "))
        };
        outln!("{name:>7}: {who}; {renotify}; {ladder}");
    }
    match issued {
        Some(t) => outln!("Set by the team authority at {}.", super::render::time(t)),
        None => outln!("The built-in default (the team authority has not set one)."),
    }
}

pub fn policy(ctx: &Ctx, set: Option<std::path::PathBuf>) -> Result<()> {
    let Some(path) = set else {
        let b = Backend::open(ctx)?;
        let view = b.policy()?;
        if ctx.out.json {
            ctx.out.print_json(&view.policy);
        } else {
            print_policy(&view.policy, view.issued_ms);
        }
        return Ok(());
    };
    let policy = if path.as_os_str() == "default" {
        ClinicalPolicy::default()
    } else {
        let cannot = |e: std::io::Error| {
            CliError::usage(format!(
                "cannot read the policy file {}: {e}",
                path.display()
            ))
        };
        // A policy is a few hundred bytes: anything large is not one.
        let len = std::fs::metadata(&path).map_err(cannot)?.len();
        if len > 64 * 1024 {
            return Err(CliError::usage(format!(
                "{} is {len} bytes: a policy as `huddle team policy --json` prints it is under 1 KiB",
                path.display()
            )));
        }
        let text = std::fs::read_to_string(&path).map_err(cannot)?;
        serde_json::from_str(&text).map_err(|e| {
            CliError::usage(format!(
                "{} is not a policy as `huddle team policy --json` prints it: {e}",
                path.display()
            ))
        })?
    };
    let (key, _) = admin::authority(&ctx.dir, ctx.dir.certificate()?)?;
    let signed = SignedPolicy::sign(&key, policy, now_ms())
        .map_err(|e| CliError::usage(format!("the policy cannot be used: {e}")))?;
    let mut b = Backend::open(ctx)?;
    b.set_policy(signed.clone())?;
    if ctx.out.json {
        ctx.out.print_json(&json!({ "policy": signed.policy, "issued_ms": signed.issued, "offline": b.is_offline() }));
    } else {
        print_policy(&signed.policy, Some(signed.issued));
        if b.is_offline() {
            ctx.out.note(STORED_LOCALLY);
        }
    }
    Ok(())
}

/// Local wall-clock time `s` (HH:MM: the next such time after `after`;
/// YYYY-MM-DDTHH:MM; `now`) in ms since the epoch.
fn parse_when(s: &str, after: u64) -> Result<u64> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("now") {
        return Ok(now_ms());
    }
    let bad = || {
        CliError::usage(format!(
            "\"{s}\" is not a time: write HH:MM (local), YYYY-MM-DDTHH:MM, or now"
        ))
    };
    let offset = super::local_offset();
    let hm = |t: &str| -> Result<time::Time> {
        let (h, m) = t.split_once(':').ok_or_else(bad)?;
        let (h, m): (u8, u8) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
        time::Time::from_hms(h, m, 0).map_err(|_| bad())
    };
    let to_ms = |dt: time::OffsetDateTime| -> u64 {
        u64::try_from(dt.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
    };
    if let Some((date, t)) = s.split_once('T') {
        let mut parts = date.split('-').map(|p| p.parse::<i32>());
        let (Some(Ok(y)), Some(Ok(mo)), Some(Ok(d)), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let month =
            time::Month::try_from(u8::try_from(mo).map_err(|_| bad())?).map_err(|_| bad())?;
        let date = time::Date::from_calendar_date(y, month, u8::try_from(d).map_err(|_| bad())?)
            .map_err(|_| bad())?;
        return Ok(to_ms(
            time::PrimitiveDateTime::new(date, hm(t)?).assume_offset(offset),
        ));
    }
    let t = hm(s)?;
    let base = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(after) * 1_000_000)
        .map_err(|_| bad())?
        .to_offset(offset);
    let mut at = base.replace_time(t);
    if to_ms(at) <= after {
        at += time::Duration::days(1);
    }
    Ok(to_ms(at))
}

pub fn oncall(ctx: &Ctx, cmd: OncallCmd) -> Result<()> {
    match cmd {
        OncallCmd::Show => {
            let b = Backend::open(ctx)?;
            let list = b.oncall()?;
            if ctx.out.json {
                ctx.out.print_json(&list);
                return Ok(());
            }
            for r in &list {
                let who = if r.unassigned {
                    "nobody assigned: everyone holding the role is asked".to_owned()
                } else {
                    let names: Vec<String> = r
                        .holders
                        .iter()
                        .zip(&r.names)
                        .map(|(m, n)| n.clone().unwrap_or_else(|| m.to_hex()[..8].to_owned()))
                        .collect();
                    let until = r.to_ms.map(super::render::time).unwrap_or_default();
                    format!("{} until {until}", names.join(", "))
                };
                outln!("#{:<20} {who}", r.role);
                if !r.conflicts.is_empty() {
                    outln!(
                        "    CONFLICT: {} other assignment(s) made at the same time cover now; set who is on call again to settle it",
                        r.conflicts.len()
                    );
                }
            }
            Ok(())
        }
        OncallCmd::Set(a) => oncall_set(ctx, a),
    }
}

fn oncall_set(ctx: &Ctx, a: OncallSetArgs) -> Result<()> {
    let role = super::normalize_role(&a.role)?;
    let from = match &a.from {
        Some(t) => parse_when(t, now_ms().saturating_sub(12 * 3_600_000))?,
        None => now_ms(),
    };
    let to = match (&a.to, &a.for_) {
        (Some(t), _) => parse_when(t, from)?,
        (None, Some(d)) => from + parse_duration(d)?,
        (None, None) => {
            return Err(CliError::usage(
                "say when the shift ends: --to 07:00 or --for 12h",
            ));
        }
    };
    let mut b = Backend::open(ctx)?;
    let holders = members(&b, &a.members)?;
    // The running node's status says which roles we hold, without opening
    // the (encrypted) certificate file.
    let holds_role = if b.is_offline() {
        ctx.dir.certificate()?.is_some_and(|c| c.has_role(&role))
    } else {
        b.status()?.roles.contains(&role)
    };
    if holds_role {
        b.set_oncall(OnCallRequest {
            role: role.clone(),
            holders,
            from_ms: from,
            to_ms: to,
        })?;
    } else {
        // Not a holder of the role: as an administrator, with the team key.
        if !ctx.dir.has_authority() {
            return Err(CliError::new(format!(
                "you do not hold the role \"{role}\": only its holders, or the device holding the team key, set who is on call"
            )));
        }
        let (key, _) = admin::authority(&ctx.dir, ctx.dir.certificate()?).map_err(|_| {
            CliError::new(format!(
                "you do not hold the role \"{role}\": only its holders, or the device holding the team key, set who is on call"
            ))
        })?;
        let draft = AssignmentDraft {
            replaces: b.overlapping(&role, from, to)?,
            role: role.clone(),
            holders,
            from_ms: from,
            to_ms: to,
            issued: crate::hlc::Hlc::new(now_ms(), 0).0,
        };
        let signed = Assignment::sign_by_authority(&key, draft)
            .map_err(|e| CliError::usage(format!("the assignment cannot be made: {e}")))?;
        b.add_assignment(signed)?;
    }
    let list = b.oncall()?;
    if ctx.out.json {
        ctx.out.print_json(&list.iter().find(|r| r.role == role));
    } else {
        outln!(
            "#{role}: on call from {} to {}",
            super::render::time(from),
            super::render::time(to)
        );
        if b.is_offline() {
            ctx.out.note(STORED_LOCALLY);
        }
    }
    Ok(())
}

pub fn remind(ctx: &Ctx, cmd: RemindCmd) -> Result<()> {
    match cmd {
        RemindCmd::Set(a) => remind_set(ctx, a),
        RemindCmd::Done(a) => remind_act(ctx, &a, None),
        RemindCmd::Snooze(a) => {
            let until = now_ms() + parse_duration(&a.for_)?;
            remind_act(ctx, &a.which, Some(until))
        }
    }
}

fn remind_set(ctx: &Ctx, a: RemindSetArgs) -> Result<()> {
    let mut b = Backend::open(ctx)?;
    let chat = super::talk::find_chat(&b, &a.conversation)?;
    let due_ms = match (&a.at, &a.in_) {
        (Some(t), _) => parse_when(t, now_ms())?,
        (None, Some(d)) => now_ms() + parse_duration(d)?,
        (None, None) => return Err(CliError::usage("say when: --at 14:00 or --in 30m")),
    };
    let targets = if a.for_.is_empty() {
        vec![b.status()?.member.ok_or_else(|| {
            CliError::new("this device is not a member of a team yet: join one with `huddle team join <token>`")
        })?]
    } else {
        members(&b, &a.for_)?
    };
    let every_ms = a.every.as_deref().map(parse_duration).transpose()?;
    let id = b.send(
        chat.id,
        SendRequest {
            body: a.text,
            priority: Priority::Routine,
            reply_to: None,
            ack_by: None,
            reminder: Some(ReminderRequest {
                due_ms,
                targets,
                every_ms,
                times: a.times,
            }),
            attachments: Vec::new(),
        },
    )?;
    if ctx.out.json {
        ctx.out.print_json(&json!({ "id": id, "conversation": chat.id, "due_ms": due_ms, "offline": b.is_offline() }));
    } else {
        outln!("{id}");
        ctx.out
            .note(format!("Reminder set for {}.", super::render::time(due_ms)));
        if b.is_offline() {
            ctx.out.note(STORED_LOCALLY);
        }
    }
    Ok(())
}

fn remind_act(ctx: &Ctx, a: &RemindActArgs, until: Option<u64>) -> Result<()> {
    let mut b = Backend::open(ctx)?;
    let prefix = resolve::message_prefix(&a.message)?;
    let found = b.find_messages(&prefix)?;
    let r = resolve::message(&found, &a.message)?.clone();
    let occurrence = match a.occurrence {
        Some(0) => return Err(CliError::usage("occurrences count from 1")),
        Some(n) => n - 1,
        None => b
            .alerts()?
            .iter()
            .find(|x| x.kind == AlertKind::Reminder && x.message == r.message)
            .and_then(|x| x.occurrence)
            .ok_or_else(|| {
                CliError::usage(
                    "that reminder is not due now: say which occurrence with --occurrence N",
                )
            })?,
    };
    b.reminder(&r, occurrence, until)?;
    if ctx.out.json {
        ctx.out.print_json(
            &json!({ "message": r.message, "occurrence": occurrence + 1, "until_ms": until }),
        );
    } else {
        match until {
            None => out!("Done.\n"),
            Some(t) => out!("Snoozed until {}.\n", super::render::time(t)),
        }
    }
    Ok(())
}
