//! A hostile client against a node, over real connections: garbage frames,
//! a frame whose length prefix exceeds the limit, and a flood of connection
//! attempts (libp2p dials and bare TCP sockets that never handshake). Each
//! abuse gets the client cut off, and all the while two honest nodes keep
//! exchanging messages within a deadline. Also: a peer that opens a second
//! frame stream in one session is cut off (transport.md §4, §6). What
//! strangers can make a node hold is in `net_resources.rs`.
#![cfg(feature = "net")]

#[path = "net_common.rs"]
mod common;

use std::io;
use std::time::Duration;

use common::*;
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
use huddle::wire::{Reason, MAX_FRAME_LEN};
use huddle::{DeviceId, Event};
use libp2p::request_response::{self as rr, ProtocolSupport};
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::SwarmEvent;
use libp2p::{identity, Multiaddr, PeerId, StreamProtocol, Swarm};
use tokio::net::TcpStream;

/// Bytes go out exactly as given: the test writes its own (lying) prefixes.
#[derive(Clone, Copy, Default)]
struct RawCodec;

impl rr::Codec for RawCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = ();

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut buf = Vec::new();
        io.take(2 * MAX_FRAME_LEN as u64)
            .read_to_end(&mut buf)
            .await?;
        Ok(buf)
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<()>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut buf = Vec::new();
        io.take(16).read_to_end(&mut buf).await?;
        Ok(())
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        b: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&b).await?;
        io.flush().await
    }

    async fn write_response<T>(&mut self, _: &StreamProtocol, io: &mut T, (): ()) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&[0, 0, 0, 0]).await?;
        io.flush().await
    }
}

fn raw_swarm(key: identity::Keypair) -> Swarm<rr::Behaviour<RawCodec>> {
    client_swarm(Some(key), |_| {
        rr::Behaviour::with_codec(
            RawCodec,
            [(
                StreamProtocol::new(huddle::wire::PROTOCOL_ID),
                ProtocolSupport::Full,
            )],
            rr::Config::default(),
        )
    })
}

/// How soon the node must cut off a client that broke the protocol: well
/// under the 10 s hello timeout, so the cut is the abuse's doing.
const CUT_WITHIN: Duration = Duration::from_secs(5);

/// Connects, sends `bytes` as one request on the frame protocol, and waits
/// until the node has closed every connection to us.
async fn send_and_expect_cut(
    swarm: &mut Swarm<rr::Behaviour<RawCodec>>,
    to: &Multiaddr,
    bytes: Vec<u8>,
) {
    let target = DialOpts::unknown_peer_id().address(to.clone()).build();
    swarm.dial(target).expect("dial");
    let cut = tokio::time::timeout(CUT_WITHIN, async {
        let mut open = 0u32;
        let mut sent = false;
        loop {
            match swarm.select_next_some().await {
                SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                    open += 1;
                    if !sent {
                        sent = true;
                        swarm.behaviour_mut().send_request(&peer_id, bytes.clone());
                    }
                }
                SwarmEvent::ConnectionClosed { .. } => {
                    open = open.saturating_sub(1);
                    if sent && open == 0 {
                        return;
                    }
                }
                SwarmEvent::Behaviour(rr::Event::Message {
                    message: rr::Message::Request { channel, .. },
                    ..
                }) => {
                    // Acknowledge the node's hello like a peer would.
                    let _ = swarm.behaviour_mut().send_response(channel, ());
                }
                SwarmEvent::OutgoingConnectionError { error, .. } => panic!("dial failed: {error}"),
                _ => {}
            }
        }
    })
    .await;
    assert!(
        cut.is_ok(),
        "the node did not cut off the abusive client within {CUT_WITHIN:?}"
    );
}

