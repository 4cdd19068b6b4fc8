//! The frame protocol's libp2p behaviour: it opens and accepts the
//! long-lived `/huddle/sync/2` streams and hands each one, negotiated, to
//! the loop, which reads and writes them in tasks of its own (`streams.rs`).
//!
//! Invariants:
//! - a stream is opened only when the loop asks, on the connection it names;
//! - a connection accepts at most [`INBOUND_STREAMS_PER_CONNECTION`] inbound
//!   streams over its life; one more is reported as a violation and dropped
//!   unread, so a peer cannot make us hold streams or tasks without bound;
//! - every event the handler has for the behaviour is bounded by those two
//!   limits (the streams the loop asked for, a few inbound streams);
//! - every established connection is kept open while idle (libp2p would
//!   close one that no handler needs): a huddle peer must stay connected
//!   through quiet hours so that a new message is pushed at once. The shell,
//!   not the swarm's idle timer, decides when a connection ends, and none
//!   lives unbounded without passing the membership gate: the core refuses
//!   (and the shell closes) a peer that has not proved a valid certificate
//!   within `NodeConfig::hello_timeout_ms`, a peer whose key is not Ed25519
//!   is closed as soon as it is established, and a connection whose pings
//!   fail is closed by the shell.

use std::collections::VecDeque;
use std::task::{Context, Poll};

use libp2p::core::transport::PortUse;
use libp2p::core::upgrade::ReadyUpgrade;
use libp2p::core::Endpoint;
use libp2p::swarm::handler::{
    ConnectionEvent, DialUpgradeError, FullyNegotiatedInbound, FullyNegotiatedOutbound,
};
use libp2p::swarm::{
    ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent, ConnectionId, FromSwarm,
    NetworkBehaviour, NotifyHandler, StreamUpgradeError, SubstreamProtocol, THandler,
    THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId, Stream, StreamProtocol};

use crate::wire::PROTOCOL_ID;

/// The libp2p protocol id of the frame protocol.
pub const SYNC_PROTOCOL: StreamProtocol = StreamProtocol::new(PROTOCOL_ID);

/// Inbound frame streams one connection may open over its life. An honest
/// peer opens one per session; the second is already a violation, and this
/// bounds what a dishonest one makes us hold before the loop cuts it off.
pub const INBOUND_STREAMS_PER_CONNECTION: usize = 2;

/// What the behaviour tells the loop.
#[derive(Debug)]
pub enum Event {
    /// A frame stream, negotiated and ready.
    Stream {
        peer: PeerId,
        connection: ConnectionId,
        stream: Stream,
        inbound: bool,
    },
    /// Our stream could not be opened. `unsupported`: the peer declined the
    /// protocol (nothing was or can be delivered); otherwise it failed.
    OpenFailed {
        peer: PeerId,
        connection: ConnectionId,
        unsupported: bool,
        why: String,
    },
    /// The peer opened more inbound streams than a connection may.
    TooManyStreams { peer: PeerId },
}

#[derive(Default)]
pub struct Behaviour {
    events: VecDeque<ToSwarm<Event, Open>>,
}

impl Behaviour {
    /// Asks the handler of `connection` to open our frame stream.
    pub fn open(&mut self, peer: PeerId, connection: ConnectionId) {
        self.events.push_back(ToSwarm::NotifyHandler {
            peer_id: peer,
            handler: NotifyHandler::One(connection),
            event: Open,
        });
    }
}

/// The behaviour asks a handler to open the frame stream.
#[derive(Debug)]
pub struct Open;

/// What a handler tells the behaviour.
#[derive(Debug)]
pub enum HandlerEvent {
    Stream { stream: Stream, inbound: bool },
    OpenFailed { unsupported: bool, why: String },
    TooManyStreams,
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = Handler;
    type ToSwarm = Event;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(Handler::default())
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(Handler::default())
    }

    fn on_swarm_event(&mut self, _: FromSwarm) {}

    fn on_connection_handler_event(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        e: THandlerOutEvent<Self>,
    ) {
        let ev = match e {
            HandlerEvent::Stream { stream, inbound } => Event::Stream {
                peer,
                connection,
                stream,
                inbound,
            },
            HandlerEvent::OpenFailed { unsupported, why } => Event::OpenFailed {
                peer,
                connection,
                unsupported,
                why,
            },
            HandlerEvent::TooManyStreams => Event::TooManyStreams { peer },
        };
        self.events.push_back(ToSwarm::GenerateEvent(ev));
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        match self.events.pop_front() {
            Some(e) => Poll::Ready(e),
            None => Poll::Pending,
        }
    }
}

#[derive(Default)]
pub struct Handler {
    /// Streams the behaviour asked for that have not been requested yet
    /// (the shell asks for one per session).
    opens: usize,
    /// Inbound streams accepted so far on this connection.
    inbound: usize,
    /// Told the behaviour that the peer opened too many streams.
    reported_excess: bool,
    events: VecDeque<HandlerEvent>,
}

impl ConnectionHandler for Handler {
    type FromBehaviour = Open;
    type ToBehaviour = HandlerEvent;
    type InboundProtocol = ReadyUpgrade<StreamProtocol>;
    type OutboundProtocol = ReadyUpgrade<StreamProtocol>;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = ();

    fn listen_protocol(&self) -> SubstreamProtocol<ReadyUpgrade<StreamProtocol>> {
        SubstreamProtocol::new(ReadyUpgrade::new(SYNC_PROTOCOL), ())
    }

    fn connection_keep_alive(&self) -> bool {
        true
    }

    fn poll(
        &mut self,
        _: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<ReadyUpgrade<StreamProtocol>, (), HandlerEvent>> {
        if self.opens > 0 {
            self.opens -= 1;
            return Poll::Ready(ConnectionHandlerEvent::OutboundSubstreamRequest {
                protocol: SubstreamProtocol::new(ReadyUpgrade::new(SYNC_PROTOCOL), ()),
            });
        }
        match self.events.pop_front() {
            Some(e) => Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(e)),
            None => Poll::Pending,
        }
    }

    fn on_behaviour_event(&mut self, Open: Open) {
        self.opens += 1;
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<Self::InboundProtocol, Self::OutboundProtocol>,
    ) {
        match event {
            ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound {
                protocol: stream,
                ..
            }) => {
                if self.inbound < INBOUND_STREAMS_PER_CONNECTION {
                    self.inbound += 1;
                    self.events.push_back(HandlerEvent::Stream {
                        stream,
                        inbound: true,
                    });
                } else if !std::mem::replace(&mut self.reported_excess, true) {
                    // Dropping the stream resets it unread.
                    self.events.push_back(HandlerEvent::TooManyStreams);
                }
            }
            ConnectionEvent::FullyNegotiatedOutbound(FullyNegotiatedOutbound {
                protocol: stream,
                ..
            }) => self.events.push_back(HandlerEvent::Stream {
                stream,
                inbound: false,
            }),
            ConnectionEvent::DialUpgradeError(DialUpgradeError { error, .. }) => {
                let (unsupported, why) = match error {
                    StreamUpgradeError::NegotiationFailed => {
                        (true, "the peer does not support the protocol".to_string())
                    }
                    StreamUpgradeError::Timeout => {
                        (false, "opening the stream timed out".to_string())
                    }
                    StreamUpgradeError::Apply(never) => match never {},
                    StreamUpgradeError::Io(e) => (false, e.to_string()),
                };
                self.events
                    .push_back(HandlerEvent::OpenFailed { unsupported, why });
            }
            _ => {}
        }
    }
}
