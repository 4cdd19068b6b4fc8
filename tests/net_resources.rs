//! What strangers can make a node hold, measured with the node's own
//! counters (`GET /v1/status`'s `resources`): strangers that stall inside
//! a frame hold only what they sent, and nothing once their session ends;
//! silent sockets from one address do not keep a member out (issue 18,
//! holes 3 and 6; transport.md §4, §6–§8).
#![cfg(feature = "net")]

#[path = "net_common.rs"]
mod common;

use std::time::Duration;

use common::*;
use futures::{AsyncWriteExt, StreamExt};
use huddle::wire::MAX_FRAME_LEN;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::SwarmEvent;
use libp2p::Multiaddr;

/// Starts a node like `start_node`, with its own core settings.
async fn start_node_with(
    id: &Identity,
    dir: &std::path::Path,
    node: huddle::NodeConfig,
) -> TestNode {
    init_logs();
    let store = huddle::store::SledStore::open(dir).expect("open store");
    let config = huddle::net::ShellConfig {
        key: id.key.clone(),
        certificate: id.cert.clone(),
        listen: vec![loopback()],
        peers: Vec::new(),
        mdns: false,
        node,
    };
    let (handle, task) = huddle::net::start(config, store).await.expect("start node");
    let addr = handle.listen_addrs().await.expect("addrs").remove(0);
    TestNode { handle, task, addr }
}

async fn resources(n: &TestNode) -> huddle::net::Resources {
    n.handle.stats().await.expect("stats").resources
}

/// A stranger (valid Noise, no certificate) that opens a frame stream,
/// sends a prefix claiming the largest frame and `sent` bytes of it, and
/// then stalls, holding its connection and streams until `stop`. Says
/// when its connection is established.
fn stalling_stranger(
    to: Multiaddr,
    sent: usize,
    stop: tokio::sync::oneshot::Receiver<()>,
    established: tokio::sync::oneshot::Sender<()>,
) -> tokio::task::JoinHandle<()> {
    use huddle::net::frames;
    tokio::spawn(async move {
        let mut swarm = client_swarm(None, |_| frames::Behaviour::default());
        let target = DialOpts::unknown_peer_id().address(to).build();
        swarm.dial(target).expect("dial");
        let mut held = Vec::new();
        let mut stop = stop;
        let mut established = Some(established);
        loop {
            let ev = tokio::select! {
                ev = swarm.select_next_some() => ev,
                _ = &mut stop => return,
            };
            match ev {
                SwarmEvent::ConnectionEstablished {
                    peer_id,
                    connection_id,
                    ..
                } => {
                    swarm.behaviour_mut().open(peer_id, connection_id);
                    if let Some(tx) = established.take() {
                        let _ = tx.send(());
                    }
                }
                SwarmEvent::Behaviour(frames::Event::Stream {
                    mut stream,
                    inbound: false,
                    ..
                }) => {
                    let mut bytes = (MAX_FRAME_LEN as u32).to_be_bytes().to_vec();
                    bytes.resize(4 + sent, 0x55);
                    // Written from a task of its own: the swarm must go on
                    // being polled while Yamux carries it.
                    held.push(tokio::spawn(async move {
                        let _ = stream.write_all(&bytes).await;
                        let _ = stream.flush().await;
                        std::future::pending::<()>().await;
                        drop(stream);
                    }));
                }
                SwarmEvent::Behaviour(frames::Event::Stream { stream, .. }) => {
                    held.push(tokio::spawn(async move {
                        std::future::pending::<()>().await;
                        drop(stream);
                    }))
                }
                SwarmEvent::OutgoingConnectionError { error, .. } => panic!("dial failed: {error}"),
                _ => {}
            }
        }
    })
}

