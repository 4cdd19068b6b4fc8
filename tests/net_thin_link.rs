//! Priority on a thin link between real `huddle run` processes (issue 25,
//! part 3; protocol/transport.md §5.1): a clinic and a hospital in two
//! network namespaces this test creates, joined by a veth pair shaped to
//! 256 kbit/s each way (`tc tbf`; the kernels here have no `netem`, so no
//! added delay).
//!
//! The clinic's device comes back after the hospital wrote about 800 kB
//! to the ward's board: 26 s of this link. While that catch-up crosses,
//! the hospital writes a STAT message in another conversation. The writer
//! sends the STAT frame before the catch-up's frames queued behind it;
//! what stands ahead of it is what was already handed to Yamux (its
//! 256 KiB window, 8 s of this link) and the rest of the sync part being
//! written (at most 64 KiB, 2 s). So the clinic must show the STAT message
//! within 14 s, while the board is still catching up. Checked when this
//! test was written: with the writer's queue made a FIFO the STAT message
//! arrived after the whole catch-up (26 s), and with sync parts of
//! 512 KiB (`SYNC_CHUNK_LEN` before) after 18 s.
//!
//! Without root, `ip` or `tc` the test fails when `CI=true` and prints a
//! loud notice otherwise.
#![cfg(feature = "cli")]

mod cli_support;
mod ns_support;

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use cli_support::{admit, eventually, init, ok};
use ns_support::{netns, InNs};

/// Messages written to the board while the clinic is away, and their size
/// (the most a message may hold).
const BOARD_MESSAGES: usize = 110;
const BODY_LEN: usize = 16 * 1024;

/// The link's rate, each way.
const RATE: &str = "256kbit";

/// The STAT message must arrive within this after it is written (the
/// transport's window and one sync part: 10 s of the link), and before
/// the catch-up ends.
const STAT_WITHIN: Duration = Duration::from_secs(14);

/// Two namespaces joined by one shaped veth pair; deleted on drop.
struct Link {
    names: [String; 2],
    net: u32,
}

impl Link {
    fn create() -> anyhow::Result<Link> {
        ns_support::remove_stale("huddle-t");
        let pid = std::process::id();
        let link = Link {
            names: ["c", "h"].map(|n| format!("huddle-t{pid}-{n}")),
            net: pid % 250 + 1,
        };
        let must = |args: &[&str]| netns::must(args).map_err(|e| anyhow!(e));
        let [c, h] = &link.names;
        for n in &link.names {
            must(&["ip", "netns", "add", n])?;
            must(&["ip", "-n", n, "link", "set", "lo", "up"])?;
        }
        let (cv, hv) = (format!("htc{pid}"), format!("hth{pid}"));
        must(&[
            "ip", "link", "add", &cv, "netns", c, "type", "veth", "peer", "name", &hv, "netns", h,
        ])?;
        for (n, dev, host) in [(c, &cv, 1), (h, &hv, 2)] {
            let addr = format!("10.{}.9.{host}/24", link.net);
            must(&["ip", "-n", n, "addr", "add", &addr, "dev", dev])?;
            must(&["ip", "-n", n, "link", "set", dev, "up"])?;
            must(&[
                "ip", "netns", "exec", n, "tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate",
                RATE, "burst", "4kb", "latency", "200ms",
            ])?;
        }
        Ok(link)
    }

    fn prefix(&self) -> String {
        format!("/ip4/10.{}.9.", self.net)
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = netns::run(&["ip", "netns", "del", n]);
        }
    }
}

/// A message body of `len` bytes that does not compress (Automerge
/// deflates change columns): printable characters from a xorshift stream,
/// after a word (a body starting with `-` would read as an option).
fn incompressible(seed: u64, len: usize) -> String {
    let mut x = seed | 1;
    let word = format!("obs {seed}: ");
    word.clone()
        + &(word.len()..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                char::from(b'!' + (x % 90) as u8)
            })
            .collect::<String>()
}

/// How many messages `node` shows in `conversation` (0 if it cannot say).
fn count(node: &InNs, conversation: &str) -> usize {
    node.json(&["chats"])
        .ok()
        .and_then(|v| {
            v.as_array()?
                .iter()
                .find(|c| c["id"] == conversation)
                .and_then(|c| c["messages"].as_u64())
        })
        .unwrap_or(0) as usize
}

