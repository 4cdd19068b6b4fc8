//! Helpers shared by the `net_*` tests (included with `#[path]`): a team
//! authority, certificates, in-process nodes on loopback with temporary
//! sled stores, and waiting for a condition with a deadline.
//!
//! Every node here uses `mdns: false` and listens on 127.0.0.1 only; the
//! one test that uses mDNS does so inside network namespaces it creates.
#![cfg(feature = "net")]
#![allow(dead_code)]

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use huddle::crypto::{AuthorityKey, DeviceKey};
use huddle::membership::{Certificate, CertificateRequest};
use huddle::net::{NodeHandle, ShellConfig, ShellError};
use huddle::store::SledStore;
use huddle::{ConversationId, MemberId, NodeConfig};
use libp2p::Multiaddr;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tokio::task::JoinHandle;

/// A plain libp2p client (TCP + Noise + Yamux, a fresh Ed25519 key unless
/// given one) with the behaviour `make` builds, for the tests that play a
/// foreign or hostile peer.
pub fn client_swarm<B: libp2p::swarm::NetworkBehaviour>(
    key: Option<libp2p::identity::Keypair>,
    make: impl FnOnce(&libp2p::identity::Keypair) -> B,
) -> libp2p::Swarm<B> {
    let key = key.unwrap_or_else(libp2p::identity::Keypair::generate_ed25519);
    libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            libp2p::tcp::Config::default(),
            libp2p::noise::Config::new,
            libp2p::yamux::Config::default,
        )
        .expect("tcp")
        .with_behaviour(make)
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build()
}

pub const DAY: u64 = 24 * 3600 * 1000;
/// How long any condition in these tests may take to become true.
pub const DEADLINE: Duration = Duration::from_secs(30);

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

/// Shows the nodes' logs when RUST_LOG is set (e.g. `RUST_LOG=huddle=debug`).
pub fn init_logs() {
    #[cfg(feature = "cli")]
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

pub fn loopback() -> Multiaddr {
    "/ip4/127.0.0.1/tcp/0".parse().expect("valid multiaddr")
}

/// A device and, if it has one, its certificate.
pub struct Identity {
    pub key: DeviceKey,
    pub member: MemberId,
    pub cert: Option<Certificate>,
}

pub struct Team {
    pub authority: AuthorityKey,
}

impl Team {
    pub fn new(seed: u64) -> Team {
        Team {
            authority: AuthorityKey::generate(&mut rng(seed)),
        }
    }

    /// A member with one device whose certificate is valid from a day ago
    /// to `expires`.
    pub fn member_until(&self, seed: u64, name: &str, roles: &[&str], expires: u64) -> Identity {
        let mut r = rng(seed);
        let key = DeviceKey::generate(&mut r);
        let member = MemberId::random(&mut r);
        let cert = CertificateRequest {
            team_name: "St Mary Ward 7".into(),
            member,
            display_name: name.into(),
            roles: roles.iter().map(|s| s.to_string()).collect(),
            device: key.device_id(),
            issued: now_ms() - 2 * DAY,
            expires,
        }
        .sign(&self.authority)
        .expect("valid certificate fields");
        Identity {
            key,
            member,
            cert: Some(cert),
        }
    }

    pub fn member(&self, seed: u64, name: &str, roles: &[&str]) -> Identity {
        self.member_until(seed, name, roles, now_ms() + 365 * DAY)
    }
}

/// A device that has joined no team.
pub fn loner(seed: u64) -> Identity {
    let mut r = rng(seed);
    Identity {
        key: DeviceKey::generate(&mut r),
        member: MemberId::random(&mut r),
        cert: None,
    }
}

pub struct TestNode {
    pub handle: NodeHandle,
    pub task: JoinHandle<Result<(), ShellError>>,
    pub addr: Multiaddr,
}

/// Starts a node on loopback with its store in `dir`, dialling `peers`.
pub async fn start_node(id: &Identity, dir: &Path, peers: Vec<Multiaddr>) -> TestNode {
    init_logs();
    let store = SledStore::open(dir).expect("open store");
    let config = ShellConfig {
        key: id.key.clone(),
        certificate: id.cert.clone(),
        listen: vec![loopback()],
        peers,
        mdns: false,
        node: NodeConfig::default(),
    };
    let (handle, task) = huddle::net::start(config, store).await.expect("start node");
    let addr = handle
        .listen_addrs()
        .await
        .expect("listen addrs")
        .into_iter()
        .next()
        .expect("one listen address");
    TestNode { handle, task, addr }
}

impl TestNode {
    pub async fn stop(self) {
        self.handle.shutdown().await.expect("shutdown");
        self.task.await.expect("loop task").expect("loop result");
    }

    /// The number of peers that have proved membership to this node.
    pub async fn verified_peers(&self) -> usize {
        self.handle
            .query(|n| n.peers().iter().filter(|p| p.verified).count())
            .await
            .expect("query")
    }

    /// The bodies of a conversation's history, in display order.
    pub async fn bodies(&self, id: ConversationId) -> Option<Vec<String>> {
        self.handle
            .query(move |n| {
                n.history(&id, None)
                    .map(|h| h.into_iter().map(|m| m.body).collect())
            })
            .await
            .expect("query")
    }

    pub async fn has(&self, id: ConversationId) -> bool {
        self.handle
            .query(move |n| n.conversation(&id).is_some())
            .await
            .expect("query")
    }
}

/// Polls `check` until it holds, failing the test after [`DEADLINE`].
pub async fn wait_until<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_within(what, DEADLINE, check).await
}

