//! A partition and a merge, step by step, with three nodes in one process
//! over 127.0.0.1 (no mDNS).
//!
//! ```text
//! cargo run --example partition_merge
//! ```
//!
//! Ana, Ben and Chloe share a group conversation. Chloe's device is cut off
//! (its node stops); while apart, Ana and Ben keep writing on their side and
//! Chloe keeps writing on her own device (straight into her store, as
//! `huddle send` does when no node runs). When Chloe's node comes back, the
//! catalog exchange finds the documents that differ and Automerge sync
//! merges them: every device ends with the same messages in the same order,
//! which the history digests prove. It exits by itself in a few seconds.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::bail;
use huddle::crypto::{AuthorityKey, DeviceKey};
use huddle::membership::{Certificate, CertificateRequest};
use huddle::net::{self, NodeHandle, ShellConfig, ShellError};
use huddle::store::{self, SledStore, Store};
use huddle::{
    Command, ConversationId, ConversationKind, MemberId, Node, NodeConfig, Output, Priority, Reply,
};
use rand_core::OsRng;
use tokio::task::JoinHandle;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_millis() as u64
}

struct Device {
    name: &'static str,
    dir: PathBuf,
    key: DeviceKey,
    cert: Certificate,
    node: Option<(NodeHandle, JoinHandle<Result<(), ShellError>>)>,
}

impl Device {
    fn handle(&self) -> &NodeHandle {
        &self.node.as_ref().expect("the node runs").0
    }
}

async fn start(
    d: &mut Device,
    peers: Vec<libp2p::Multiaddr>,
) -> anyhow::Result<Vec<libp2p::Multiaddr>> {
    let config = ShellConfig {
        key: d.key.clone(),
        certificate: Some(d.cert.clone()),
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse()?],
        peers,
        mdns: false,
        node: NodeConfig::default(),
    };
    let (h, task) = net::start(config, SledStore::open(&d.dir)?).await?;
    let mut addrs = h.listen_addrs().await?;
    while addrs.is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
        addrs = h.listen_addrs().await?;
    }
    d.node = Some((h, task));
    Ok(addrs)
}

async fn send(d: &Device, conv: ConversationId, body: &str) -> anyhow::Result<()> {
    d.handle()
        .command(Command::Send {
            conversation: conv,
            body: body.into(),
            priority: Priority::Routine,
            reply_to: None,
            fields: Default::default(),
        })
        .await?;
    println!("   {} writes: {body}", d.name);
    Ok(())
}

/// What `huddle send` does with no node running: load the node from the
/// store, run the command, and carry out only the storage effects.
fn write_offline(d: &Device, conv: ConversationId, body: &str) -> anyhow::Result<()> {
    let mut store = SledStore::open(&d.dir)?;
    let stored = store::load(&store)?;
    let mut node = Node::new(
        d.key.clone(),
        Some(d.cert.clone()),
        stored,
        NodeConfig::default(),
        &mut OsRng,
    )?;
    let (reply, outputs) = node.command(
        now_ms(),
        &mut OsRng,
        Command::Send {
            conversation: conv,
            body: body.into(),
            priority: Priority::Routine,
            reply_to: None,
            fields: Default::default(),
        },
    );
    reply?;
    for o in outputs {
        match o {
            Output::Persist(ops) => store.apply(&ops)?,
            Output::Flush => store.flush()?,
            _ => {} // no peers to send to: the next run catches up
        }
    }
    println!("   {} writes (cut off, stored locally): {body}", d.name);
    Ok(())
}

/// (message count, history digest) of `conv` on a running device.
async fn digest(d: &Device, conv: ConversationId) -> anyhow::Result<Option<(usize, String)>> {
    Ok(d.handle()
        .query(move |n| {
            n.conversation(&conv).map(|c| {
                (
                    c.len(),
                    data_encoding::HEXLOWER.encode(&c.history_digest()[..8]),
                )
            })
        })
        .await?)
}

