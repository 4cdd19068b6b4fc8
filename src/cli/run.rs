//! `huddle run`: the node in the foreground, its local API beside it, until
//! Ctrl-C or SIGTERM; then a clean shutdown (departure announced, store
//! flushed).
//!
//! Invariant: `api.json` exists only while this process serves it; it is
//! removed on every way out of `run` that returns.

use std::time::Duration;

use serde_json::json;

use super::args::RunArgs;
use super::{now_ms, render, CliError, Ctx, Result};
use crate::api::types::EventJson;
use crate::datadir::DataDir;
use crate::membership::{CertError, RevocationTarget, Revocations};
use crate::message::Priority;
use crate::net::{self, NodeHandle, ShellConfig};
use crate::node::{CommandError, Event, NodeConfig};
use crate::wire::Reason;

pub(super) fn parse_addrs(raw: &[String], what: &str) -> Result<Vec<libp2p::Multiaddr>> {
    raw.iter()
        .map(|s| {
            s.trim().parse().map_err(|_| {
                CliError::usage(format!(
                    "\"{s}\" is not a {what} address: write a multiaddr such as /ip4/192.168.1.20/tcp/4001"
                ))
            })
        })
        .collect()
}

/// Removes `api.json` when dropped.
struct ApiFile<'a>(&'a DataDir);

impl Drop for ApiFile<'_> {
    fn drop(&mut self) {
        self.0.remove_api_info(std::process::id());
    }
}