#[test]
fn a_stat_message_overtakes_a_catch_up_on_a_256_kbit_link() -> anyhow::Result<()> {
    let missing = netns::missing_prerequisite().or_else(|| {
        let tc = netns::run(&["tc", "-V"]);
        (!tc.is_ok_and(|o| o.status.success())).then(|| "`tc` is not installed".into())
    });
    if let Some(why) = missing {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("the thin-link test cannot run here: {why}");
        }
        eprintln!("\n!!!!!!!! SKIPPED: the thin-link test did not run: {why} !!!!!!!!\n");
        return Ok(());
    }
    let tmp = tempfile::tempdir()?;
    let ana = init(tmp.path(), "ana", "Ana Silva", &["nurse"])?;
    ok(&ana.dir, &["team", "create", "District Hospital"])?;
    let ben = init(tmp.path(), "ben", "Ben Okafor", &["physician"])?;
    admit(&ana, &ben, "Ben Okafor", &["physician"])?;
    let link = Link::create()?;
    let [ns_c, ns_h] = &link.names;

    // Both conversations reach the clinic while the link is quiet.
    let h = InNs::start(ns_h, &ana, &[], &[])?;
    let c = InNs::start(ns_c, &ben, &[&h.address(&link.prefix())?], &[])?;
    eventually("Ben's device to reach Ana's directory", || {
        let show = h.json(&["team", "show"])?;
        Ok(show.to_string().contains(&ben.device).then_some(()))
    })?;
    let new_chat = |args: &[&str]| -> anyhow::Result<String> {
        let mut all = vec!["chat", "new"];
        all.extend_from_slice(args);
        let v = h.json(&all)?;
        Ok(v["id"]
            .as_str()
            .ok_or_else(|| anyhow!("no id: {v}"))?
            .to_owned())
    };
    let board = new_chat(&["--group", "Ward 3 board", "--with", "Ben Okafor"])?;
    let direct = new_chat(&["--with", "Ben Okafor"])?;
    for conv in [&board, &direct] {
        h.json(&["send", conv, "handover at 19:00"])?;
        c.wait_for(
            "the first messages to reach the clinic",
            conv,
            "handover at 19:00",
            None,
        );
    }
    c.stop()?;

    // The board grows while the clinic is away.
    for i in 0..BOARD_MESSAGES {
        h.json(&["send", &board, &incompressible(i as u64 + 1, BODY_LEN)])?;
    }
    let total = BOARD_MESSAGES + 1;

    // The clinic comes back; once Ana's device has it as a peer, the
    // catch-up is under way, and Ana writes the STAT message.
    let c = InNs::start(ns_c, &ben, &[&h.address(&link.prefix())?], &[])?;
    eventually("the clinic's device to reconnect", || {
        let peers = h.json(&["peers"])?;
        Ok(peers.to_string().contains(&ben.device).then_some(()))
    })?;
    let stat = format!("STAT {}: bed 4 arrest, come now", std::process::id());
    let t = Instant::now();
    h.json(&["send", &direct, &stat, "--stat"])?;
    let (board_then, stat_after) = loop {
        if c.message(&direct, &stat).is_some() {
            // Counted after: if anything, the board looks further along.
            break (count(&c, &board), t.elapsed());
        }
        if t.elapsed() > Duration::from_secs(120) {
            bail!("the STAT message never reached the clinic\n{}", c.log());
        }
    };
    let board_done = eventually("the board's catch-up to end", || {
        Ok((count(&c, &board) == total).then(|| t.elapsed()))
    })?;
    eprintln!(
        "STAT shown after {:.1} s with {board_then} of {total} board messages; the board complete after {:.1} s",
        stat_after.as_secs_f64(),
        board_done.as_secs_f64()
    );
    assert!(
        board_then < total,
        "the STAT message waited for the whole catch-up ({:.1} s; board complete at {:.1} s)",
        stat_after.as_secs_f64(),
        board_done.as_secs_f64()
    );
    assert!(
        stat_after < STAT_WITHIN,
        "the STAT message took {:.1} s",
        stat_after.as_secs_f64()
    );
    c.stop()?;
    h.stop()?;
    Ok(())
}