fn framed(body: &[u8]) -> Vec<u8> {
    let mut f = (body.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(body);
    f
}

#[tokio::test]
async fn a_hostile_client_is_cut_off_while_honest_peers_keep_talking() {
    init_logs();
    let team = Team::new(60);
    let ana = team.member(61, "Ana", &[]);
    let ben = team.member(62, "Ben", &[]);
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = start_node(&ana, da.path(), vec![]).await;
    let b = start_node(&ben, db.path(), vec![a.addr.clone()]).await;
    wait_until("a and b to verify each other", || async {
        a.verified_peers().await == 1 && b.verified_peers().await == 1
    })
    .await;
    let conv = direct(&a, [ana.member, ben.member]).await;

    let abuser_key = identity::Keypair::generate_ed25519();
    let abuser_id = PeerId::from(abuser_key.public());
    let abuser_device = DeviceId::from_peer_id_bytes(&abuser_id.to_bytes()).expect("ed25519");
    // Watches for the node's refusal of the garbage frame.
    let mut a_events = a.handle.subscribe();
    let refused = tokio::spawn(async move {
        loop {
            match a_events.recv().await {
                Ok(Event::PeerRefused { peer, reason, .. }) if peer == abuser_device => {
                    return reason;
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("event stream ended: {e}"),
            }
        }
    });

    // The abuser runs in its own task while the honest nodes talk.
    let target = a.addr.clone();
    let abuser = tokio::spawn(async move {
        let mut swarm = raw_swarm(abuser_key);

        // 1. A frame that is not a huddle frame.
        send_and_expect_cut(&mut swarm, &target, framed(&[0xEE; 64])).await;
        // 2. A length prefix beyond the limit (the body never comes).
        let mut huge = ((MAX_FRAME_LEN + 1) as u32).to_be_bytes().to_vec();
        huge.extend_from_slice(&[0u8; 1024]);
        send_and_expect_cut(&mut swarm, &target, huge).await;

        // 3. A flood: 200 libp2p dials at once, then 200 bare TCP sockets
        //    that send junk and never complete a handshake.
        for _ in 0..200 {
            let opts = DialOpts::unknown_peer_id().address(target.clone()).build();
            let _ = swarm.dial(opts);
        }
        let mut sockets = Vec::new();
        let tcp_port = target.iter().find_map(|p| match p {
            libp2p::multiaddr::Protocol::Tcp(port) => Some(port),
            _ => None,
        });
        for _ in 0..200 {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", tcp_port.expect("tcp port"))).await
            {
                use tokio::io::AsyncWriteExt as _;
                let _ = s.write_all(b"\x13/not/a/protocol\n").await;
                sockets.push(s);
            }
        }
        // Drive the dials until every one of them has been resolved.
        let mut resolved = 0;
        let drained = tokio::time::timeout(DEADLINE, async {
            while resolved < 200 {
                match swarm.select_next_some().await {
                    SwarmEvent::ConnectionEstablished { .. }
                    | SwarmEvent::OutgoingConnectionError { .. } => resolved += 1,
                    SwarmEvent::Behaviour(rr::Event::Message {
                        message: rr::Message::Request { channel, .. },
                        ..
                    }) => {
                        let _ = swarm.behaviour_mut().send_response(channel, ());
                    }
                    _ => {}
                }
            }
        })
        .await;
        assert!(drained.is_ok(), "only {resolved} of 200 dials resolved");
        sockets.len()
    });

    // Meanwhile, both ways, one message after another.
    let mut slowest = Duration::ZERO;
    for i in 0..10 {
        slowest = slowest.max(deliver(&a, &b, conv, format!("a{i}")).await);
        slowest = slowest.max(deliver(&b, &a, conv, format!("b{i}")).await);
    }
    let sockets = abuser.await.expect("abuser task");
    eprintln!("{sockets} bare TCP sockets were opened");
    // The node holds no more connections to the abuser than its limit.
    let to_abuser = a
        .handle
        .connections()
        .await
        .expect("connections")
        .iter()
        .filter(|c| c.device == abuser_device)
        .count();
    assert!(to_abuser <= huddle::net::limits::ESTABLISHED_PER_PEER as usize);
    // And once more after the flood.
    slowest = slowest.max(deliver(&a, &b, conv, "after".into()).await);
    eprintln!("slowest delivery during the abuse: {slowest:?}");
    assert!(
        slowest < Duration::from_secs(10),
        "honest delivery took {slowest:?}"
    );
    // The garbage frame was refused for what it was.
    let reason = tokio::time::timeout(DEADLINE, refused)
        .await
        .expect("a refusal of the abuser")
        .expect("watcher task");
    assert_eq!(reason, Reason::Malformed);
    assert_eq!(a.bodies(conv).await.map(|h| h.len()), Some(21));
    assert_eq!(a.bodies(conv).await, b.bodies(conv).await);
    a.stop().await;
    b.stop().await;
}

/// Connects a client that speaks the frame protocol's streams (huddle's own
/// behaviour), opens `streams` of them on its connection and holds every
/// stream open. Returns whether the node closed the connection within
/// `window`.
async fn cut_with_streams(to: &Multiaddr, streams: usize, window: Duration) -> bool {
    use huddle::net::frames;

    let mut swarm = client_swarm(None, |_| frames::Behaviour::default());
    let target = DialOpts::unknown_peer_id().address(to.clone()).build();
    swarm.dial(target).expect("dial");
    let mut held = Vec::new();
    tokio::time::timeout(window, async {
        loop {
            match swarm.select_next_some().await {
                SwarmEvent::ConnectionEstablished {
                    peer_id,
                    connection_id,
                    ..
                } => {
                    for _ in 0..streams {
                        swarm.behaviour_mut().open(peer_id, connection_id);
                    }
                }
                SwarmEvent::Behaviour(frames::Event::Stream { stream, .. }) => held.push(stream),
                SwarmEvent::ConnectionClosed {
                    num_established: 0, ..
                } => return,
                SwarmEvent::OutgoingConnectionError { error, .. } => panic!("dial failed: {error}"),
                _ => {}
            }
        }
    })
    .await
    .is_ok()
}

/// Two frame streams in one session leave the order of their frames
/// undefined, so the node cuts the peer off, long before its hello timeout
/// (10 s) would; the same client with one stream is not cut in that time.
#[tokio::test]
async fn a_second_frame_stream_gets_the_peer_cut_off() {
    let team = Team::new(70);
    let ana = team.member(71, "Ana", &[]);
    let da = tempfile::tempdir().unwrap();
    let a = start_node(&ana, da.path(), vec![]).await;
    assert!(
        cut_with_streams(&a.addr, 2, CUT_WITHIN).await,
        "the node did not cut off a peer with two frame streams within {CUT_WITHIN:?}"
    );
    assert!(
        !cut_with_streams(&a.addr, 1, Duration::from_secs(2)).await,
        "a peer with one frame stream was cut off before its hello timeout"
    );
    a.stop().await;
}
