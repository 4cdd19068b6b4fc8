//! Discovery with mDNS, end to end — but only inside network namespaces
//! this test creates, never on the machine's real network.
//!
//! The parent test creates two namespaces joined by a veth pair (created
//! directly inside them), then runs this same test binary once in each
//! namespace (`ip netns exec`), selecting one of the child tests below. The
//! children start real nodes with `mdns: true` and no static peers; they
//! must find each other and exchange a message. The namespaces are deleted
//! by a guard even when the test fails.
//!
//! The child tests do nothing unless `HUDDLE_NETNS_CHILD` is set, so they
//! pass trivially (and start no mDNS daemon) in an ordinary test run.
//! Without root or without `ip` the parent fails when `CI=true` and prints
//! a loud notice otherwise.
#![cfg(feature = "net")]

#[path = "net_common.rs"]
mod common;

use std::process::{Child, Command as Process, Stdio};
use std::time::{Duration, Instant};

use common::*;
use huddle::net::{FoundBy, ShellConfig};
use huddle::store::SledStore;
use huddle::{Command, ConversationKind, NodeConfig, Priority, Reply};

const CHILD_ENV: &str = "HUDDLE_NETNS_CHILD";
const SEED_ENV: &str = "HUDDLE_NETNS_SEED";
const CHILD_DEADLINE: Duration = Duration::from_secs(90);

#[path = "../benches/shared/netns.rs"]
mod netns;
use netns::{missing_prerequisite, run};

fn must(args: &[&str]) {
    netns::must(args).unwrap_or_else(|e| panic!("{e}"));
}

/// Two namespaces joined by a veth pair; deleted on drop.
struct Namespaces {
    names: [String; 2],
}

impl Namespaces {
    fn create() -> Namespaces {
        let pid = std::process::id();
        let ns = Namespaces {
            names: [format!("huddle-t{pid}-a"), format!("huddle-t{pid}-b")],
        };
        let [a, b] = &ns.names;
        let (va, vb) = (format!("hva{pid}"), format!("hvb{pid}"));
        let net = pid % 250 + 1;
        must(&["ip", "netns", "add", a]);
        must(&["ip", "netns", "add", b]);
        // Both ends are created inside the namespaces: nothing appears in
        // the namespace this test runs in.
        must(&[
            "ip", "link", "add", &va, "netns", a, "type", "veth", "peer", "name", &vb, "netns", b,
        ]);
        for (n, dev, host) in [(a, &va, 1), (b, &vb, 2)] {
            must(&[
                "ip",
                "-n",
                n,
                "addr",
                "add",
                &format!("10.77.{net}.{host}/24"),
                "dev",
                dev,
            ]);
            must(&["ip", "-n", n, "link", "set", dev, "up"]);
            must(&["ip", "-n", n, "link", "set", "lo", "up"]);
        }
        ns
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in &self.names {
            // Deleting a namespace also deletes its end of the veth pair.
            let _ = run(&["ip", "netns", "del", n]);
        }
    }
}

fn spawn_child(ns: &str, test: &str, seed: u64) -> Child {
    let exe = std::env::current_exe().expect("test binary path");
    Process::new("ip")
        .args(["netns", "exec", ns])
        .arg(exe)
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .env(SEED_ENV, seed.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start a child in its namespace")
}

/// Waits for `child` up to `deadline`, killing it (by its own pid) if late.
fn finish(mut child: Child, deadline: Instant) -> (bool, String) {
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            _ => {
                let _ = child.kill();
                break;
            }
        }
    }
    let out = child.wait_with_output().expect("child output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn two_nodes_find_each_other_with_mdns_inside_network_namespaces() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    if let Some(why) = missing_prerequisite() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("the mDNS test cannot run here: {why}");
        }
        eprintln!("\n!!!!!!!! SKIPPED: the mDNS discovery test did not run: {why} !!!!!!!!\n");
        return;
    }
    let ns = Namespaces::create();
    let seed = u64::from(std::process::id());
    let a = spawn_child(&ns.names[0], "netns_child_a", seed);
    let b = spawn_child(&ns.names[1], "netns_child_b", seed);
    let deadline = Instant::now() + CHILD_DEADLINE;
    let (a_ok, a_out) = finish(a, deadline);
    let (b_ok, b_out) = finish(b, deadline);
    drop(ns);
    let report = format!("--- child a ---\n{a_out}\n--- child b ---\n{b_out}");
    assert!(a_ok && b_ok, "a child failed:\n{report}");
    for out in [&a_out, &b_out] {
        assert!(
            out.contains("CHILD-OK"),
            "a child did not finish:\n{report}"
        );
    }
    assert!(
        report.contains("found_by=Mdns"),
        "neither node dialled a peer it found on mDNS:\n{report}"
    );
}

