//! Text rendering for people: times in local time, short ids, receipts in
//! words. (`--json` bypasses all of this.)
//!
//! Invariant: a message whose author this node has not verified is always
//! marked as such, whatever else is shown.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::api::types::{Chat, HistoryMessage, Member, Peer, Status};
use crate::ids::MemberId;
use crate::message::Priority;

/// Names by member id, from the directory.
pub type Names = BTreeMap<MemberId, String>;

pub fn names(directory: &[Member]) -> Names {
    directory
        .iter()
        .map(|m| (m.member, m.name.clone()))
        .collect()
}

pub fn name_of(names: &Names, m: &MemberId) -> String {
    names
        .get(m)
        .cloned()
        .unwrap_or_else(|| format!("member {}", &m.to_hex()[..8]))
}

pub fn short(hex: &str) -> &str {
    &hex[..8.min(hex.len())]
}

/// `HH:MM` for today, `YYYY-MM-DD HH:MM` otherwise, in local time.
pub fn time(ms: u64) -> String {
    let offset = super::local_offset();
    let at = |ms: u64| {
        time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
            .to_offset(offset)
    };
    let t = at(ms);
    let today = at(super::now_ms()).date();
    let fmt = if t.date() == today {
        time::macros::format_description!("[hour]:[minute]")
    } else {
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]")
    };
    t.format(fmt).unwrap_or_default()
}

pub fn chats(list: &[Chat]) -> String {
    if list.is_empty() {
        return "no conversations yet: start one with `huddle chat new --with \"Name\"`\n".into();
    }
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<9} {:<6} {:>6} {:>6}  {:<16} TITLE",
        "ID", "KIND", "MSGS", "UNREAD", "LAST"
    );
    for c in list {
        let last = c.last_activity.map(time).unwrap_or_else(|| "-".into());
        let title = match &c.role {
            Some(r) if c.kind == "role" => format!("{} (role channel: {r})", c.title),
            _ => c.title.clone(),
        };
        let _ = writeln!(
            s,
            "{:<9} {:<6} {:>6} {:>6}  {:<16} {}",
            short(&c.id.to_hex()),
            c.kind,
            c.messages,
            if c.unread >= crate::node::UNREAD_SCAN {
                format!("{}+", crate::node::UNREAD_SCAN)
            } else if c.unread > 0 {
                c.unread.to_string()
            } else {
                "-".into()
            },
            last,
            title
        );
    }
    s
}

