//! The loop's handling of swarm events: connections coming and going, and
//! frames arriving or failing on the frame protocol.
//!
//! Invariants:
//! - the core hears `PeerConnected` on a peer's first established
//!   connection and `PeerDisconnected` when its last one closes; a peer whose
//!   key is not Ed25519 is never announced to the core and is closed at once;
//! - a frame is acknowledged only after the core has taken it, which (with
//!   one frame in flight per direction) keeps each peer's frames in order;
//! - any failed frame exchange on a live connection closes every connection
//!   to that peer: the sync protocol needs a reliable ordered stream and
//!   restarts cleanly on the next connection.

use libp2p::core::ConnectedPoint;
use libp2p::swarm::{ConnectionId, ListenError, SwarmEvent};
use libp2p::{ping, request_response as rr, PeerId};
use tokio::time::Instant;

use super::behaviour::BehaviourEvent;
use super::codec::SyncRequest;
use super::deadlines::Deadline;
use super::links::{ConnMeta, Link};
use super::shell::{now_ms, Shell};
use super::{FoundBy, ShellError};
use crate::ids::DeviceId;
use crate::Input;

impl Shell {
    pub(super) fn on_swarm(&mut self, ev: SwarmEvent<BehaviourEvent>) -> Result<(), ShellError> {
        match ev {
            SwarmEvent::Behaviour(BehaviourEvent::Sync(e)) => self.on_sync(e)?,
            SwarmEvent::Behaviour(BehaviourEvent::Ping(ping::Event {
                peer,
                connection,
                result,
            })) => match result {
                Ok(rtt) => tracing::trace!(%peer, ?rtt, "ping"),
                Err(ping::Failure::Unsupported) => {}
                Err(e) => {
                    tracing::warn!(%peer, "ping failed ({e}); closing the connection");
                    self.swarm.close_connection(connection);
                }
            },
            SwarmEvent::Behaviour(BehaviourEvent::Identify(
                libp2p::identify::Event::Received { peer_id, info, .. },
            )) => {
                tracing::debug!(peer = %peer_id, agent = %info.agent_version, "identified");
            }
            SwarmEvent::Behaviour(BehaviourEvent::Limits(e)) => match e {},
            SwarmEvent::Behaviour(BehaviourEvent::KeepAlive(e)) => match e {},
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
                    tracing::warn!(from = %send_back_addr, "incoming connection denied: {cause}")
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
            tracing::warn!(%peer, "peer does not use an Ed25519 key; closing the connection");
            self.swarm.close_connection(conn);
            return Ok(());
        };
        let addr = match endpoint {
            ConnectedPoint::Dialer { address, .. } => address,
            ConnectedPoint::Listener { send_back_addr, .. } => send_back_addr,
        };
        tracing::debug!(peer = %device.short(), %addr, ?found_by, "connection established");
        let first = !self.links.contains_key(&peer);
        let link = self.links.entry(peer).or_insert_with(|| Link::new(device));
        link.conns.insert(
            conn,
            ConnMeta {
                addr,
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

    fn on_sync(&mut self, ev: rr::Event<SyncRequest, ()>) -> Result<(), ShellError> {
        match ev {
            rr::Event::Message {
                peer,
                message:
                    rr::Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                let Some(device) = self.links.get(&peer).map(|l| l.device) else {
                    return Ok(());
                };
                let request = match request {
                    SyncRequest::Frame(f) => f,
                    SyncRequest::Invalid(why) => {
                        tracing::warn!(peer = %device.short(), "invalid frame ({why}); closing the peer's connections");
                        self.cut(peer);
                        return Ok(());
                    }
                };
                tracing::debug!(peer = %device.short(), len = request.len(), tag = request.first().copied().unwrap_or(0), "frame received");
                let outputs = self.node.handle(
                    now_ms(),
                    Input::Frame {
                        peer: device,
                        bytes: request,
                    },
                );
                // Acknowledge only once the core has taken the frame: the
                // peer sends its next frame after this ack, so each peer's
                // frames reach the core in order. Acking before carrying
                // out the outputs lets the ack leave ahead of a disconnect
                // they may contain.
                if self
                    .swarm
                    .behaviour_mut()
                    .sync
                    .send_response(channel, ())
                    .is_err()
                {
                    tracing::debug!(peer = %device.short(), "the frame's stream closed before our ack");
                }
                self.carry_out(outputs)?;
            }
            rr::Event::Message {
                peer,
                message: rr::Message::Response { request_id, .. },
                ..
            } => {
                if self
                    .links
                    .get_mut(&peer)
                    .is_some_and(|l| l.acked(request_id))
                {
                    self.pump(peer);
                }
            }
            rr::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                let current = self.links.get(&peer).map(|l| (l.in_flight(), l.device));
                if let Some((Some(id), device)) = current {
                    if id != request_id {
                        return Ok(());
                    }
                    if matches!(error, rr::OutboundFailure::UnsupportedProtocols) {
                        // A plain libp2p peer (it may still ping and identify
                        // us): it cannot take frames, so it never proves
                        // membership, and the core refuses it when its hello
                        // time is up. Nothing of ours was delivered.
                        tracing::info!(peer = %device.short(), "peer does not speak {}; waiting for its hello time to end", crate::wire::PROTOCOL_ID);
                        let closing = self.links.get_mut(&peer).map(|l| {
                            l.discard_all();
                            l.closing
                        });
                        if closing == Some(true) {
                            self.cut(peer);
                        }
                    } else {
                        tracing::warn!(peer = %device.short(), "sending a frame failed ({error}); closing the peer's connections");
                        self.cut(peer);
                    }
                }
            }
            rr::Event::InboundFailure {
                peer,
                connection_id,
                error,
                ..
            } => {
                let live = self
                    .links
                    .get(&peer)
                    .filter(|l| l.conns.contains_key(&connection_id) && !l.closing);
                if let Some(l) = live {
                    tracing::warn!(peer = %l.device.short(), "receiving a frame failed ({error}); closing the peer's connections");
                    self.cut(peer);
                }
            }
            rr::Event::ResponseSent { .. } => {}
        }
        Ok(())
    }
}
