//! The loop's handling of swarm events (connections coming and going, frame
//! streams opening) and of the stream tasks' reports (frames read, streams
//! ended).
//!
//! Invariants:
//! - the core hears `PeerConnected` on a peer's first established
//!   connection and `PeerDisconnected` when its last one closes; a peer whose
//!   key is not Ed25519 is never announced to the core and is closed at once;
//! - a peer's frames reach the core in the order they were read from its one
//!   stream, and only while the session they were read in lasts (`epoch`);
//! - the frames already waiting when the loop turns to them are
//!   group-committed like queued commands (`commit.rs`): one flush, and
//!   nothing after a `Flush` is carried out before it;
//! - anything that could lose or reorder a frame of a live session — a
//!   stream that fails or ends, a framing violation, a second stream, the
//!   close of a connection that carries a stream while another stays open —
//!   closes every connection to that peer: the sync protocol needs a
//!   reliable ordered stream and restarts cleanly on the next connection.

use libp2p::core::ConnectedPoint;
use libp2p::swarm::{ConnectionId, ListenError, SwarmEvent};
use libp2p::{ping, PeerId};
use tokio::time::Instant;

use super::addr_limits::ip_of;
use super::behaviour::BehaviourEvent;
use super::commit::Batch;
use super::deadlines::Deadline;
use super::frames;
use super::links::{self, ConnMeta, Link, Writer};
use super::shell::{now_ms, Shell};
use super::streams::{self, Ended, StreamMsg};
use super::{ConnectionInfo, FoundBy, ShellError};
use crate::ids::DeviceId;
use crate::Input;

/// Most stream reports taken off their queue for one group commit.
const MAX_FRAME_BATCH: usize = 64;

