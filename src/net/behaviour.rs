//! The libp2p side of the shell: the composed behaviour (connection limits,
//! identify, ping, the frame streams, which also keep connections alive) and the swarm over
//! TCP + Noise + Yamux.
//!
//! Invariant: every resource a remote can make us hold is bounded here or
//! in the loop — connections (total, per peer, pending, pending per source
//! address), the time a handshake may take, concurrent streams per
//! connection, frame size and read time (`streams.rs`) and queued frames
//! (the loop).

use std::time::Duration;

use libp2p::swarm::NetworkBehaviour;
use libp2p::{connection_limits, identify, identity, noise, ping, tcp, yamux, Swarm, SwarmBuilder};

use super::{addr_limits, frames, ShellError};

/// The identify protocol id huddle nodes announce.
pub const IDENTIFY_PROTOCOL: &str = "/huddle/id/1.0.0";

/// Connection limits (protocol/transport.md, "Limits").
pub mod limits {
    /// Connections still in the handshake, from others. A flood of
    /// attempts is cut here before it costs a Noise handshake each. Well
    /// above [`PENDING_PER_ADDRESS`], so that one address cannot fill it.
    pub const PENDING_INCOMING: u32 = 64;
    /// Connections still in the handshake from one IP address, unless a
    /// device connected from it has proved membership (`addr_limits.rs`).
    pub const PENDING_PER_ADDRESS: u32 = 4;
    /// The TCP connection's upgrade (Noise, then Yamux) must be done within
    /// this, so a socket that never speaks holds its slot no longer.
    pub const HANDSHAKE_TIMEOUT_SECS: u64 = 5;
    pub const PENDING_OUTGOING: u32 = 32;
    pub const ESTABLISHED_INCOMING: u32 = 96;
    pub const ESTABLISHED_OUTGOING: u32 = 96;
    pub const ESTABLISHED_TOTAL: u32 = 128;
    /// Two, so that a simultaneous dial from both sides survives.
    pub const ESTABLISHED_PER_PEER: u32 = 2;
    /// Frame streams a peer may open on one connection (an honest peer
    /// opens one per session).
    pub const INBOUND_STREAMS_PER_CONNECTION: usize = super::frames::INBOUND_STREAMS_PER_CONNECTION;
    /// A write of queued frames to a peer must finish within this time.
    pub const WRITE_TIMEOUT_SECS: u64 = super::super::streams::WRITE_TIMEOUT.as_secs();
    /// A frame whose first byte has arrived must be whole within this time.
    pub const FRAME_READ_TIMEOUT_SECS: u64 = super::super::streams::FRAME_READ_TIMEOUT.as_secs();
    /// Swarm idle timeout. The keep-alive behaviour holds connections open,
    /// so this only matters for connections it does not cover.
    pub const IDLE_CONNECTION_TIMEOUT_SECS: u64 = 30;
}

#[derive(NetworkBehaviour)]
pub struct Behaviour {
    // First, so that a connection over a limit is denied before the other
    // behaviours set up anything for it; the per-address bound before the
    // global one, so that an address over its bound takes no global slot.
    pub addrs: addr_limits::Behaviour,
    pub limits: connection_limits::Behaviour,
    pub identify: identify::Behaviour,
    pub ping: ping::Behaviour,
    pub frames: frames::Behaviour,
    /// Attachments, on streams of their own (`blobs.rs`).
    pub blobs: super::blobs::Behaviour,
}

/// Builds the swarm for the node whose Ed25519 secret is `secret`.
pub fn build_swarm(
    secret: [u8; 32],
    blob_codec: super::blobs::BlobCodec,
) -> Result<Swarm<Behaviour>, ShellError> {
    let keypair = identity::Keypair::ed25519_from_bytes(secret)
        .map_err(|e| ShellError::Transport(format!("the device key is unusable: {e}")))?;
    let swarm = SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| ShellError::Transport(format!("cannot set up TCP with Noise: {e}")))?
        .with_behaviour(|key| {
            let l = connection_limits::ConnectionLimits::default()
                .with_max_pending_incoming(Some(limits::PENDING_INCOMING))
                .with_max_pending_outgoing(Some(limits::PENDING_OUTGOING))
                .with_max_established_incoming(Some(limits::ESTABLISHED_INCOMING))
                .with_max_established_outgoing(Some(limits::ESTABLISHED_OUTGOING))
                .with_max_established(Some(limits::ESTABLISHED_TOTAL))
                .with_max_established_per_peer(Some(limits::ESTABLISHED_PER_PEER));
            Behaviour {
                addrs: addr_limits::Behaviour::default(),
                limits: connection_limits::Behaviour::new(l),
                identify: identify::Behaviour::new(
                    identify::Config::new(IDENTIFY_PROTOCOL.to_owned(), key.public())
                        .with_agent_version(format!("huddle/{}", env!("CARGO_PKG_VERSION"))),
                ),
                ping: ping::Behaviour::new(ping::Config::new()),
                frames: frames::Behaviour::default(),
                blobs: super::blobs::behaviour(blob_codec),
            }
        })
        .map_err(|e| ShellError::Transport(format!("cannot build the network behaviour: {e}")))?
        .with_swarm_config(|c| {
            c.with_idle_connection_timeout(Duration::from_secs(
                limits::IDLE_CONNECTION_TIMEOUT_SECS,
            ))
        })
        .with_connection_timeout(Duration::from_secs(limits::HANDSHAKE_TIMEOUT_SECS))
        .build();
    Ok(swarm)
}
