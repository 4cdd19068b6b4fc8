//! `huddle demo`: a whole ward in one process, telling its story step by
//! step: the team is formed, staff chat 1:1, in a group and in a role
//! channel, an urgent message is acknowledged, one device is cut off while
//! both sides keep writing, the link returns, and every device proves it
//! holds the same history (message counts and history digests).
//!
//! Invariant: the demo uses only 127.0.0.1 and no mDNS unless `--mdns` is
//! given, so it is safe to run anywhere (CI included).

mod ward;

use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use serde_json::json;

use super::args::DemoArgs;
use super::offline::Offline;
use super::{CliError, Out, Result};
use crate::header::ConversationKind;
use crate::ids::{ConversationId, MessageId};
use crate::message::Priority;
use crate::node::{Command, Reply};
use ward::Ward;

const ANA: usize = 0;
const BEN: usize = 1;
const CHLOE: usize = 2;

fn ms(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// Prints the story: to stdout, or to stderr when stdout carries `--json`.
struct Teller {
    out: Out,
}

impl Teller {
    fn say(&self, s: impl std::fmt::Display) {
        if self.out.json {
            if !self.out.quiet {
                super::output::note(format_args!("{s}"));
            }
        } else {
            outln!("{s}");
        }
    }
}

pub fn run(a: &DemoArgs, out: Out) -> Result<()> {
    let stay = !a.exit && std::io::stdout().is_terminal();
    let mut suffix = [0u8; 4];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut suffix);
    let root = std::env::temp_dir().join(format!(
        "huddle-demo-{}",
        data_encoding::HEXLOWER.encode(&suffix)
    ));
    let rt = super::runtime()?;
    let result = rt.block_on(story(&root, a, out, stay));
    drop(rt);
    let _ = std::fs::remove_dir_all(&root);
    result
}

async fn create(ward: &Ward, i: usize, kind: ConversationKind) -> Result<ConversationId> {
    match ward
        .command(i, Command::CreateConversation { kind })
        .await?
    {
        Reply::Conversation(id) => Ok(id),
        r => Err(CliError::new(format!("unexpected reply {r:?}"))),
    }
}

async fn send(
    ward: &Ward,
    i: usize,
    conv: ConversationId,
    body: &str,
    priority: Priority,
) -> Result<MessageId> {
    let cmd = Command::Send {
        conversation: conv,
        body: body.into(),
        priority,
        reply_to: None,
        fields: Default::default(),
    };
    match ward.command(i, cmd).await? {
        Reply::Message(id) => Ok(id),
        r => Err(CliError::new(format!("unexpected reply {r:?}"))),
    }
}