/// Both children derive the same team and the same two members from the seed.
fn identities() -> (Identity, Identity) {
    let seed: u64 = std::env::var(SEED_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .expect("seed from the parent");
    let team = Team::new(seed);
    (
        team.member(seed + 1, "Ana", &[]),
        team.member(seed + 2, "Ben", &[]),
    )
}

async fn mdns_node(id: &Identity) -> (TestNode, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = ShellConfig {
        key: id.key.clone(),
        certificate: id.cert.clone(),
        listen: vec!["/ip4/0.0.0.0/tcp/0".parse().expect("multiaddr")],
        peers: vec![],
        mdns: true,
        node: NodeConfig::default(),
    };
    let store = SledStore::open(dir.path()).expect("store");
    let (handle, task) = huddle::net::start(config, store).await.expect("start");
    let addr = handle.listen_addrs().await.expect("addrs")[0].clone();
    (TestNode { handle, task, addr }, dir)
}

async fn report_connections(n: &TestNode) {
    for c in n.handle.connections().await.expect("connections") {
        let how = match c.found_by {
            FoundBy::Mdns => "Mdns",
            FoundBy::Static => "Static",
            FoundBy::Inbound => "Inbound",
            FoundBy::Dialed => "Dialed",
        };
        println!("connection to {} at {} found_by={how}", c.device, c.addr);
    }
}

#[tokio::test]
async fn netns_child_a() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let (ana, ben) = identities();
    let (a, _dir) = mdns_node(&ana).await;
    wait_until("a peer found on mDNS to prove membership", || async {
        a.verified_peers().await == 1
    })
    .await;
    report_connections(&a).await;
    let Reply::Conversation(conv) = a
        .handle
        .command(Command::CreateConversation {
            kind: ConversationKind::Direct {
                members: [ana.member, ben.member],
            },
        })
        .await
        .expect("create")
    else {
        panic!("no conversation id")
    };
    a.handle
        .command(Command::Send {
            conversation: conv,
            body: "found you on the ward network".into(),
            priority: Priority::Routine,
            reply_to: None,
            fields: Default::default(),
        })
        .await
        .expect("send");
    wait_until("ben's reply", || async {
        a.bodies(conv).await.is_some_and(|h| h.len() == 2)
    })
    .await;
    // Ben leaves once our delivered receipt for his reply has reached him.
    wait_until("ben to leave", || async { a.verified_peers().await == 0 }).await;
    println!("CHILD-OK");
    a.stop().await;
}

#[tokio::test]
async fn netns_child_b() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let (ana, ben) = identities();
    let (b, _dir) = mdns_node(&ben).await;
    let conv = {
        let conv = std::sync::Mutex::new(None);
        wait_until("ana's conversation", || async {
            let ids = b
                .handle
                .query(|n| n.conversation_ids().copied().collect::<Vec<_>>())
                .await
                .expect("query");
            let has_msg = match ids.first() {
                Some(id) => b.bodies(*id).await.is_some_and(|h| !h.is_empty()),
                None => false,
            };
            if has_msg {
                *conv.lock().expect("lock") = ids.first().copied();
            }
            has_msg
        })
        .await;
        conv.into_inner().expect("lock").expect("a conversation")
    };
    report_connections(&b).await;
    let Reply::Message(reply) = b
        .handle
        .command(Command::Send {
            conversation: conv,
            body: "and you on mine".into(),
            priority: Priority::Routine,
            reply_to: None,
            fields: Default::default(),
        })
        .await
        .expect("send")
    else {
        panic!("no message id")
    };
    // Stay until Ana's device confirms delivery of the reply.
    wait_until("ana's delivered receipt", || async {
        b.handle
            .query(move |n| {
                n.history(&conv, None).is_some_and(|h| {
                    h.iter()
                        .any(|m| m.id == reply && m.delivered_to.contains(&ana.member))
                })
            })
            .await
            .expect("query")
    })
    .await;
    println!("CHILD-OK");
    b.stop().await;
}
