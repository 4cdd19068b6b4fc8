//! Two huddle nodes chatting in one process, over real libp2p connections on
//! 127.0.0.1 (no mDNS).
//!
//! ```text
//! cargo run --example two_nodes
//! ```
//!
//! It walks through what `huddle init`, `huddle team create/admit/join` and
//! `huddle run` do, with the library: a team authority signs a certificate
//! for each device, each device runs a node on its own sled store, the nodes
//! prove their membership to each other, and a message and its
//! acknowledgement travel between them. It exits by itself in a second or two.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use huddle::crypto::{AuthorityKey, DeviceKey};
use huddle::membership::{Certificate, CertificateRequest};
use huddle::net::{self, NodeHandle, ShellConfig};
use huddle::store::SledStore;
use huddle::{Command, ConversationKind, MemberId, Node, NodeConfig, Priority, Reply};
use rand_core::OsRng;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_millis() as u64
}

/// A device key and the certificate the team authority signs for it
/// (what `huddle team admit` + `huddle team join` produce).
fn admit(
    authority: &AuthorityKey,
    name: &str,
    roles: &[&str],
) -> anyhow::Result<(DeviceKey, Certificate)> {
    let key = DeviceKey::generate(&mut OsRng);
    let cert = CertificateRequest {
        team_name: "St Mary Ward 7".into(),
        member: MemberId::random(&mut OsRng),
        display_name: name.into(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        device: key.device_id(),
        issued: now_ms(),
        expires: now_ms() + 30 * 24 * 3600 * 1000,
    }
    .sign(authority)?;
    Ok((key, cert))
}

/// Starts a node on its own store, listening on loopback only.
async fn start(
    dir: &Path,
    key: DeviceKey,
    cert: Certificate,
    peers: Vec<libp2p::Multiaddr>,
) -> anyhow::Result<(
    NodeHandle,
    tokio::task::JoinHandle<Result<(), net::ShellError>>,
)> {
    let store = SledStore::open(dir)?;
    let config = ShellConfig {
        key,
        certificate: Some(cert),
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse()?],
        peers,
        // Never mDNS in examples: they must not announce on the machine's network.
        mdns: false,
        node: NodeConfig::default(),
    };
    Ok(net::start(config, store).await?)
}

/// Polls `check` on a node until it holds, for at most ten seconds.
async fn wait_for(h: &NodeHandle, what: &str, check: fn(&Node) -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !h.query(check).await? {
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;

    // The team: its authority key's public half is the team id.
    let authority = AuthorityKey::generate(&mut OsRng);
    let (ana_key, ana_cert) = admit(&authority, "Ana Silva", &["nurse"])?;
    let (ben_key, ben_cert) = admit(&authority, "Ben Okafor", &["physician"])?;
    let (ana_member, ben_member) = (ana_cert.member, ben_cert.member);

    // Ana's node first; Ben's node dials Ana's address (what `--peer` does).
    let (ana, ana_task) = start(&tmp.path().join("ana"), ana_key, ana_cert, vec![]).await?;
    let mut ana_addrs = ana.listen_addrs().await?;
    while ana_addrs.is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
        ana_addrs = ana.listen_addrs().await?;
    }
    println!("Ana listens on {}", ana_addrs[0]);
    let (ben, ben_task) = start(&tmp.path().join("ben"), ben_key, ben_cert, ana_addrs).await?;

    // Each node checks the other's certificate before sharing anything.
    let connected = |n: &Node| n.peers().iter().any(|p| p.verified);
    wait_for(&ana, "Ben to connect", connected).await?;
    wait_for(&ben, "Ana to connect", connected).await?;
    println!("Connected; both certificates verified.");

    // Ana opens the 1:1 conversation and sends an urgent message. When
    // `command` returns, the message is flushed to Ana's store.
    let Reply::Conversation(conv) = ana
        .command(Command::CreateConversation {
            kind: ConversationKind::Direct {
                members: [ana_member, ben_member],
            },
        })
        .await?
    else {
        bail!("expected a conversation id");
    };
    let Reply::Message(msg) = ana
        .command(Command::Send {
            conversation: conv,
            body: "Bed 4: BP 80/40, please come now.".into(),
            priority: Priority::Urgent,
            reply_to: None,
            fields: Default::default(),
        })
        .await?
    else {
        bail!("expected a message id");
    };
    println!("Ana sent an urgent message ({msg}).");

    // Ben's node receives it through Automerge sync, and acknowledges it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while ben
        .query(move |n| n.history(&conv, None).map_or(0, |h| h.len()))
        .await?
        == 0
    {
        if Instant::now() > deadline {
            bail!("the message did not reach Ben");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    ben.command(Command::Ack {
        conversation: conv,
        message: msg,
    })
    .await?;

    // The acknowledgement travels back: Ana's rendered history says who acked.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let history = ana
            .query(move |n| n.history(&conv, None))
            .await?
            .context("Ana holds the conversation")?;
        let m = &history[0];
        if !m.acked_by.is_empty() {
            println!(
                "On Ana's device: \"{}\" by {}, acknowledged by {}.",
                m.body,
                m.author_name.as_deref().unwrap_or("?"),
                if m.acked_by == [ben_member] {
                    "Ben Okafor"
                } else {
                    "someone else"
                }
            );
            break;
        }
        if Instant::now() > deadline {
            bail!("the acknowledgement did not reach Ana");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // A clean stop: each node announces its departure and flushes its store.
    ben.shutdown().await?;
    ana.shutdown().await?;
    ben_task.await??;
    ana_task.await??;
    println!("Both nodes stopped cleanly.");
    Ok(())
}
