//! Discovery over mDNS with mdns-sd: announce this node to its team, and
//! find the team's other nodes on the local network.
//!
//! What is announced (protocol/discovery.md): service `_huddle._udp.local.`,
//! instance name = our peer id, the TCP port we listen on, our addresses
//! (kept current by mdns-sd), and TXT `v=1`, `peer=<peer id>`,
//! `team=<team fingerprint>`. No names, roles or anything about patients.
//!
//! Invariants:
//! - a [`Discovery`] exists only when the user asked for mDNS; without it no
//!   mdns-sd daemon (and so no multicast socket) is ever created;
//! - a node without a certificate browses but never announces itself;
//! - a resolved service is only dialled if its TXT says it is of our team,
//!   protocol version 1, and not us;
//! - mDNS runs only on the address families the node listens on
//!   ([`families_left_out`]), so it never announces an address (an IPv6
//!   link-local one beside an IPv4 listener) that no one can reach us at.

use std::net::IpAddr;

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use mdns_sd::{IfKind, Receiver, ServiceDaemon, ServiceEvent, ServiceInfo};

pub const SERVICE_TYPE: &str = "_huddle._udp.local.";
pub const TXT_VERSION: &str = "v";
pub const TXT_PEER: &str = "peer";
pub const TXT_TEAM: &str = "team";
const VERSION: &str = "1";

/// A team peer found on the network, with the addresses to dial.
#[derive(Debug)]
pub struct Found {
    pub peer: PeerId,
    pub addrs: Vec<Multiaddr>,
}

pub struct Discovery {
    daemon: ServiceDaemon,
    /// Browse events; mdns-sd bounds this channel (1000) and ends the
    /// subscription if we fall behind, in which case we browse again.
    pub events: Receiver<ServiceEvent>,
    local: PeerId,
    team: Option<String>,
    /// Our registered instance, to unregister on shutdown.
    registered: Option<String>,
}

fn err(e: mdns_sd::Error) -> String {
    e.to_string()
}

/// An IP address family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

/// The address families mDNS leaves out: those none of `listen` (the
/// addresses the node listens on) is of. mdns-sd announces the addresses of
/// every interface of the families it runs on, and a peer dials each, so
/// a family we do not listen on would only send peers to a closed port.
/// Listening on nothing known leaves nothing out.
pub fn families_left_out(listen: &[Multiaddr]) -> Vec<Family> {
    let has = |family: Family| {
        listen.iter().any(|a| {
            a.iter().any(|p| match p {
                Protocol::Ip4(_) => family == Family::V4,
                Protocol::Ip6(_) => family == Family::V6,
                _ => false,
            })
        })
    };
    let (v4, v6) = (has(Family::V4), has(Family::V6));
    match (v4, v6) {
        (true, false) => vec![Family::V6],
        (false, true) => vec![Family::V4],
        _ => Vec::new(),
    }
}

/// The TCP port we announce: the first one we listen on.
fn announced_port(listen: &[Multiaddr]) -> Option<u16> {
    listen.iter().find_map(|a| {
        a.iter().find_map(|p| match p {
            Protocol::Tcp(port) => Some(port),
            _ => None,
        })
    })
}

impl Discovery {
    /// Starts the daemon on the address families of `listen`, starts
    /// browsing and, if `team` is known (the node has a certificate),
    /// announces this node listening on its port.
    pub fn start(
        local: PeerId,
        team: Option<String>,
        listen: &[Multiaddr],
    ) -> Result<Self, String> {
        let daemon = ServiceDaemon::new().map_err(err)?;
        for family in families_left_out(listen) {
            // Commands reach the daemon in order: this holds before it
            // browses or announces anything.
            daemon
                .disable_interface(match family {
                    Family::V4 => IfKind::IPv4,
                    Family::V6 => IfKind::IPv6,
                })
                .map_err(err)?;
        }
        let port = announced_port(listen);
        let events = daemon.browse(SERVICE_TYPE).map_err(err)?;
        let mut d = Discovery {
            daemon,
            events,
            local,
            team,
            registered: None,
        };
        if let (Some(team), Some(port)) = (d.team.clone(), port) {
            let peer = local.to_string();
            let host = format!("huddle-{}.local.", &peer[peer.len() - 12..].to_lowercase());
            let props = [
                (TXT_VERSION, VERSION),
                (TXT_PEER, peer.as_str()),
                (TXT_TEAM, team.as_str()),
            ];
            let info = ServiceInfo::new(SERVICE_TYPE, &peer, &host, "", port, &props[..])
                .map_err(err)?
                .enable_addr_auto();
            let fullname = info.get_fullname().to_owned();
            d.daemon.register(info).map_err(err)?;
            tracing::info!(service = %fullname, "announcing on mDNS");
            d.registered = Some(fullname);
        }
        Ok(d)
    }