/// Polls `check` until it holds, failing the test after `within` (a bound
/// a test may assert, tighter than [`DEADLINE`]).
pub async fn wait_within<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {within:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A direct conversation made by `a`.
pub async fn direct(a: &TestNode, members: [huddle::MemberId; 2]) -> huddle::ConversationId {
    match a
        .handle
        .command(huddle::Command::CreateConversation {
            kind: huddle::ConversationKind::Direct { members },
        })
        .await
        .expect("create")
    {
        huddle::Reply::Conversation(id) => id,
        other => panic!("unexpected reply {other:?}"),
    }
}

/// Sends one message from `from` and waits until `to` announces it.
pub async fn deliver(
    from: &TestNode,
    to: &TestNode,
    conv: huddle::ConversationId,
    body: String,
) -> Duration {
    let mut events = to.handle.subscribe();
    let started = tokio::time::Instant::now();
    let huddle::Reply::Message(id) = from
        .handle
        .command(huddle::Command::Send {
            conversation: conv,
            body,
            priority: huddle::Priority::Routine,
            reply_to: None,
            fields: Default::default(),
        })
        .await
        .expect("send")
    else {
        panic!("send did not return a message id")
    };
    tokio::time::timeout(DEADLINE, async {
        loop {
            match events.recv().await {
                Ok(huddle::Event::MessageAdded { message, .. }) if message == id => return,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("event stream ended: {e}"),
            }
        }
    })
    .await
    .expect("the message arrived despite the abuse");
    started.elapsed()
}

/// An HTTP answer, read whole.
pub struct Answer {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl Answer {
    /// The first header named `name` (any case).
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// One HTTP/1.1 request on its own connection, written by hand so that it
/// can be as wrong as a careless or hostile client makes it (`Host` is the
/// API's own unless `headers` names one).
pub async fn http(
    api: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Answer {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut req = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {api}\r\n"));
    }
    req.push_str(&format!(
        "Connection: close\r\nContent-Length: {}\r\n",
        body.len()
    ));
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(&body);
    let answer = tokio::time::timeout(DEADLINE, async move {
        let stream = tokio::net::TcpStream::connect(api).await.expect("connect");
        let (mut r, mut w) = stream.into_split();
        // Written alongside the read: the server may answer (413) before it
        // has read all of it. The write half stays open until the answer is
        // in, since a half-closed request may be dropped unanswered.
        let writer = tokio::spawn(async move {
            let _ = w.write_all(&bytes).await;
            w
        });
        let mut out = Vec::new();
        let _ = r.read_to_end(&mut out).await;
        drop(writer.await);
        out
    })
    .await
    .expect("the API answered in time");
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete head");
    let head = String::from_utf8_lossy(&answer[..split]).into_owned();
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    Answer {
        status,
        head,
        body: answer[split + 4..].to_vec(),
    }
}
