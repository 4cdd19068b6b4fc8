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
//!   protocol version 1, and not us.

use std::net::IpAddr;

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use mdns_sd::{Receiver, ServiceDaemon, ServiceEvent, ServiceInfo};

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

impl Discovery {
    /// Starts the daemon, starts browsing and, if `team` is known (the node
    /// has a certificate), announces this node listening on `port`.
    pub fn start(local: PeerId, team: Option<String>, port: Option<u16>) -> Result<Self, String> {
        let daemon = ServiceDaemon::new().map_err(err)?;
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
