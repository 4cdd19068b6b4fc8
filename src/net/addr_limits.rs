//! A bound per source address on inbound connections still in their
//! handshake (TCP accepted, Noise + Yamux not done), so that one address
//! cannot take every pending slot with sockets that never speak.
//!
//! Invariants:
//! - an address has at most [`limits::PENDING_PER_ADDRESS`] inbound
//!   connections pending, unless a device connected from it has proved
//!   membership (a clinic's devices share one NAT address); the global
//!   bound (`connection_limits`) holds for everyone;
//! - every table here is bounded: the pending table by the swarm's pending
//!   connections (an entry leaves when its connection is established or
//!   fails), the member addresses by [`MAX_MEMBER_ADDRS`] (the oldest is
//!   forgotten first).
//!
//! [`limits::PENDING_PER_ADDRESS`]: super::limits::PENDING_PER_ADDRESS

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::IpAddr;
use std::task::{Context, Poll};

use libp2p::core::transport::PortUse;
use libp2p::core::Endpoint;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::behaviour::{ConnectionEstablished, ListenFailure};
use libp2p::swarm::{
    dummy, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId};

use super::limits;

/// Addresses remembered as a member's; past this, the one whose member
/// was seen longest ago is forgotten.
pub const MAX_MEMBER_ADDRS: usize = 256;

/// Why an inbound connection was refused before its handshake.
#[derive(Debug, thiserror::Error)]
#[error("{addr} already has {pending} connections in their handshake (limit {limit})")]
pub struct TooManyPending {
    pub addr: IpAddr,
    pub pending: u32,
    pub limit: u32,
}

/// The IP address a multiaddr starts from, if it has one.
pub fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(a) => Some(IpAddr::V4(a)),
        Protocol::Ip6(a) => Some(IpAddr::V6(a)),
        _ => None,
    })
}

#[derive(Default)]
pub struct Behaviour {
    pending: HashMap<ConnectionId, IpAddr>,
    per_addr: HashMap<IpAddr, u32>,
    /// Addresses a verified member connected from, with a sequence number
    /// of when (the smallest is forgotten first).
    members: HashMap<IpAddr, u64>,
    by_age: BTreeMap<u64, IpAddr>,
    seen: u64,
}

impl Behaviour {
    /// Inbound connections in their handshake, all addresses together.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// A device connected from `addr` proved membership: connections from
    /// that address are no longer bounded per address.
    pub fn member_at(&mut self, addr: IpAddr) {
        self.seen += 1;
        if let Some(old) = self.members.insert(addr, self.seen) {
            self.by_age.remove(&old);
        }
        self.by_age.insert(self.seen, addr);
        while self.members.len() > MAX_MEMBER_ADDRS {
            let Some((_, oldest)) = self.by_age.pop_first() else {
                break;
            };
            self.members.remove(&oldest);
        }
    }

    /// Counts a new pending connection from `remote`, or refuses it.
    fn admit(&mut self, id: ConnectionId, remote: &Multiaddr) -> Result<(), TooManyPending> {
        let Some(addr) = ip_of(remote) else {
            return Ok(()); // not IP (tests' memory transport): nothing to key on
        };
        let pending = self.per_addr.get(&addr).copied().unwrap_or(0);
        let limit = limits::PENDING_PER_ADDRESS;
        if pending >= limit && !self.members.contains_key(&addr) {
            return Err(TooManyPending {
                addr,
                pending,
                limit,
            });
        }
        self.per_addr.insert(addr, pending + 1);
        self.pending.insert(id, addr);
        Ok(())
    }

    /// The connection is established or failed: it is no longer pending.
    fn settle(&mut self, id: ConnectionId) {
        let Some(addr) = self.pending.remove(&id) else {
            return;
        };
        if let Some(n) = self.per_addr.get_mut(&addr) {
            *n -= 1;
            if *n == 0 {
                self.per_addr.remove(&addr);
            }
        }
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        id: ConnectionId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.admit(id, remote).map_err(ConnectionDenied::new)
    }

    fn handle_established_inbound_connection(
        &mut self,
        id: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.settle(id);
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        // A later behaviour may deny the connection after we counted it;
        // the swarm then reports a listen failure to every behaviour.
        match event {
            FromSwarm::ListenFailure(ListenFailure { connection_id, .. })
            | FromSwarm::ConnectionEstablished(ConnectionEstablished { connection_id, .. }) => {
                self.settle(connection_id)
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Infallible, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(ip: &str) -> Multiaddr {
        format!("/ip4/{ip}/tcp/4000").parse().expect("multiaddr")
    }

    #[test]
    fn one_address_is_bounded_others_and_members_are_not() {
        let mut b = Behaviour::default();
        let limit = limits::PENDING_PER_ADDRESS as usize;
        let mut ids = (1..).map(ConnectionId::new_unchecked);
        let mut held = Vec::new();
        for _ in 0..limit {
            let id = ids.next().expect("id");
            b.admit(id, &from("10.0.0.9")).expect("under the bound");
            held.push(id);
        }
        assert!(b.admit(ids.next().expect("id"), &from("10.0.0.9")).is_err());
        b.admit(ids.next().expect("id"), &from("10.0.0.1"))
            .expect("another address is not affected");
        // A slot comes back when a handshake ends, either way.
        b.settle(held[0]);
        b.admit(ids.next().expect("id"), &from("10.0.0.9"))
            .expect("a slot freed");
        assert_eq!(b.pending(), limit + 1);

        // Behind a NAT shared with a member, the address is exempt.
        b.member_at("10.0.0.9".parse().expect("ip"));
        for _ in 0..limit {
            b.admit(ids.next().expect("id"), &from("10.0.0.9"))
                .expect("a member's address");
        }
        // The member table forgets its oldest address first.
        for i in 0..MAX_MEMBER_ADDRS {
            b.member_at(IpAddr::from([192, 168, (i / 256) as u8, (i % 256) as u8]));
        }
        assert_eq!(b.members.len(), MAX_MEMBER_ADDRS);
        assert!(!b
            .members
            .contains_key(&"10.0.0.9".parse::<IpAddr>().expect("ip")));
        assert!(b.admit(ids.next().expect("id"), &from("10.0.0.9")).is_err());
    }
}