/// Waits until every device holds `len` messages with one digest.
async fn converged(ward: &[Device], conv: ConversationId, len: usize) -> anyhow::Result<Duration> {
    let start = Instant::now();
    loop {
        let mut seen = Vec::new();
        for d in ward {
            seen.push(digest(d, conv).await?);
        }
        if seen
            .iter()
            .all(|s| s.as_ref().is_some_and(|(n, _)| *n == len))
            && seen.windows(2).all(|w| w[0] == w[1])
        {
            return Ok(start.elapsed());
        }
        if start.elapsed() > Duration::from_secs(15) {
            bail!("no convergence after 15 s: {seen:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn device(root: &Path, authority: &AuthorityKey, name: &'static str) -> anyhow::Result<Device> {
    let key = DeviceKey::generate(&mut OsRng);
    let cert = CertificateRequest {
        team_name: "St Mary Ward 7".into(),
        member: MemberId::random(&mut OsRng),
        display_name: name.into(),
        roles: vec!["nurse".into()],
        device: key.device_id(),
        issued: now_ms(),
        expires: now_ms() + 24 * 3600 * 1000,
    }
    .sign(authority)?;
    Ok(Device {
        name,
        dir: root.join(name.split(' ').next().unwrap_or(name)),
        key,
        cert,
        node: None,
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let authority = AuthorityKey::generate(&mut OsRng);
    let mut ward = vec![
        device(tmp.path(), &authority, "Ana Silva")?,
        device(tmp.path(), &authority, "Ben Okafor")?,
        device(tmp.path(), &authority, "Chloe Martin")?,
    ];

    println!("1. Three nodes on 127.0.0.1, each dialing the ones before it.");
    let mut addrs = Vec::new();
    for d in ward.iter_mut() {
        addrs.extend(start(d, addrs.clone()).await?);
    }
    for d in &ward {
        let deadline = Instant::now() + Duration::from_secs(10);
        while d
            .handle()
            .query(|n| n.peers().iter().filter(|p| p.verified).count())
            .await?
            < 2
        {
            if Instant::now() > deadline {
                bail!("{} did not connect to both others", d.name);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    println!("2. Ana opens the group \"Night shift\"; everyone writes once.");
    let members = ward.iter().map(|d| d.cert.member).collect();
    let Reply::Conversation(conv) = ward[0]
        .handle()
        .command(Command::CreateConversation {
            kind: ConversationKind::Group {
                title: "Night shift".into(),
                members,
            },
        })
        .await?
    else {
        bail!("expected a conversation id");
    };
    // The group reaches the others through sync; wait until they hold it.
    for d in &ward[1..] {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !d
            .handle()
            .query(move |n| n.conversation(&conv).is_some())
            .await?
        {
            if Instant::now() > deadline {
                bail!("the group did not reach {}", d.name);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    for (i, body) in [
        (0, "Bed 2 asleep."),
        (1, "Bed 6 needs a repeat lactate."),
        (2, "Bed 9 obs done."),
    ] {
        send(&ward[i], conv, body).await?;
    }
    converged(&ward, conv, 3).await?;

    println!("3. Partition: Chloe's device loses the network (its node stops).");
    let (h, task) = ward[2].node.take().expect("running");
    h.shutdown().await?;
    task.await??;
    println!("   While apart, both sides keep writing:");
    send(&ward[0], conv, "Bed 3 discharged.").await?;
    send(&ward[1], conv, "Bed 6 lactate 2.0, improving.").await?;
    write_offline(&ward[2], conv, "Bed 9 pain 6/10, paracetamol given.")?;
    write_offline(&ward[2], conv, "Bed 10 admitted from ED.")?;

    println!("4. The link returns: Chloe's node restarts and dials Ana and Ben.");
    let peers = addrs[..2].to_vec();
    start(&mut ward[2], peers).await?;
    let took = converged(&ward, conv, 7).await?;
    println!("   Merged in {} ms.", took.as_millis());

    println!("5. Proof: the same 7 messages in the same order on every device.");
    for d in &ward {
        if let Some((n, dg)) = digest(d, conv).await? {
            println!("   {:<13} {n} messages, history digest {dg}", d.name);
        }
    }
    let history = ward[0]
        .handle()
        .query(move |n| n.history(&conv, None))
        .await?
        .unwrap_or_default();
    for m in history {
        println!("   {:<13} {}", m.author_name.unwrap_or_default(), m.body);
    }

    for d in ward.iter_mut() {
        if let Some((h, task)) = d.node.take() {
            h.shutdown().await?;
            task.await??;
        }
    }
    Ok(())
}