/// Hole 3 (issue 18): strangers each claim a 1 MiB frame, send part of it
/// and stall. While they are connected the node holds about what they
/// sent (not what they claimed); once their hello time is up and they are
/// refused, it holds no task and no buffer for them, though their side of
/// every stream is still open and Yamux wakes no reader.
#[tokio::test]
async fn stalling_strangers_hold_what_they_sent_and_nothing_after_their_session() {
    const STRANGERS: usize = 6;
    const SENT: usize = 200 * 1024;
    let team = Team::new(80);
    let ana = team.member(81, "Ana", &[]);
    let da = tempfile::tempdir().unwrap();
    let hello = Duration::from_secs(6);
    let node = huddle::NodeConfig {
        hello_timeout_ms: hello.as_millis() as u64,
        ..Default::default()
    };
    let a = start_node_with(&ana, da.path(), node).await;
    let started = tokio::time::Instant::now();
    let mut stops = Vec::new();
    let mut strangers = Vec::new();
    for _ in 0..STRANGERS {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (up_tx, up_rx) = tokio::sync::oneshot::channel();
        stops.push(tx);
        strangers.push(stalling_stranger(a.addr.clone(), SENT, rx, up_tx));
        // One at a time: they share an address, which may have only a few
        // handshakes under way at once.
        up_rx.await.expect("the stranger connected");
    }

    wait_within("the strangers' bytes to arrive", hello, || async {
        let r = resources(&a).await;
        r.reader_tasks == STRANGERS && r.frame_buffer_bytes >= STRANGERS * SENT
    })
    .await;
    let r = resources(&a).await;
    assert!(
        started.elapsed() < hello,
        "the strangers were refused before they were measured"
    );
    // One read's room beyond what arrived, per stream; not the 1 MiB claimed.
    let bound = STRANGERS * (SENT + 64 * 1024);
    assert!(
        r.frame_buffer_bytes <= bound,
        "{} bytes held for {} sent ({bound} allowed)",
        r.frame_buffer_bytes,
        STRANGERS * SENT
    );
    assert_eq!(r.sessions, STRANGERS);

    // Refused at their hello time, well before any frame deadline (30 s)
    // could end their readers instead.
    wait_within(
        "no task or buffer left for the strangers",
        hello + Duration::from_secs(8),
        || async {
            let r = resources(&a).await;
            (
                r.sessions,
                r.reader_tasks,
                r.writer_tasks,
                r.frame_buffer_bytes,
            ) == (0, 0, 0, 0)
        },
    )
    .await;
    for s in stops {
        let _ = s.send(());
    }
    for s in strangers {
        s.await.expect("stranger task");
    }
    a.stop().await;
}

/// Keeps `count` TCP sockets from 127.0.0.2 open to `port` that never send
/// a byte, opening a new one whenever the node closes one (the attack of
/// hole 6). Reports once the first round is open.
fn silent_sockets(
    port: u16,
    count: usize,
    stop: tokio::sync::watch::Receiver<bool>,
) -> (
    tokio::task::JoinHandle<()>,
    tokio::sync::oneshot::Receiver<usize>,
) {
    let (opened_tx, opened_rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let open = |stop: tokio::sync::watch::Receiver<bool>| async move {
            let mut stop = stop;
            loop {
                let socket = tokio::net::TcpSocket::new_v4().expect("socket");
                socket
                    .bind("127.0.0.2:0".parse().expect("addr"))
                    .expect("bind 127.0.0.2");
                if let Ok(mut s) = socket.connect(([127, 0, 0, 1], port).into()).await {
                    use tokio::io::AsyncReadExt as _;
                    let mut sink = [0u8; 64];
                    // Until the node closes it, or the test ends.
                    tokio::select! {
                        _ = async { while s.read(&mut sink).await.is_ok_and(|n| n > 0) {} } => {}
                        _ = stop.changed() => return,
                    }
                }
                // Pace the attacker so that it does not take the test's CPU.
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(20)) => {}
                    _ = stop.changed() => return,
                }
            }
        };
        let tasks: Vec<_> = (0..count)
            .map(|_| tokio::spawn(open(stop.clone())))
            .collect();
        let _ = opened_tx.send(count);
        for t in tasks {
            let _ = t.await;
        }
    });
    (task, opened_rx)
}

/// Hole 6 (issue 18): more silent sockets than the old pending limit (16),
/// reopened as soon as they close, come from one address; a member device
/// from another address still connects and proves membership in seconds,
/// and the node's refusals of the flood are logged at a bounded rate.
#[tokio::test]
async fn silent_sockets_from_one_address_do_not_keep_a_member_out() {
    const SOCKETS: usize = 32;
    let team = Team::new(90);
    let ana = team.member(91, "Ana", &[]);
    let ben = team.member(92, "Ben", &[]);
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = start_node(&ana, da.path(), vec![]).await;
    let port = a
        .addr
        .iter()
        .find_map(|p| match p {
            libp2p::multiaddr::Protocol::Tcp(port) => Some(port),
            _ => None,
        })
        .expect("tcp port");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let (attacker, opened) = silent_sockets(port, SOCKETS, stopped);
    opened.await.expect("attacker started");
    wait_until("the silent sockets to hold handshake slots", || async {
        resources(&a).await.pending_incoming >= huddle::net::limits::PENDING_PER_ADDRESS as usize
    })
    .await;

    let started = tokio::time::Instant::now();
    let b = start_node(&ben, db.path(), vec![a.addr.clone()]).await;
    let within = Duration::from_secs(5);
    wait_within("ben to connect and prove membership", within, || async {
        a.verified_peers().await == 1 && b.verified_peers().await == 1
    })
    .await;
    eprintln!("member verified {:?} into the flood", started.elapsed());
    let conv = direct(&a, [ana.member, ben.member]).await;
    let took = deliver(&a, &b, conv, "through the flood".into()).await;
    assert!(took < within, "delivery took {took:?}");

    let r = resources(&a).await;
    assert!(
        r.pending_incoming <= huddle::net::limits::PENDING_PER_ADDRESS as usize + 1,
        "{} connections pending",
        r.pending_incoming
    );
    assert!(r.suppressed_log_lines > 0, "no refusal line was held back");
    let _ = stop.send(true);
    attacker.await.expect("attacker task");
    a.stop().await;
    b.stop().await;
}
