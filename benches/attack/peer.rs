//! A raw libp2p peer of the node (TCP + Noise + Yamux, and huddle's own
//! frame behaviour, nothing else): the attackers' side of one connection,
//! free to write any bytes on its `/huddle/sync/2` stream.
//!
//! Invariant: a [`Conn`]'s tasks (its swarm, the reader of the node's
//! stream) are aborted when it is dropped, and what the reader keeps is
//! bounded (frames at most `MAX_FRAME_LEN`, a queue of [`QUEUE`] frames).

use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use huddle::net::frames;
use huddle::wire::{Frame, Reason, MAX_FRAME_LEN};
use huddle::DeviceId;
use libp2p::identity::Keypair;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Stream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

/// Frames of the node's held for the attacker before its reader waits.
const QUEUE: usize = 64;

/// The device id the node sees for a libp2p key.
pub(crate) fn device_of(key: &Keypair) -> DeviceId {
    let peer = PeerId::from(key.public());
    DeviceId::from_peer_id_bytes(&peer.to_bytes()).expect("an Ed25519 key")
}

/// One connection to the node, with our frame stream open.
pub(crate) struct Conn {
    /// Our stream: every frame we send goes here (transport.md §4).
    pub(crate) out: Stream,
    /// The node's frames, from its stream to us, decoded.
    pub(crate) frames: mpsc::Receiver<Frame>,
    /// Becomes true once the node closed the connection.
    pub(crate) closed: watch::Receiver<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Dials `to` with `key` and waits, at most `within`, until our frame
/// stream is open.
pub(crate) async fn connect(to: Multiaddr, key: Keypair, within: Duration) -> Result<Conn, String> {
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            libp2p::tcp::Config::default(),
            libp2p::noise::Config::new,
            libp2p::yamux::Config::default,
        )
        .map_err(|e| format!("tcp: {e}"))?
        .with_behaviour(|_| frames::Behaviour::default())
        .map_err(|e| format!("behaviour: {e}"))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
        .build();
    swarm
        .dial(DialOpts::unknown_peer_id().address(to).build())
        .map_err(|e| format!("dial: {e}"))?;
    let (out_tx, out_rx) = oneshot::channel::<Result<Stream, String>>();
    let (frame_tx, frames) = mpsc::channel(QUEUE);
    let (closed_tx, closed) = watch::channel(false);
    let task = tokio::spawn(async move {
        let mut out_tx = Some(out_tx);
        let mut frame_tx = Some(frame_tx);
        let mut readers = Vec::new();
        loop {
            match swarm.select_next_some().await {
                SwarmEvent::ConnectionEstablished {
                    peer_id,
                    connection_id,
                    ..
                } => swarm.behaviour_mut().open(peer_id, connection_id),
                SwarmEvent::Behaviour(frames::Event::Stream {
                    stream,
                    inbound: false,
                    ..
                }) => {
                    if let Some(t) = out_tx.take() {
                        let _ = t.send(Ok(stream));
                    }
                }
                SwarmEvent::Behaviour(frames::Event::Stream {
                    stream,
                    inbound: true,
                    ..
                }) => {
                    if let Some(tx) = frame_tx.take() {
                        readers.push(tokio::spawn(read_frames(stream, tx)));
                    }
                }
                SwarmEvent::Behaviour(frames::Event::OpenFailed { why, .. }) => {
                    if let Some(t) = out_tx.take() {
                        let _ = t.send(Err(format!("stream: {why}")));
                    }
                }
                SwarmEvent::OutgoingConnectionError { error, .. } => {
                    if let Some(t) = out_tx.take() {
                        let _ = t.send(Err(format!("dial: {error}")));
                    }
                    let _ = closed_tx.send(true);
                    break;
                }
                SwarmEvent::ConnectionClosed {
                    num_established: 0, ..
                } => {
                    if let Some(t) = out_tx.take() {
                        let _ = t.send(Err("closed before the stream opened".into()));
                    }
                    let _ = closed_tx.send(true);
                    break;
                }
                _ => {}
            }
        }
        // The readers end with the connection; let them hand over what
        // they read before it closed.
        for r in readers {
            let _ = tokio::time::timeout(Duration::from_secs(5), r).await;
        }
    });
    let out = match tokio::time::timeout(within, out_rx).await {
        Ok(Ok(Ok(s))) => s,
        Ok(Ok(Err(e))) => {
            task.abort();
            return Err(e);
        }
        Ok(Err(_)) => {
            task.abort();
            return Err("the connection task ended".into());
        }
        Err(_) => {
            task.abort();
            return Err(format!("no frame stream within {within:?}"));
        }
    };
    Ok(Conn {
        out,
        frames,
        closed,
        tasks: vec![task],
    })
}

/// Reads the node's frames (bounded, as a node would) until its stream ends.
async fn read_frames(mut s: Stream, tx: mpsc::Sender<Frame>) {
    loop {
        let mut prefix = [0u8; 4];
        if s.read_exact(&mut prefix).await.is_err() {
            return;
        }
        let len = u32::from_be_bytes(prefix) as usize;
        if len > MAX_FRAME_LEN {
            return;
        }
        let mut body = vec![0u8; len];
        if s.read_exact(&mut body).await.is_err() {
            return;
        }
        let Ok(frame) = Frame::decode(&body) else {
            return;
        };
        if tx.send(frame).await.is_err() {
            return;
        }
    }
}

impl Conn {
    /// Writes raw bytes on our stream.
    pub(crate) async fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.out
            .write_all(bytes)
            .await
            .map_err(|e| format!("write: {e}"))?;
        self.out.flush().await.map_err(|e| format!("flush: {e}"))
    }

    /// Writes one frame, length-prefixed.
    pub(crate) async fn send(&mut self, frame: &Frame) -> Result<(), String> {
        let body = frame.encode();
        let mut bytes = (body.len() as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(&body);
        self.write(&bytes).await
    }

    /// The node's next frame, if one comes within `within`.
    pub(crate) async fn recv(&mut self, within: Duration) -> Option<Frame> {
        tokio::time::timeout(within, self.frames.recv())
            .await
            .ok()
            .flatten()
    }

    /// Waits, at most `within`, until the node has closed the connection;
    /// the reason it gave, if it sent a `Refuse` before closing.
    pub(crate) async fn cut(&mut self, within: Duration) -> Result<Option<Reason>, String> {
        let mut closed = self.closed.clone();
        tokio::time::timeout(within, closed.wait_for(|c| *c))
            .await
            .map_err(|_| format!("the node did not close the connection within {within:?}"))?
            .map_err(|_| "the connection task ended".to_owned())?;
        let mut reason = None;
        while let Some(f) = self.recv(Duration::from_secs(5)).await {
            if let Frame::Refuse { reason: r } = f {
                reason = Some(r);
            }
        }
        Ok(reason)
    }
}