    /// Browsing stopped because we fell behind: start it again.
    pub fn rebrowse(&mut self) -> Result<(), String> {
        let _ = self.daemon.stop_browse(SERVICE_TYPE);
        self.events = self.daemon.browse(SERVICE_TYPE).map_err(err)?;
        Ok(())
    }

    /// Interprets one browse event: a team peer to dial, or nothing.
    pub fn on_event(&self, event: ServiceEvent) -> Option<Found> {
        let ServiceEvent::ServiceResolved(svc) = event else {
            if let ServiceEvent::ServiceRemoved(_, name) = event {
                tracing::debug!(service = %name, "mDNS service gone");
            }
            return None;
        };
        let props = &svc.txt_properties;
        if props.get_property_val_str(TXT_VERSION) != Some(VERSION) {
            tracing::debug!(service = %svc.fullname, "ignoring a huddle service of another version");
            return None;
        }
        let team = self.team.as_deref()?;
        if props.get_property_val_str(TXT_TEAM) != Some(team) {
            tracing::debug!(service = %svc.fullname, "ignoring a huddle node of another team");
            return None;
        }
        let peer: PeerId = props.get_property_val_str(TXT_PEER)?.parse().ok()?;
        if peer == self.local {
            return None;
        }
        let addrs = svc
            .addresses
            .iter()
            .map(|ip| ip.to_ip_addr())
            .filter(|ip| !ip.is_unspecified() && !ip.is_multicast())
            .map(|ip| {
                let proto = match ip {
                    IpAddr::V4(v4) => Protocol::Ip4(v4),
                    IpAddr::V6(v6) => Protocol::Ip6(v6),
                };
                Multiaddr::empty()
                    .with(proto)
                    .with(Protocol::Tcp(svc.port))
                    .with(Protocol::P2p(peer))
            })
            .collect();
        Some(Found { peer, addrs })
    }

    /// Announces our departure and stops the daemon.
    pub async fn stop(self) {
        if let Some(name) = &self.registered {
            match self.daemon.unregister(name) {
                // The goodbye packets are sent before the status comes back;
                // bound the wait so a stuck daemon cannot hold up shutdown.
                Ok(rx) => {
                    let wait =
                        tokio::time::timeout(std::time::Duration::from_secs(2), rx.recv_async());
                    if wait.await.is_err() {
                        tracing::warn!("mDNS did not confirm our departure in time");
                    }
                }
                Err(e) => tracing::warn!("could not withdraw the mDNS announcement: {e}"),
            }
        }
        if let Ok(rx) = self.daemon.shutdown() {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), rx.recv_async()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(list: &[&str]) -> Vec<Multiaddr> {
        list.iter().map(|a| a.parse().expect("multiaddr")).collect()
    }

    #[test]
    fn mdns_leaves_out_the_families_the_node_does_not_listen_on() {
        let v4 = addrs(&["/ip4/127.0.0.1/tcp/4001", "/ip4/192.168.1.20/tcp/4001"]);
        assert_eq!(families_left_out(&v4), vec![Family::V6]);
        let v6 = addrs(&["/ip6/::1/tcp/4001", "/ip6/fe80::1/tcp/4001"]);
        assert_eq!(families_left_out(&v6), vec![Family::V4]);
        let both = addrs(&["/ip4/10.0.0.2/tcp/4001", "/ip6/fd00::2/tcp/4002"]);
        assert_eq!(families_left_out(&both), Vec::<Family>::new());
        assert_eq!(families_left_out(&[]), Vec::<Family>::new());
        assert_eq!(announced_port(&both), Some(4001));
    }
}