/// Waits until every node in `who` holds `len` messages of `conv` in the
/// same order; returns how long that took.
async fn converged(
    ward: &Ward,
    what: &str,
    conv: ConversationId,
    who: &[usize],
    len: usize,
) -> Result<Duration> {
    let start = Instant::now();
    loop {
        let mut digests = BTreeSet::new();
        let mut all = true;
        for &i in who {
            match ward.digest(i, conv).await? {
                Some((n, d)) if n == len => {
                    digests.insert(d);
                }
                _ => all = false,
            }
        }
        if all && digests.len() == 1 {
            return Ok(start.elapsed());
        }
        if start.elapsed() > Duration::from_secs(20) {
            return Err(CliError::new(format!(
                "the demo timed out waiting for {what}: run it again with -v to see why"
            )));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn story(root: &std::path::Path, a: &DemoArgs, out: Out, stay: bool) -> Result<()> {
    let t = Teller { out };
    let t0 = Instant::now();
    let n = a.nodes as usize;
    let cut = n - 1;
    let mut ward = Ward::create(root, n, a.mdns)?;
    let names: Vec<&str> = ward.devices.iter().map(|d| d.name).collect();
    let everyone: Vec<usize> = (0..n).collect();

    t.say(format!(
        "huddle demo: a ward of {n} devices in this process, talking over real encrypted libp2p connections on 127.0.0.1{}, each with its own store in {}\n",
        if a.mdns { " (found by mDNS)" } else { " (wired by address, no mDNS)" },
        root.display()
    ));
    t.say(format!(
        "1. {} creates the team \"{}\" and admits {}: each device gets a certificate signed by the team key.",
        names[ANA],
        ward::TEAM,
        names[1..].join(", ")
    ));

    for i in 0..n {
        ward.start(i, stay).await?;
    }
    ward.wait("every device to connect", &everyone, move |node| {
        node.peers().iter().filter(|p| p.verified).count() == n - 1 && node.directory().count() == n
    })
    .await?;
    t.say(format!(
        "2. {n} nodes start; each proves its membership to the others. All connected and verified in {}.",
        ms(t0.elapsed())
    ));

    // 1:1
    let (ana_m, ben_m) = (ward.devices[ANA].member, ward.devices[BEN].member);
    let direct = create(
        &ward,
        ANA,
        ConversationKind::Direct {
            members: [ana_m, ben_m],
        },
    )
    .await?;
    let sent = Instant::now();
    send(
        &ward,
        ANA,
        direct,
        "Can you review bed 4 before rounds? BP 95/60.",
        Priority::Routine,
    )
    .await?;
    converged(&ward, "the 1:1 message", direct, &[ANA, BEN], 1).await?;
    let first = sent.elapsed();
    send(
        &ward,
        BEN,
        direct,
        "On my way, 10 minutes.",
        Priority::Routine,
    )
    .await?;
    converged(&ward, "the 1:1 reply", direct, &[ANA, BEN], 2).await?;
    t.say(format!(
        "3. 1:1: {} → {}: \"Can you review bed 4 before rounds?\" On {}'s device {} later; {} replies.",
        names[ANA], names[BEN], names[BEN], ms(first), names[BEN]
    ));

    // Group
    let group = create(
        &ward,
        ANA,
        ConversationKind::Group {
            title: "Ward 7 handover".into(),
            members: ward.devices.iter().map(|d| d.member).collect(),
        },
    )
    .await?;
    ward.wait("the group to reach everyone", &everyone, move |node| {
        node.conversation(&group).is_some()
    })
    .await?;
    send(
        &ward,
        CHLOE,
        group,
        "Bed 7 fell overnight: neuro obs hourly.",
        Priority::Routine,
    )
    .await?;
    converged(&ward, "the group message", group, &everyone, 1).await?;
    t.say(format!(
        "4. Group \"Ward 7 handover\" with all {n}: {} posts an update; every device has it.",
        names[CHLOE]
    ));

    // Urgent + acknowledgements
    let urgent = send(
        &ward,
        BEN,
        group,
        "URGENT: bed 12 lactate 4.1, start the sepsis bundle now.",
        Priority::Urgent,
    )
    .await?;
    converged(&ward, "the urgent message", group, &everyone, 2).await?;
    let acked = Instant::now();
    for i in [CHLOE, ANA] {
        ward.command(
            i,
            Command::Ack {
                conversation: group,
                message: urgent,
            },
        )
        .await?;
    }
    ward.wait("the acknowledgements to spread", &everyone, move |node| {
        node.conversation(&group)
            .and_then(|c| c.receipts.acks.get(&urgent).map(|s| s.len() == 2))
            .unwrap_or(false)
    })
    .await?;
    t.say(format!(
        "5. {} sends an URGENT message; {} and {} acknowledge it. Every device shows who acknowledged, {} after the first ack.",
        names[BEN], names[CHLOE], names[ANA], ms(acked.elapsed())
    ));

    // Role channel
    let nurses: Vec<usize> = (0..n)
        .filter(|&i| ward::CAST[i].2.contains(&"nurse"))
        .collect();
    let others: Vec<usize> = (0..n).filter(|i| !nurses.contains(i)).collect();
    let role = create(
        &ward,
        ANA,
        ConversationKind::Role {
            role: "nurse".into(),
        },
    )
    .await?;
    send(
        &ward,
        ANA,
        role,
        "Nurses: handover moves to 07:15 tomorrow.",
        Priority::Routine,
    )
    .await?;
    converged(&ward, "the role channel", role, &nurses, 1).await?;
    let mut leaked = false;
    for &i in &others {
        leaked |= ward
            .query(i, move |n| n.conversation(&role).is_some())
            .await?;
    }
    if leaked {
        return Err(CliError::new(
            "a role channel reached a device outside the role; please report this",
        ));
    }
    t.say(format!(
        "6. Role channel #nurse: reaches {}; {} never receive it.",
        nurses
            .iter()
            .map(|&i| names[i])
            .collect::<Vec<_>>()
            .join(", "),
        others
            .iter()
            .map(|&i| names[i])
            .collect::<Vec<_>>()
            .join(" and ")
    ));

    // Outage
    ward.stop(cut).await?;
    t.say(format!(
        "7. Outage: {}'s device drops off the network. Both sides keep writing:",
        names[cut]
    ));
    {
        let mut offline = Offline::open(&ward.devices[cut].dir)?;
        for body in [
            "Cut off here: bed 9 pain score 7, gave paracetamol 1 g.",
            "Still no network: bed 9 settled.",
        ] {
            offline.command(Command::Send {
                conversation: group,
                body: body.into(),
                priority: Priority::Routine,
                reply_to: None,
                fields: Default::default(),
            })?;
        }
    }
    let online: Vec<usize> = ward.running();
    for (i, body) in [
        (ANA, "Bed 3 discharged home."),
        (BEN, "Bed 12 antibiotics given at 03:40."),
        (ANA, "Bed 5 needs a repeat ECG at 06:00."),
    ] {
        send(&ward, i, group, body, Priority::Routine).await?;
    }
    converged(&ward, "the connected side", group, &online, 5).await?;
    t.say(format!(
        "   {} writes 2 messages, stored on that device only; the rest of the ward writes 3.\n   Now {} holds 4 messages in the group, everyone else 5.",
        names[cut], names[cut]
    ));

    // The link returns
    let back = Instant::now();
    ward.start(cut, stay).await?;
    let merge = converged(&ward, "the merge", group, &everyone, 7).await?;
    let merged_in = back.elapsed();
    t.say(format!(
        "8. The link returns: {}'s node restarts and reconnects. Histories merged in {} ({} after restart, including reconnecting).",
        names[cut],
        ms(merge),
        ms(merged_in)
    ));

    // Proof
    t.say("\nProof (messages and history digest per conversation, on every device):");
    let mut proof = Vec::new();
    let mut identical = true;
    for (title, conv) in [
        ("1:1 Ana-Ben", direct),
        ("Ward 7 handover", group),
        ("#nurse", role),
    ] {
        let mut digests = BTreeSet::new();
        let mut rows = Vec::new();
        for (i, name) in names.iter().enumerate() {
            if let Some((len, d)) = ward.digest(i, conv).await? {
                let hex = data_encoding::HEXLOWER.encode(&d);
                digests.insert(hex.clone());
                t.say(format!(
                    "   {:<16} {:<14} {:>2} message{}  digest {}",
                    title,
                    name,
                    len,
                    if len == 1 { " " } else { "s" },
                    &hex[..16]
                ));
                rows.push(json!({ "device": name, "messages": len, "digest": hex }));
            }
        }
        identical &= digests.len() == 1;
        proof.push(json!({ "conversation": title, "id": conv, "devices": rows }));
    }
    if !identical {
        return Err(CliError::new(
            "the devices do not hold identical histories; please report this",
        ));
    }
    let total = t0.elapsed();
    t.say(format!(
        "✓ Identical on every device that belongs to each conversation: nothing lost, nothing duplicated, nothing leaked.\nStory told in {}.",
        ms(total)
    ));
    if out.json {
        out.print_json(&json!({
            "nodes": n,
            "merge_ms": merge.as_millis() as u64,
            "total_ms": total.as_millis() as u64,
            "identical": identical,
            "conversations": proof,
        }));
    }

    if stay {
        let exe = std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "huddle".into());
        let dir = |i: usize| ward.devices[i].dir.path().display().to_string();
        let screen = |i: usize| {
            ward.devices[i]
                .node
                .as_ref()
                .and_then(|r| r.api.as_ref())
                .map(|api| api.login_url())
                .unwrap_or_default()
        };
        t.say(format!(
            "\nThe ward is still running. Open {ana}'s and {ben}'s screens side by side (each link signs in once; `{exe} --data-dir DIR open --print` gives a new one):\n  {ana}  {sa}\n  {ben}  {sb}",
            ben = names[BEN],
            ana = names[ANA],
            sa = screen(ANA),
            sb = screen(BEN),
        ));
        t.say(format!(
            "\nOr from another terminal, talk to it as {ben} or {ana}:\n  {exe} --data-dir {b} chats\n  {exe} --data-dir {b} send \"Ward 7 handover\" \"Hello from the terminal\" --urgent\n  {exe} --data-dir {a} history \"Ward 7 handover\" --follow\n  {exe} --data-dir {a} peers\nPress Ctrl-C to stop the ward (its data is then deleted).",
            ben = names[BEN],
            ana = names[ANA],
            b = dir(BEN),
            a = dir(ANA),
        ));
        super::run::shutdown_signal().await;
        t.say("Stopping the ward…");
    }
    ward.stop_all().await
}
