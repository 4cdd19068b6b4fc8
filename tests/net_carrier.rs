//! Sealed relaying between real `huddle run` processes in network
//! namespaces this test creates (issue 25's acceptance): two subnets that
//! reach each other only through a gateway device that is a member of no
//! conversation.
//!
//! ```text
//!   ns a (Ana) ── 10.N.1.0/24 ── ns g (Gus) ── 10.N.2.0/24 ── ns b (Ben)
//! ```
//!
//! Namespaces a and b have a route only to their own /24, so Ana's and
//! Ben's devices never connect (the test also checks their peer lists). Their direct conversation converges through
//! Gus's mailbox of sealed envelopes. Then Gus goes home: stopped, started
//! again in Ana's namespace (the same data directory: the same device), it
//! picks up what Ana's device sealed for Ben; stopped once more and started
//! in Ben's namespace, it hands it over. Finally Gus's store, read through
//! the `Store` trait (decrypted: the directories are encrypted at rest), is
//! searched for the messages' planted markers and for any record of the
//! conversation.
//!
//! Without root or without `ip` the test fails when `CI=true` and prints a
//! loud notice otherwise.
#![cfg(feature = "cli")]

mod cli_support;
mod ns_support;

use anyhow::anyhow;
use cli_support::{admit, eventually, init, ok, open_store};
use huddle::store::Store;
use ns_support::{netns, InNs};

/// A routine message is sealed for a member device out of reach once its
/// grace period ends (sealed.md §3): a second here, not a minute.
const GRACE: [(&str, &str); 1] = [("HUDDLE_TEST_SEAL_GRACE_MS", "1000")];

/// Three namespaces in a row, a and g, g and b joined by veth pairs;
/// deleted on drop.
struct Row {
    names: [String; 3],
    net: u32,
}

impl Row {
    fn create() -> anyhow::Result<Row> {
        ns_support::remove_stale("huddle-c");
        let pid = std::process::id();
        let row = Row {
            names: ["a", "g", "b"].map(|n| format!("huddle-c{pid}-{n}")),
            net: pid % 250 + 1,
        };
        // Built in place: a step that fails drops `row`, which deletes
        // whatever was made.
        let [a, g, b] = &row.names;
        for n in &row.names {
            netns::must(&["ip", "netns", "add", n]).map_err(|e| anyhow!(e))?;
            netns::must(&["ip", "-n", n, "link", "set", "lo", "up"]).map_err(|e| anyhow!(e))?;
        }
        // (left namespace, its end, right namespace, its end, subnet)
        let links = [
            (a, format!("hca{pid}"), g, format!("hcg{pid}"), 1),
            (b, format!("hcb{pid}"), g, format!("hch{pid}"), 2),
        ];
        for (left, lv, right, rv, subnet) in &links {
            // Both ends are made inside the namespaces: nothing appears in
            // the namespace the test runs in.
            netns::must(&[
                "ip", "link", "add", lv, "netns", left, "type", "veth", "peer", "name", rv,
                "netns", right,
            ])
            .map_err(|e| anyhow!(e))?;
            for (n, dev, host) in [(left, lv, 1), (right, rv, 2)] {
                let addr = format!("10.{}.{subnet}.{host}/24", row.net);
                netns::must(&["ip", "-n", n, "addr", "add", &addr, "dev", dev])
                    .map_err(|e| anyhow!(e))?;
                netns::must(&["ip", "-n", n, "link", "set", dev, "up"]).map_err(|e| anyhow!(e))?;
            }
        }
        Ok(row)
    }

    /// The address prefix of `subnet` (1: a–g, 2: g–b).
    fn subnet(&self, subnet: u32) -> String {
        format!("/ip4/10.{}.{subnet}.", self.net)
    }
}

impl Drop for Row {
    fn drop(&mut self) {
        for n in &self.names {
            // Deleting a namespace deletes its ends of the veth pairs.
            let _ = netns::run(&["ip", "netns", "del", n]);
        }
    }
}

