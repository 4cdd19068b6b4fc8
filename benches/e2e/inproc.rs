//! In-process nodes: a `huddle` shell per node on its own runtime, with
//! the arrivals and sends the latency workload times.

use super::*;

pub(crate) type Arrivals = Arc<Mutex<Vec<(MessageId, Instant)>>>;
/// Per message: the author's index, when `send` was called, when it returned.
pub(crate) type Sent = Arc<Mutex<HashMap<MessageId, (usize, Instant, Instant)>>>;

/// A full shell on its own thread and current-thread runtime (as `huddle run`).
pub(crate) struct InProc {
    pub(crate) handle: NodeHandle,
    pub(crate) addr: Multiaddr,
    pub(crate) thread: Option<std::thread::JoinHandle<()>>,
    /// Remote messages as the node's own runtime saw their `MessageAdded`.
    pub(crate) arrivals: Arrivals,
    pub(crate) lagged: Arc<AtomicU64>,
}

pub(crate) async fn start_inproc(id: &Ident, dir: &Path, peers: Vec<Multiaddr>) -> InProc {
    start_inproc_with(id, dir, peers, None).await
}

/// [`start_inproc`] on an encrypted store when given the data key's keys.
pub(crate) async fn start_inproc_with(
    id: &Ident,
    dir: &Path,
    peers: Vec<Multiaddr>,
    seal: Option<Arc<huddle::atrest::Keys>>,
) -> InProc {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let key = id.key.clone();
    let cert = id.cert.clone();
    let dir = dir.to_owned();
    let arrivals: Arrivals = Arc::default();
    let lagged = Arc::new(AtomicU64::new(0));
    let (arr, lag) = (arrivals.clone(), lagged.clone());
    let thread = std::thread::Builder::new()
        .name("node".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let store = match seal {
                    Some(keys) => SledStore::open_sealed(&dir, keys),
                    None => SledStore::open(&dir),
                }
                .expect("open store");
                let config = ShellConfig {
                    key,
                    certificate: Some(cert),
                    listen: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr")],
                    peers,
                    mdns: false,
                    node: NodeConfig::default(),
                };
                let (handle, task) = huddle::net::start(config, store).await.expect("start");
                let mut events = handle.subscribe();
                tokio::spawn(async move {
                    use tokio::sync::broadcast::error::RecvError;
                    loop {
                        match events.recv().await {
                            Ok(Event::MessageAdded {
                                message,
                                local: false,
                                ..
                            }) => arr.lock().expect("lock").push((message, Instant::now())),
                            Ok(_) => {}
                            Err(RecvError::Lagged(n)) => {
                                lag.fetch_add(n, Ordering::Relaxed);
                            }
                            Err(RecvError::Closed) => return,
                        }
                    }
                });
                let _ = tx.send(handle);
                let _ = task.await;
            });
        })
        .expect("spawn node thread");
    let handle = tokio::time::timeout(DEADLINE, rx)
        .await
        .expect("node start in time")
        .expect("node started");
    let addr = handle
        .listen_addrs()
        .await
        .expect("listen addrs")
        .into_iter()
        .next()
        .expect("a listen address");
    InProc {
        handle,
        addr,
        thread: Some(thread),
        arrivals,
        lagged,
    }
}

impl InProc {
    pub(crate) async fn stop(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(10), self.handle.shutdown()).await;
        if let Some(t) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }

    pub(crate) async fn verified_peers(&self) -> usize {
        self.handle
            .query(|n| n.peers().iter().filter(|p| p.verified).count())
            .await
            .unwrap_or(0)
    }

    pub(crate) async fn total_messages(&self) -> usize {
        self.handle
            .query(|n| {
                n.conversation_ids()
                    .filter_map(|c| n.conversation(c))
                    .map(|c| c.len())
                    .sum()
            })
            .await
            .unwrap_or(0)
    }

    pub(crate) async fn conversations(&self) -> usize {
        self.handle
            .query(|n| n.conversation_ids().count())
            .await
            .unwrap_or(0)
    }

    pub(crate) async fn command(&self, cmd: Command) -> Reply {
        self.handle.command(cmd).await.expect("command")
    }
}

pub(crate) async fn wait_for<F, Fut>(what: &str, limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            eprintln!("warning: gave up after {limit:?} waiting for {what}");
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `n` nodes, full mesh: node i dials every node before it.
pub(crate) async fn mesh(
    team: &Team,
    n: usize,
    root: &Path,
    seed: u64,
) -> (Vec<InProc>, Vec<Ident>) {
    let ids: Vec<Ident> = (0..n)
        .map(|i| team.member(seed + i as u64, &format!("n{i}")))
        .collect();
    let mut nodes: Vec<InProc> = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let peers = nodes.iter().map(|p| p.addr.clone()).collect();
        nodes.push(start_inproc(id, &root.join(format!("n{i}")), peers).await);
    }
    for node in &nodes {
        wait_for("the mesh", DEADLINE, || async {
            node.verified_peers().await == n - 1
        })
        .await;
    }
    (nodes, ids)
}

pub(crate) async fn create_group(
    node: &InProc,
    title: &str,
    members: &[MemberId],
) -> ConversationId {
    match node
        .command(Command::CreateConversation {
            kind: ConversationKind::Group {
                title: title.into(),
                members: members.iter().copied().collect::<BTreeSet<_>>(),
            },
        })
        .await
    {
        Reply::Conversation(c) => c,
        r => panic!("unexpected {r:?}"),
    }
}