fn list_names(names: &Names, ms: &[MemberId]) -> String {
    ms.iter()
        .map(|m| name_of(names, m))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One message as a few lines.
pub fn message(m: &HistoryMessage, chat: &Chat, names: &Names) -> String {
    let mut s = String::new();
    let author = m
        .author_name
        .clone()
        .unwrap_or_else(|| name_of(names, &m.author));
    let flag = match m.priority {
        Priority::Routine => "",
        Priority::Urgent => "URGENT ",
        Priority::Stat => "STAT ",
    };
    let unverified = if m.author_verified {
        ""
    } else {
        "[UNVERIFIED AUTHOR] "
    };
    let _ = writeln!(
        s,
        "{}  {flag}{unverified}{author}: {}   [{}]",
        time(m.time_ms),
        m.body,
        short(&m.id.to_hex())
    );
    if let Some(r) = m.reply_to {
        let _ = writeln!(s, "       in reply to [{}]", short(&r.to_hex()));
    }
    for a in &m.attachments {
        let _ = writeln!(s, "       attached: {}", attachment(a));
    }
    // Receipts: out of the other members when the conversation lists them.
    let others: Vec<MemberId> = chat
        .members
        .iter()
        .copied()
        .filter(|x| *x != m.author)
        .collect();
    let count = |got: &[MemberId]| {
        if others.is_empty() {
            got.len().to_string()
        } else {
            format!("{}/{}", got.len(), others.len())
        }
    };
    let mut receipts = format!(
        "       delivered {} · read {}",
        count(&m.delivered_to),
        count(&m.read_by)
    );
    if m.priority.wants_ack() {
        if m.acked_by.is_empty() {
            receipts.push_str(" · NOT ACKNOWLEDGED yet");
        } else {
            let _ = write!(
                receipts,
                " · acknowledged by {}",
                list_names(names, &m.acked_by)
            );
        }
        let waiting: Vec<MemberId> = others
            .iter()
            .copied()
            .filter(|x| !m.acked_by.contains(x))
            .collect();
        if !waiting.is_empty() && !others.is_empty() {
            let _ = write!(receipts, " · waiting for {}", list_names(names, &waiting));
        }
    }
    let _ = writeln!(s, "{receipts}");
    s
}

pub fn history(chat: &Chat, msgs: &[HistoryMessage], names: &Names) -> String {
    let total = chat.messages.max(msgs.len());
    let count = plural(total, "message");
    // The header says when a limit hides older messages, so an empty or
    // short page is never mistaken for an empty conversation.
    let shown = if msgs.len() < total {
        format!("newest {} of {count}", msgs.len())
    } else {
        count
    };
    let mut s = format!("── {} ({shown}) ──\n", chat.title);
    if total == 0 {
        s.push_str("no messages yet\n");
    }
    for m in msgs {
        s.push_str(&message(m, chat, names));
    }
    s
}

/// One attachment: name, type, size, and where it is.
pub fn attachment(a: &crate::api::types::AttachmentView) -> String {
    let state = match (a.held, a.own) {
        (true, true) if a.reached => "yours; reached another device",
        (true, true) => "yours; not on any other device yet",
        (true, false) => "on this device",
        (false, _) if a.held_chunks > 0 => "partly fetched",
        (false, _) => "not fetched: `huddle fetch`",
    };
    format!("{} ({}, {}) · {state}", a.name, a.media_type, size(a.size))
}

/// A byte count as people read it.
pub fn size(n: u64) -> String {
    match n {
        n if n < 1024 => format!("{n} B"),
        n if n < 1024 * 1024 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{:.1} MiB", n as f64 / (1024.0 * 1024.0)),
    }
}

/// "1 message", "3 messages".
pub fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// The connected peers; with none, how the node looks for them (`reach`:
/// its status, with `mdns` and `dialling`).
pub fn peers(list: &[Peer], reach: Option<&Status>) -> String {
    if list.is_empty() {
        return not_connected(reach);
    }
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<20} {:<9} {:<16} {:<10} ADDRESS",
        "NAME", "FOUND BY", "SINCE", "DEVICE"
    );
    for p in list {
        let name = match (&p.name, p.verified) {
            (Some(n), true) => n.clone(),
            (Some(n), false) => format!("{n} (unverified)"),
            (None, _) => "(not verified yet)".into(),
        };
        let _ = writeln!(
            s,
            "{:<20} {:<9} {:<16} …{:<9} {}",
            name,
            p.found_by.as_deref().unwrap_or("-"),
            p.since_ms.map(time).unwrap_or_else(|| "-".into()),
            p.device.short(),
            p.address.as_deref().unwrap_or("-"),
        );
    }
    s
}

pub fn directory(list: &[Member]) -> String {
    let mut s = String::new();
    for m in list {
        let roles = if m.roles.is_empty() {
            "no roles".to_owned()
        } else {
            m.roles.join(", ")
        };
        let _ = writeln!(
            s,
            "  {} — {roles} — member {} — {} device(s){}",
            m.name,
            short(&m.member.to_hex()),
            m.devices.len(),
            if m.revoked { " — REVOKED" } else { "" }
        );
    }
    s
}

fn not_connected(reach: Option<&Status>) -> String {
    let mut s = String::from("not connected to any device yet\n");
    let (mdns, dialling) = reach.map_or((true, &[][..]), |r| (r.mdns, &r.dialling[..]));
    if mdns {
        s.push_str("  looking on this network with mDNS (if multicast is blocked here, start with `huddle run --peer <address>`)\n");
    } else {
        s.push_str("  mDNS is off: this node finds only the addresses it is given (`--peer`) or remembers, and devices that dial it\n");
    }
    if dialling.is_empty() {
        if !mdns {
            s.push_str("  it has no address to try: start it with `huddle run --peer <address>` (another device's `huddle status` shows its addresses)\n");
        }
    } else {
        let n = dialling.len();
        let _ = writeln!(s, "  trying {n} address{}:", if n == 1 { "" } else { "es" });
        for a in dialling {
            let _ = writeln!(s, "    {a}");
        }
    }
    s
}