#[test]
fn a_gateway_in_no_conversation_carries_one_across_subnets_and_from_one_to_the_other(
) -> anyhow::Result<()> {
    if let Some(why) = netns::missing_prerequisite() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("the carrier test cannot run here: {why}");
        }
        eprintln!("\n!!!!!!!! SKIPPED: the sealed carrier test did not run: {why} !!!!!!!!\n");
        return Ok(());
    }
    let tmp = tempfile::tempdir()?;
    let ana = init(tmp.path(), "ana", "Ana Silva", &["nurse"])?;
    ok(&ana.dir, &["team", "create", "St Mary Hospital"])?;
    let ben = init(tmp.path(), "ben", "Ben Okafor", &["physician"])?;
    let gus = init(tmp.path(), "gus", "Gus Gateway", &["porter"])?;
    admit(&ana, &ben, "Ben Okafor", &["physician"])?;
    admit(&ana, &gus, "Gus Gateway", &["porter"])?;
    let row = Row::create()?;
    let [ns_a, ns_g, ns_b] = &row.names;
    let marker = |n: u32| format!("planted-{}-{n}: K+ 6.1 bed 4", std::process::id());

    // The gateway between the subnets; Ana and Ben dial it.
    let g = InNs::start(ns_g, &gus, &[], &GRACE)?;
    let a = InNs::start(ns_a, &ana, &[&g.address(&row.subnet(1))?], &GRACE)?;
    let b = InNs::start(ns_b, &ben, &[&g.address(&row.subnet(2))?], &GRACE)?;
    eventually("Ben's device to reach Ana's directory", || {
        let show = a.json(&["team", "show"])?;
        Ok(show.to_string().contains(&ben.device).then_some(()))
    })?;
    let conv = a.json(&["chat", "new", "--with", "Ben Okafor"])?["id"]
        .as_str()
        .ok_or_else(|| anyhow!("no conversation id"))?
        .to_owned();
    a.json(&["send", &conv, &marker(1)])?;
    b.wait_for("Ana's message to reach Ben", &conv, &marker(1), None);
    b.json(&["send", &conv, &marker(2)])?;
    a.wait_for("Ben's reply to reach Ana", &conv, &marker(2), None);
    // Both delivered receipts crossed too: nothing is left to seal.
    a.wait_for("Ben's receipt to reach Ana", &conv, &marker(1), Some(&ben));
    b.wait_for("Ana's receipt to reach Ben", &conv, &marker(2), Some(&ana));
    for (who, other) in [(&a, &ben), (&b, &ana)] {
        let peers = who.json(&["peers"])?;
        assert!(
            !peers.to_string().contains(&other.device),
            "Ana's and Ben's devices connected directly: {peers}"
        );
    }
    // Delivered everywhere, the envelopes' done secrets empty the mailbox.
    eventually("the gateway's mailbox to empty", || {
        Ok((g.mailbox() == Some(0)).then_some(()))
    })
    .map_err(|e| anyhow!("{e}\n{}", g.log()))?;
    g.stop()?;

    // Gus goes home through Ana's site: what Ana writes meanwhile is
    // sealed for Ben's device (out of reach) and handed to Gus.
    a.json(&["send", &conv, &marker(3)])?;
    let g = InNs::start(ns_a, &gus, &[&a.address(&row.subnet(1))?], &GRACE)?;
    eventually("Ana's sealed message to reach Gus's mailbox", || {
        Ok(g.mailbox().is_some_and(|n| n > 0).then_some(()))
    })
    .map_err(|e| anyhow!("{e}\n{}\n{}", a.log(), g.log()))?;
    let history = b.json(&["history", &conv])?;
    assert!(
        !history.to_string().contains(&marker(3)),
        "Ben had it before Gus came: {history}"
    );
    g.stop()?;
    let g = InNs::start(ns_b, &gus, &[&b.address(&row.subnet(2))?], &GRACE)?;
    b.wait_for("Gus to carry Ana's message to Ben", &conv, &marker(3), None);
    let chats = g.json(&["chats"])?;
    assert_eq!(chats.as_array().map_or(1, Vec::len), 0, "{chats}");
    g.stop()?;
    a.stop()?;
    b.stop()?;
    drop(row);

    // What the gateway's device holds, decrypted as the node reads it. The
    // same search finds the markers in a member's store.
    let pairs = open_store(&gus.dir)?.scan_prefix(&[])?;
    assert!(!pairs.is_empty(), "Gus's store is empty");
    let conv_bytes = conv_id(&conv)?;
    let bens = open_store(&ben.dir)?.scan_prefix(&[])?;
    for needle in [marker(3).into_bytes(), conv_bytes.clone()] {
        assert!(
            bens.iter().any(|(_, v)| contains(v, &needle)),
            "the search does not find {needle:?} in Ben's store"
        );
    }
    for (key, value) in &pairs {
        for n in 1..=3 {
            let m = marker(n);
            assert!(
                !contains(key, m.as_bytes()) && !contains(value, m.as_bytes()),
                "Gus's store holds the plaintext of message {n} under {key:?}"
            );
        }
        assert!(
            !contains(key, &conv_bytes) && !contains(value, &conv_bytes),
            "Gus's store names the conversation under {key:?}"
        );
    }
    Ok(())
}

/// A conversation id as the CLI prints it, as bytes.
fn conv_id(text: &str) -> anyhow::Result<Vec<u8>> {
    let id: huddle::ConversationId = text.parse().map_err(|e| anyhow!("{text}: {e:?}"))?;
    Ok(id.0.to_vec())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
