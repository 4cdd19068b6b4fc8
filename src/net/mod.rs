//! The network shell: runs the pure [`Node`] for real, over libp2p
//! (TCP + Noise + Yamux) with mdns-sd discovery and the sled store.
//!
//! [`start`] loads the store, builds the node, starts listening, discovery
//! and static dials, and spawns one task: the event loop. Everything else
//! talks to that loop through a [`NodeHandle`].
//!
//! Architecture invariants:
//! - one sequential loop owns the node, the swarm, the store and the mDNS
//!   daemon; nothing is shared mutably between tasks;
//! - every channel and queue is bounded, and says what happens when full;
//! - the node's outputs are carried out in order; a `Flush` is complete
//!   before anything after it is done, so a message is durable before any
//!   peer or subscriber hears of it, and before [`NodeHandle::command`]
//!   returns. Commands waiting in the request queue together share one
//!   flush (group commit), which delays what follows each `Flush` until that
//!   one flush is done and never reorders anything else.

mod addr_limits;
mod behaviour;
mod blob_codec;
mod blobs;
mod commit;
mod deadlines;
mod dialer;
mod discovery;
mod events;
/// The frame protocol's libp2p behaviour; public so that other Rust
/// peers (and the abuse tests) can open and accept frame streams.
pub mod frames;
mod links;
mod loglimit;
mod pace;
mod remember;
mod resources;
mod shell;
mod streams;

use std::sync::Arc;

use libp2p::Multiaddr;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::blobs::store::{BlobStore, Status as BlobStatus};
use crate::blobs::BlobHash;
use crate::crypto::DeviceKey;
use crate::ids::{ConversationId, DeviceId, MessageId};
use crate::membership::Certificate;
use crate::node::{CommandError, LoadError};
use crate::store::{SledStore, StoreError};
use crate::{Command, Event, Node, NodeConfig, Reply};

pub use behaviour::{limits, IDENTIFY_PROTOCOL};
pub use blobs::{BlobCodec, BlobStats};
pub use discovery::{SERVICE_TYPE, TXT_PEER, TXT_TEAM, TXT_VERSION};
pub use frames::SYNC_PROTOCOL;
pub use links::{MAX_QUEUED_BYTES, MAX_QUEUED_FRAMES};
pub use resources::Resources;
pub use shell::now_ms;

/// Requests from handles wait here; when it is full, callers wait (the
/// loop is never blocked by a caller).
const REQUEST_QUEUE: usize = 64;
/// Events kept for slow subscribers; a subscriber that lags further loses
/// the oldest ones (it sees `RecvError::Lagged`), the loop never waits.
const EVENT_QUEUE: usize = 1024;

/// Everything [`start`] needs.
pub struct ShellConfig {
    /// The device key; its Ed25519 secret is also the libp2p identity.
    pub key: DeviceKey,
    pub certificate: Option<Certificate>,
    /// Addresses to listen on, e.g. `/ip4/0.0.0.0/tcp/0`.
    pub listen: Vec<Multiaddr>,
    /// Static peers: dialled at start and re-dialled with exponential backoff
    /// (1 s to 60 s) whenever not connected.
    pub peers: Vec<Multiaddr>,
    /// Discovery with mDNS. When false no mDNS daemon is created at all.
    pub mdns: bool,
    pub node: NodeConfig,
}

/// Counters of the loop since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ShellStats {
    /// Commands run through the core.
    pub commands: u64,
    /// Store flushes (each makes everything persisted before it durable).
    pub flushes: u64,
    /// What peers make the shell hold right now.
    pub resources: Resources,
    /// Attachments fetched and served.
    pub blobs: BlobStats,
}

/// How a running node finds peers (for `peers` to say, when it has none).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reach {
    /// mDNS discovery is on.
    pub mdns: bool,
    /// The addresses it dials while not connected to them: `--peer`
    /// addresses and the remembered peers' (storage.md §2.2).
    pub dialling: Vec<Multiaddr>,
    /// Devices whose addresses it remembers (storage.md §2.2).
    pub remembered: usize,
}

/// How a connection came about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum FoundBy {
    Mdns,
    Static,
    Inbound,
    Dialed,
}

/// One open connection.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ConnectionInfo {
    pub device: DeviceId,
    /// The remote address of the connection.
    #[serde(serialize_with = "serialize_display")]
    pub addr: Multiaddr,
    pub found_by: FoundBy,
    /// When the connection was established (ms since the Unix epoch).
    pub since_ms: u64,
}

fn serialize_display<S: serde::Serializer>(a: &Multiaddr, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(a)
}