impl Shell {
    pub(super) fn on_swarm(&mut self, ev: SwarmEvent<BehaviourEvent>) -> Result<(), ShellError> {
        match ev {
            SwarmEvent::Behaviour(BehaviourEvent::Frames(e)) => self.on_frames(e),
            SwarmEvent::Behaviour(BehaviourEvent::Blobs(e)) => self.on_blob_event(e),
            SwarmEvent::Behaviour(BehaviourEvent::Ping(ping::Event {
                peer,
                connection,
                result,
            })) => match result {
                Ok(rtt) => tracing::trace!(%peer, ?rtt, "ping"),
                Err(ping::Failure::Unsupported) => {}
                Err(e) => {
                    if let Some(held_back) = self.may_log(self.peer_addr(&peer)) {
                        tracing::warn!(%peer, held_back, "ping failed ({e}); closing the connection");
                    }
                    self.swarm.close_connection(connection);
                }
            },
            SwarmEvent::Behaviour(BehaviourEvent::Identify(
                libp2p::identify::Event::Received { peer_id, info, .. },
            )) => {
                tracing::debug!(peer = %peer_id, agent = %info.agent_version, "identified");
                if let Some(link) = self.links.get_mut(&peer_id) {
                    link.heard = info.listen_addrs;
                    link.heard.truncate(links::HEARD_ADDRS);
                    self.remember(peer_id);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Limits(e)) => match e {},
            SwarmEvent::Behaviour(BehaviourEvent::Addrs(e)) => match e {},
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => self.on_established(peer_id, connection_id, endpoint)?,
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                cause,
                ..
            } => {
                tracing::debug!(peer = %peer_id, ?cause, "connection closed");
                self.on_closed(peer_id, connection_id)?;
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id,
                error,
            } => {
                self.dials.remove(&connection_id);
                tracing::debug!(?peer_id, "dial failed: {error}");
                self.static_dial_failed(connection_id);
            }
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                ..
            } => match error {
                ListenError::Denied { cause } => {
                    if let Some(held_back) = self.may_log(ip_of(&send_back_addr)) {
                        tracing::warn!(from = %send_back_addr, held_back, "incoming connection denied: {cause}")
                    }
                }
                e => tracing::debug!(from = %send_back_addr, "incoming connection failed: {e}"),
            },
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
                if !self.listen_addrs.contains(&address) {
                    self.listen_addrs.push(address);
                }
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.listen_addrs.retain(|a| *a != address);
            }
            SwarmEvent::ListenerClosed {
                addresses, reason, ..
            } => {
                tracing::warn!(?addresses, ?reason, "a listener closed");
                self.listen_addrs.retain(|a| !addresses.contains(a));
            }
            SwarmEvent::ListenerError { error, .. } => {
                tracing::warn!("listener error: {error}");
            }
            _ => {}
        }
        Ok(())
    }

    fn on_established(
        &mut self,
        peer: PeerId,
        conn: ConnectionId,
        endpoint: ConnectedPoint,
    ) -> Result<(), ShellError> {
        let found_by = self.dials.remove(&conn).unwrap_or(if endpoint.is_dialer() {
            FoundBy::Dialed
        } else {
            FoundBy::Inbound
        });
        for s in &mut self.statics {
            if s.pending == Some(conn) {
                s.pending = None;
                s.peer = Some(peer);
            }
        }
        let Some(device) = DeviceId::from_peer_id_bytes(&peer.to_bytes()) else {
            let addr = match &endpoint {
                ConnectedPoint::Dialer { address, .. } => ip_of(address),
                ConnectedPoint::Listener { send_back_addr, .. } => ip_of(send_back_addr),
            };
            if let Some(held_back) = self.may_log(addr) {
                tracing::warn!(%peer, held_back, "peer does not use an Ed25519 key; closing the connection");
            }
            self.swarm.close_connection(conn);
            return Ok(());
        };
        let dialled = endpoint.is_dialer();
        let addr = match endpoint {
            ConnectedPoint::Dialer { address, .. } => address,
            ConnectedPoint::Listener { send_back_addr, .. } => send_back_addr,
        };
        tracing::debug!(peer = %device.short(), %addr, ?found_by, "connection established");
        let first = !self.links.contains_key(&peer);
        if first {
            // A new session: our frame stream goes on its first connection.
            self.next_epoch += 1;
            self.links
                .insert(peer, Link::new(device, self.next_epoch, conn));
            self.swarm.behaviour_mut().frames.open(peer, conn);
        }
        let link = self.links.get_mut(&peer).expect("inserted above");
        link.conns.insert(
            conn,
            ConnMeta {
                addr,
                dialled,
                found_by,
                since_ms: now_ms(),
                opened: Instant::now(),
            },
        );
        if link.closing {
            self.swarm.close_connection(conn);
        } else if first {
            self.input(Input::PeerConnected { peer: device })?;
        }
        Ok(())
    }

    fn on_closed(&mut self, peer: PeerId, conn: ConnectionId) -> Result<(), ShellError> {
        self.dials.remove(&conn);
        let Some(link) = self.links.get_mut(&peer) else {
            return Ok(());
        };
        let Some(meta) = link.conns.remove(&conn) else {
            return Ok(());
        };
        if !link.conns.is_empty() {
            if link.writer_conn() == Some(conn) || link.reader == Some(conn) {
                // Frames on it may be lost; the session cannot go on.
                if !link.closing {
                    tracing::debug!(peer = %link.device.short(), "a connection carrying a frame stream closed; closing the others");
                }
                self.cut(peer);
            }
            return Ok(());
        }
        let device = link.device;
        self.links.remove(&peer);
        self.deadlines.cancel(Deadline::Close(device));
        let lived = meta.opened.elapsed();
        let now = Instant::now();
        for (i, s) in self.statics.iter_mut().enumerate() {
            if s.peer == Some(peer) && s.pending.is_none() {
                s.connection_ended(lived);
                self.deadlines
                    .set(Deadline::Redial(i), now + s.next_delay());
            }
        }
        self.input(Input::PeerDisconnected { peer: device })
    }

    fn on_frames(&mut self, ev: frames::Event) {
        match ev {
            frames::Event::Stream {
                peer,
                connection,
                stream,
                inbound,
            } => {
                let Some(link) = self
                    .links
                    .get_mut(&peer)
                    .filter(|l| l.conns.contains_key(&connection))
                else {
                    return; // dropping it resets it
                };
                let (device, epoch) = (link.device, link.epoch);
                if inbound {
                    if link.closing {
                        return; // nothing it carries would be read
                    }
                    if link.reader.is_some() {
                        if let Some(held_back) = self.may_log(self.peer_addr(&peer)) {
                            tracing::warn!(peer = %device.short(), held_back, "peer opened a second frame stream; closing the peer's connections");
                        }
                        self.cut(peer);
                        return;
                    }
                    link.reader = Some(connection);
                    streams::spawn_reader(
                        &mut link.tasks,
                        stream,
                        peer,
                        epoch,
                        self.to_loop.clone(),
                        self.counters.clone(),
                    );
                } else if matches!(link.writer, Writer::Opening(c) if c == connection) {
                    // Even when closing: what is queued (a `Refuse`, say)
                    // is written before the connections close.
                    let tx = streams::spawn_writer(
                        &mut link.tasks,
                        stream,
                        link.queue.clone(),
                        peer,
                        epoch,
                        self.to_loop.clone(),
                        self.counters.clone(),
                    );
                    link.opened(connection, tx);
                }
            }
            frames::Event::OpenFailed {
                peer,
                connection,
                unsupported,
                why,
            } => {
                let Some(link) = self.links.get_mut(&peer) else {
                    return;
                };
                if link.writer_conn() != Some(connection) {
                    return;
                }
                if unsupported {
                    // A plain libp2p peer (it may still ping and identify
                    // us): it cannot take frames, so it never proves
                    // membership, and the core refuses it when its hello
                    // time is up. Nothing of ours was delivered.
                    let (device, closing) = (link.device, link.closing);
                    link.declined();
                    if let Some(held_back) = self.may_log(self.peer_addr(&peer)) {
                        tracing::info!(peer = %device.short(), held_back, "peer does not speak {}; waiting for its hello time to end", crate::wire::PROTOCOL_ID);
                    }
                    if closing {
                        self.cut(peer);
                    }
                } else {
                    let device = link.device;
                    if let Some(held_back) = self.may_log(self.peer_addr(&peer)) {
                        tracing::warn!(peer = %device.short(), held_back, "opening the frame stream failed ({why}); closing the peer's connections");
                    }
                    self.cut(peer);
                }
            }
            frames::Event::TooManyStreams { peer, .. } => {
                if let Some(link) = self.links.get(&peer) {
                    let device = link.device;
                    if let Some(held_back) = self.may_log(self.peer_addr(&peer)) {
                        tracing::warn!(peer = %device.short(), held_back, "peer opened too many frame streams; closing the peer's connections");
                    }
                    self.cut(peer);
                }
            }
        }
    }

    /// Serves `first` and the reports already queued behind it (at most
    /// [`MAX_FRAME_BATCH`] in all, without waiting for more): the frames'
    /// core steps are group-committed, sharing one store flush.
    pub(super) fn on_streams(&mut self, first: StreamMsg) -> Result<(), ShellError> {
        let mut batch = Batch::default();
        let mut next = Some(first);
        let mut taken = 1;
        while let Some(msg) = next.take() {
            self.on_stream(&mut batch, msg)?;
            if taken < MAX_FRAME_BATCH {
                next = self.from_streams.try_recv().ok();
                taken += 1;
            }
        }
        batch.commit(self)
    }

    fn on_stream(&mut self, batch: &mut Batch, msg: StreamMsg) -> Result<(), ShellError> {
        let (peer, epoch) = match &msg {
            StreamMsg::Frame { peer, epoch, .. }
            | StreamMsg::Ended { peer, epoch, .. }
            | StreamMsg::Drained { peer, epoch } => (*peer, *epoch),
        };
        let Some(link) = self.links.get(&peer).filter(|l| l.epoch == epoch) else {
            return Ok(()); // a report from a session that has ended
        };
        let device = link.device;
        match msg {
            StreamMsg::Frame { frame, .. } => {
                if link.closing {
                    return Ok(());
                }
                tracing::trace!(peer = %device.short(), len = frame.len(), tag = frame.first().copied().unwrap_or(0), "frame received");
                let outputs = self.node.handle(
                    now_ms(),
                    Input::Frame {
                        peer: device,
                        bytes: frame,
                    },
                );
                batch.stage(self, outputs)?;
            }
            StreamMsg::Ended { why, .. } => {
                if !link.closing {
                    match why {
                        Ended::Violation(why) => {
                            if let Some(held_back) = self.may_log(self.peer_addr(&peer)) {
                                tracing::warn!(peer = %device.short(), held_back, "invalid frame stream ({why}); closing the peer's connections")
                            }
                        }
                        Ended::Closed => {
                            tracing::debug!(peer = %device.short(), "the peer closed its frame stream; closing its connections")
                        }
                        Ended::Failed(why) => {
                            tracing::debug!(peer = %device.short(), "a frame stream failed ({why}); closing the peer's connections")
                        }
                    }
                }
                self.cut(peer);
            }
            StreamMsg::Drained { .. } => self.cut(peer),
        }
        Ok(())
    }

    /// Every connection of every session, by device and age.
    pub(super) fn connections(&self) -> Vec<ConnectionInfo> {
        let mut out: Vec<ConnectionInfo> = self
            .links
            .values()
            .flat_map(|l| {
                l.conns.values().map(|c| ConnectionInfo {
                    device: l.device,
                    addr: c.addr.clone(),
                    found_by: c.found_by,
                    since_ms: c.since_ms,
                })
            })
            .collect();
        out.sort_by(|a, b| a.device.cmp(&b.device).then(a.since_ms.cmp(&b.since_ms)));
        out
    }
}