/// The node's listen addresses, once the swarm has reported them.
pub(super) async fn listen_addrs(h: &NodeHandle) -> Result<Vec<libp2p::Multiaddr>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let addrs = h.listen_addrs().await?;
        if !addrs.is_empty() || tokio::time::Instant::now() >= deadline {
            return Ok(addrs);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn run(ctx: &Ctx, a: RunArgs) -> Result<()> {
    let id = ctx.dir.identity()?;
    let cert = ctx.dir.certificate()?.ok_or(CommandError::NoMembership)?;
    match cert.check(&cert.team, now_ms(), &Revocations::default()) {
        Err(CertError::Expired) => {
            return Err(CliError::new(format!(
                "this device's membership expired on {}: ask your administrator for a new token, then `huddle team join <token>`",
                super::setup::date(cert.expires)
            )))
        }
        Err(e) => return Err(CliError::new(format!("{e}: ask your administrator for a new token"))),
        Ok(()) => {}
    }
    let listen = parse_addrs(&a.listen, "listen")?;
    let peers = parse_addrs(&a.peers, "peer")?;
    if !a.api.ip().is_loopback() {
        return Err(crate::api::ApiError::NotLoopback(a.api).into());
    }
    let store = super::lock::store_for_node(ctx)?;
    let rt = super::runtime()?;
    let team_name = cert.team_name.clone();
    let name = cert.display_name.clone();
    let device = id.device_id();
    let config = ShellConfig {
        key: id.key,
        certificate: Some(cert),
        listen,
        peers,
        mdns: !a.no_mdns,
        node: NodeConfig::default(),
    };
    rt.block_on(async move {
        let (handle, mut task) = net::start(config, store).await?;
        let api = crate::api::start(handle.clone(), a.api).await?;
        ctx.dir.write_api_info(&api.info())?;
        let _api_file = ApiFile(&ctx.dir);
        let addrs = listen_addrs(&handle).await?;
        let damaged = handle
            .query(|n| crate::api::views::status(n).damaged)
            .await?;
        if ctx.out.json {
            outln!(
                "{}",
                json!({
                    "event": "started",
                    "device": device,
                    "listen": addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                    "api": api.url(),
                    "damaged": damaged,
                })
            );
        } else if !ctx.out.quiet {
            outln!("huddle is running as {name} in \"{team_name}\"");
            outln!("  device     {}", device);
            for addr in &addrs {
                outln!("  listening  {addr}");
            }
            outln!(
                "  local API  {} (token in {})",
                api.url(),
                ctx.dir.path().join("api.json").display()
            );
            outln!(
                "  discovery  {}",
                if a.no_mdns {
                    "off (--no-mdns): only --peer addresses and devices that dial in"
                } else {
                    "mDNS on the local network"
                }
            );
            for d in &damaged {
                outln!(
                    "  damaged    conversation {} could not be read from this device's store and is set aside (its records are kept): {}",
                    d.conversation, d.why
                );
            }
            outln!("Press Ctrl-C to stop.");
        }
        let printer = tokio::spawn(print_events(handle.clone(), ctx.out));
        let why = tokio::select! {
            r = &mut task => Some(r),
            () = shutdown_signal() => None,
        };
        printer.abort();
        match why {
            // The shell stopped by itself: report why.
            Some(Ok(Ok(()))) => Ok(()),
            Some(Ok(Err(e))) => Err(e.into()),
            Some(Err(e)) => Err(CliError::new(format!("the node stopped unexpectedly: {e}"))),
            None => {
                ctx.out
                    .note("Stopping: telling peers and flushing the store…");
                handle.shutdown().await?;
                match tokio::time::timeout(Duration::from_secs(10), task).await {
                    Ok(Ok(Err(e))) => return Err(e.into()),
                    Ok(_) => {}
                    Err(_) => tracing::warn!("the node took too long to stop"),
                }
                ctx.out.note("Stopped.");
                Ok(())
            }
        }
    })
}

/// Resolves on Ctrl-C or SIGTERM.
pub(super) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Tells the person at the terminal what happens, one line per event.
/// Once stdout's reader has gone the node runs on, printing nothing (a
/// script may read the `started` line and leave it running).
async fn print_events(handle: NodeHandle, out: super::Out) {
    let mut rx = handle.subscribe();
    // Once a peer has said this device is revoked, every connection ends
    // the same way: say it once, then let the redials pass quietly.
    let mut told_revoked = false;
    while !super::output::closed() {
        let e = match rx.recv().await {
            Ok(e) => e,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        if out.json {
            outln!(
                "{}",
                serde_json::to_string(&EventJson::from(&e)).expect("serializes")
            );
            continue;
        }
        if out.quiet {
            continue;
        }
        let t = render::time(now_ms());
        match e {
            Event::PeerJoined { .. } | Event::PeerLeft { .. } if told_revoked => {}
            Event::PeerRefused {
                reason: Reason::Revoked,
                by_us: false,
                ..
            } if told_revoked => {}
            Event::PeerRefused {
                peer,
                reason: Reason::Revoked,
                by_us: false,
            } => {
                told_revoked = true;
                outln!(
                    "{t} device …{} refused this device: its membership was revoked, so the team accepts nothing more from it (an administrator can admit it again); the node keeps trying quietly",
                    peer.short()
                );
            }
            Event::PeerJoined { peer, name, .. } => {
                outln!("{t} {name} connected (device …{})", peer.short())
            }
            Event::PeerLeft { peer } => outln!("{t} device …{} disconnected", peer.short()),
            Event::PeerRefused {
                peer,
                reason,
                by_us,
            } => outln!(
                "{t} {} device …{}: {reason}",
                if by_us { "refused" } else { "was refused by" },
                peer.short()
            ),
            Event::MessageAdded {
                conversation,
                author,
                priority,
                local: false,
                ..
            } => {
                let (title, who) = handle
                    .query(move |n| {
                        let title = n
                            .conversations()
                            .into_iter()
                            .find(|c| c.id == conversation)
                            .map(|c| c.title)
                            .unwrap_or_default();
                        let who = crate::api::views::directory(n)
                            .into_iter()
                            .find(|m| m.member == author)
                            .map(|m| m.name)
                            .unwrap_or_else(|| format!("member {}", &author.to_hex()[..8]));
                        (title, who)
                    })
                    .await
                    .unwrap_or_default();
                let flag = match priority {
                    Priority::Routine => "",
                    Priority::Urgent => " [URGENT]",
                    Priority::Stat => " [STAT]",
                };
                outln!(
                    "{t} new message{flag} in \"{title}\" from {who}: huddle history \"{title}\""
                );
            }
            Event::Revoked { target } => match target {
                RevocationTarget::Device(d) => outln!("{t} device …{} was revoked", d.short()),
                RevocationTarget::Member(m) => {
                    outln!("{t} member {} was revoked", &m.to_hex()[..8])
                }
            },
            Event::Rejected { count, .. } => {
                outln!("{t} dropped {count} entries whose signatures do not verify")
            }
            _ => {}
        }
    }
}