#[derive(Debug, thiserror::Error)]
pub enum ShellError {
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("the stored data cannot be loaded: {0}; restore the data directory from a backup or move it aside to start afresh")]
    Load(#[from] LoadError),
    #[error("the huddle node has stopped; start it again")]
    Stopped,
    #[error("network error: {0}")]
    Transport(String),
    #[error("cannot listen on {addr}: {why}; choose another address or port")]
    Listen { addr: Multiaddr, why: String },
    #[error("cannot dial {addr}: {why}")]
    Dial { addr: Multiaddr, why: String },
    #[error(
        "mDNS discovery could not start ({0}); start without discovery and give peers by address"
    )]
    Discovery(String),
}

type Query = Box<dyn FnOnce(&Node) + Send>;

/// What a handle asks the loop.
enum Request {
    Command(Command, oneshot::Sender<Result<Reply, CommandError>>),
    Query(Query),
    Stats(oneshot::Sender<ShellStats>),
    ListenAddrs(oneshot::Sender<Vec<Multiaddr>>),
    Reach(oneshot::Sender<Reach>),
    Connections(oneshot::Sender<Vec<ConnectionInfo>>),
    Dial(Multiaddr, oneshot::Sender<Result<(), ShellError>>),
    /// Fetch an attachment; the reply comes once it is held whole.
    Fetch(
        ConversationId,
        MessageId,
        BlobHash,
        oneshot::Sender<Result<BlobStatus, String>>,
    ),
    Shutdown(oneshot::Sender<Result<(), ShellError>>),
}

/// A cheap, cloneable handle on the running node.
#[derive(Clone)]
pub struct NodeHandle {
    requests: mpsc::Sender<Request>,
    events: broadcast::Sender<Event>,
    blobs: Arc<BlobStore>,
}

impl NodeHandle {
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Request,
    ) -> Result<T, ShellError> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send(make(tx))
            .await
            .map_err(|_| ShellError::Stopped)?;
        rx.await.map_err(|_| ShellError::Stopped)
    }

    /// Runs a command. Resolves once its outputs were carried out, flush
    /// included: a sent message is durable when this returns.
    pub async fn command(&self, cmd: Command) -> Result<Reply, ShellError> {
        Ok(self.ask(|tx| Request::Command(cmd, tx)).await??)
    }

    /// Runs `f` on the node inside the loop and returns its result.
    pub async fn query<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Node) -> R + Send + 'static,
    ) -> Result<R, ShellError> {
        self.ask(|tx| {
            Request::Query(Box::new(move |n: &Node| {
                // The asker may have gone away; then nobody wants the answer.
                let _ = tx.send(f(n));
            }))
        })
        .await
    }

    /// The loop's counters (commands run, store flushes) and what peers
    /// make it hold now.
    pub async fn stats(&self) -> Result<ShellStats, ShellError> {
        self.ask(Request::Stats).await
    }

    /// The node's events from now on. A subscriber more than
    /// 1024 events behind loses the oldest (`RecvError::Lagged`).
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// The addresses actually bound, each ending in `/p2p/<peer id>`.
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, ShellError> {
        self.ask(Request::ListenAddrs).await
    }

    /// How this node finds peers: mDNS, and what it dials.
    pub async fn reach(&self) -> Result<Reach, ShellError> {
        self.ask(Request::Reach).await
    }

    pub async fn connections(&self) -> Result<Vec<ConnectionInfo>, ShellError> {
        self.ask(Request::Connections).await
    }

    /// Starts dialling `addr` (it may end in `/p2p/<peer id>`). Returns once
    /// the dial has started; the connection shows in [`Self::connections`].
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), ShellError> {
        self.ask(|tx| Request::Dial(addr, tx)).await?
    }

    /// The attachments' files (read and written by the API directly).
    pub fn blobs(&self) -> &Arc<BlobStore> {
        &self.blobs
    }

    /// Fetches attachment `hash` of `message` from the devices that may
    /// hold it; resolves once it is held here whole (at once if it is),
    /// or with why it cannot be.
    pub async fn fetch(
        &self,
        conversation: ConversationId,
        message: MessageId,
        hash: BlobHash,
    ) -> Result<Result<BlobStatus, String>, ShellError> {
        self.ask(|tx| Request::Fetch(conversation, message, hash, tx))
            .await
    }

    /// Announces departure on mDNS, flushes the store and stops the loop;
    /// the task returned by [`start`] then completes.
    pub async fn shutdown(&self) -> Result<(), ShellError> {
        self.ask(Request::Shutdown).await?
    }
}

/// Loads the node from `store` and starts the shell. Returns once the
/// listeners are bound (bind errors are returned here).
pub async fn start(
    config: ShellConfig,
    store: SledStore,
) -> Result<(NodeHandle, JoinHandle<Result<(), ShellError>>), ShellError> {
    let (req_tx, req_rx) = mpsc::channel(REQUEST_QUEUE);
    let (ev_tx, _) = broadcast::channel(EVENT_QUEUE);
    let blobs = store.blobs().clone();
    let shell = shell::Shell::new(config, store, req_rx, ev_tx.clone()).await?;
    let task = tokio::spawn(shell.run());
    Ok((
        NodeHandle {
            requests: req_tx,
            events: ev_tx,
            blobs,
        },
        task,
    ))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::crypto::AuthorityKey;
    use crate::membership::CertificateRequest;
    use crate::{ConversationId, ConversationKind, MemberId, Priority};

    const DAY: u64 = 24 * 3600 * 1000;

    struct Me {
        key: DeviceKey,
        member: MemberId,
        cert: Certificate,
    }

    fn me() -> Me {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let authority = AuthorityKey::generate(&mut rng);
        let key = DeviceKey::generate(&mut rng);
        let member = MemberId::random(&mut rng);
        let now = shell::now_ms();
        let cert = CertificateRequest {
            team_name: "Ward 7".into(),
            member,
            display_name: "solo".into(),
            roles: Default::default(),
            device: key.device_id(),
            issued: now - DAY,
            expires: now + DAY,
        }
        .sign(&authority)
        .expect("valid certificate fields");
        Me { key, member, cert }
    }

    async fn start_in(me: &Me, dir: &Path) -> (NodeHandle, JoinHandle<Result<(), ShellError>>) {
        let config = ShellConfig {
            key: me.key.clone(),
            certificate: Some(me.cert.clone()),
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr")],
            peers: Vec::new(),
            mdns: false,
            node: NodeConfig::default(),
        };
        start(config, SledStore::open(dir).expect("open store"))
            .await
            .expect("start")
    }

    fn send(conversation: ConversationId, i: usize) -> Command {
        Command::Send {
            conversation,
            body: format!("obs {i} stable"),
            priority: Priority::Routine,
            reply_to: None,
            fields: Default::default(),
        }
    }

    async fn len(h: &NodeHandle, c: ConversationId) -> usize {
        h.query(move |n| n.conversation(&c).map_or(0, |c| c.len()))
            .await
            .expect("query")
    }

    /// Commands queued together are group-committed: far fewer flushes than
    /// commands, a request queued behind them is served only after their
    /// flush, every caller gets its reply and every message its `Sent`, and
    /// all of them are in the store when it is opened again.
    #[tokio::test]
    async fn queued_commands_share_a_flush() {
        const K: usize = 16;
        let me = me();
        let dir = tempfile::tempdir().expect("tempdir");
        let (h, task) = start_in(&me, dir.path()).await;
        let conv = match h
            .command(Command::CreateConversation {
                kind: ConversationKind::Group {
                    title: "batch".into(),
                    members: BTreeSet::from([me.member]),
                },
            })
            .await
            .expect("create")
        {
            Reply::Conversation(c) => c,
            r => panic!("unexpected reply {r:?}"),
        };
        let mut events = h.subscribe();
        let before = h.stats().await.expect("stats");

        // All of these are queued before the loop runs again (this test's
        // runtime has one thread): K sends, a stats request, K more sends.
        let first = futures::future::join_all((0..K).map(|i| h.command(send(conv, i))));
        let middle = h.stats();
        let second = futures::future::join_all((K..2 * K).map(|i| h.command(send(conv, i))));
        let (first, middle, second) = futures::join!(first, middle, second);
        let after = h.stats().await.expect("stats");

        let mut ids = BTreeSet::new();
        for r in first.into_iter().chain(second) {
            match r.expect("send") {
                Reply::Message(m) => assert!(ids.insert(m), "a duplicate id"),
                r => panic!("unexpected reply {r:?}"),
            }
        }
        assert_eq!(ids.len(), 2 * K);
        let middle = middle.expect("stats");
        assert_eq!(middle.commands - before.commands, K as u64);
        assert!(
            middle.flushes > before.flushes,
            "the request behind the first sends was served before their flush"
        );
        assert_eq!(after.commands - before.commands, 2 * K as u64);
        let flushes = after.flushes - before.flushes;
        assert!(
            flushes <= 4,
            "{flushes} flushes for {} queued commands",
            2 * K
        );

        // Every reply above was sent after its message's flush; every
        // message's `Sent` was emitted too, once.
        let mut sent = BTreeSet::new();
        while sent.len() < ids.len() {
            match tokio::time::timeout(std::time::Duration::from_secs(30), events.recv()).await {
                Ok(Ok(crate::Event::Sent { message, .. })) => {
                    assert!(ids.contains(&message), "Sent for an unknown message");
                    assert!(sent.insert(message), "Sent twice");
                }
                Ok(Ok(_)) => {}
                other => panic!("waiting for Sent events: {other:?}"),
            }
        }
        assert_eq!(len(&h, conv).await, 2 * K);
        h.shutdown().await.expect("shutdown");
        task.await.expect("join").expect("loop");

        let (h, task) = start_in(&me, dir.path()).await;
        assert_eq!(len(&h, conv).await, 2 * K);
        h.shutdown().await.expect("shutdown");
        task.await.expect("join").expect("loop");
    }
}
