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

/// Records that `huddle run` unlocked the data directory, after the wrong
/// passphrases given before (`DataDir::failed_unlocks`: by any huddle
/// command, so named as the CLI's), forgotten only once recorded.
async fn record_unlock(dir: &DataDir, handle: &NodeHandle) -> Result<()> {
    use crate::trail::{Action, Via};
    let count = dir.failed_unlocks();
    if count > 0 {
        let action = Action::UnlockFailed {
            via: Via::Cli,
            count,
        };
        handle.command(crate::node::Command::Audit(action)).await?;
        dir.clear_failed_unlocks();
    }
    let action = Action::Unlocked { via: Via::Run };
    handle.command(crate::node::Command::Audit(action)).await?;
    Ok(())
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
    if !ctx.dir.is_encrypted() {
        ctx.out.note(
            "This data directory is not encrypted: a lost or stolen laptop gives away every message on it. `huddle passphrase set` (with the node stopped) encrypts it.",
        );
    }
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
    if let Some(api) = a.api.filter(|api| !api.ip().is_loopback()) {
        return Err(crate::api::ApiError::NotLoopback(api).into());
    }
    let lock_after = Duration::from_millis(super::parse_duration(&a.lock_after)?);
    let store = super::lock::store_for_node(ctx)?;
    let rt = super::runtime()?;
    let team_name = cert.team_name.clone();
    let name = cert.display_name.clone();
    let device = id.device_id();
    // The device holding the team key asks members for their audit trails.
    let trail_admin = ctx
        .dir
        .authority()?
        .filter(|k| k.team_id() == cert.team)
        .map(|k| crate::trail::AdminProof::sign(&k, &device));
    let config = ShellConfig {
        key: id.key,
        certificate: Some(cert),
        listen,
        peers,
        mdns: !a.no_mdns,
        node: NodeConfig {
            trail_admin,
            seal_grace_ms: seal_grace_ms(),
            ..NodeConfig::default()
        },
    };
    rt.block_on(async move {
        let (handle, mut task) = net::start(config, store).await?;
        if ctx.dir.is_encrypted() {
            record_unlock(&ctx.dir, &handle).await?;
        }
        let web = crate::web::WebOptions {
            lock_after,
            data_dir: Some(ctx.dir.clone()),
            unlock_attempts: a.unlock_attempts,
            first_backoff: crate::web::first_backoff(),
        };
        let (api, moved) = start_api(handle.clone(), a.api, web).await?;
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
                "  screen     {} (sign in with `huddle open`; locks after {} idle)",
                api.url(),
                a.lock_after.trim()
            );
            if let Some(usual) = moved {
                outln!(
                    "             {usual}, the usual address, is taken (another huddle node?), so this node serves on a free port"
                );
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

/// Where the screen is bookmarked: the API's address unless `--api` says
/// otherwise.
pub const DEFAULT_API: std::net::SocketAddr =
    std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 4835);

/// 60 s, or in a debug build the milliseconds in
/// `HUDDLE_TEST_SEAL_GRACE_MS` (the namespace tests do not wait a minute
/// for a routine message to be sealed; a release build ignores it).
fn seal_grace_ms() -> crate::ids::Millis {
    let test = cfg!(debug_assertions)
        .then(|| std::env::var("HUDDLE_TEST_SEAL_GRACE_MS").ok())
        .flatten()
        .and_then(|v| v.parse().ok());
    test.unwrap_or(NodeConfig::default().seal_grace_ms)
}

/// Starts the API on `--api`, or on [`DEFAULT_API`] falling back to a free
/// port (the second value then names the address that was taken).
async fn start_api(
    handle: NodeHandle,
    api: Option<std::net::SocketAddr>,
    web: crate::web::WebOptions,
) -> Result<(crate::api::ApiServer, Option<std::net::SocketAddr>)> {
    if let Some(addr) = api {
        return Ok((crate::api::start_with(handle, addr, web).await?, None));
    }
    match crate::api::start_with(handle.clone(), DEFAULT_API, web.clone()).await {
        Ok(server) => Ok((server, None)),
        Err(crate::api::ApiError::Bind { error, .. })
            if error.kind() == std::io::ErrorKind::AddrInUse =>
        {
            let free = std::net::SocketAddr::new(DEFAULT_API.ip(), 0);
            Ok((
                crate::api::start_with(handle, free, web).await?,
                Some(DEFAULT_API),
            ))
        }
        Err(e) => Err(e.into()),
    }
}

/// `huddle open`: a one-time sign-in URL from the running node, opened in
/// the default browser or printed.
pub fn open(ctx: &Ctx, a: super::args::OpenArgs) -> Result<()> {
    ctx.dir.identity_exists()?;
    let client = super::lock::node_only(ctx, "open its screen")?;
    let url = client.login_url()?;
    if a.print || ctx.out.json {
        if ctx.out.json {
            outln!("{}", json!({ "url": url }));
        } else {
            outln!("{url}");
        }
        return Ok(());
    }
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else if cfg!(windows) {
        "explorer"
    } else {
        "xdg-open"
    };
    let started = std::process::Command::new(opener)
        .arg(&url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if started {
        ctx.out.note("Opened this device's screen in your browser.");
    } else {
        outln!("Could not start a browser here; open this one-time link in one:");
        outln!("{url}");
    }
    Ok(())
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
            Event::Alert {
                message,
                priority,
                n,
                of,
                waiting_ms,
                ..
            } => {
                let what = if priority == Priority::Stat {
                    "STAT"
                } else {
                    "URGENT"
                };
                outln!(
                    "{t} ALERT {n}/{of}: {what} message {} still awaits your acknowledgement ({} min): huddle ack {}",
                    &message.to_hex()[..8],
                    waiting_ms / 60_000,
                    &message.to_hex()[..8]
                );
            }
            Event::Escalated { message, level, .. } => outln!(
                "{t} escalated message {} (level {level}): nobody acknowledged it in time",
                &message.to_hex()[..8]
            ),
            Event::Reminder {
                message,
                occurrence,
                ..
            } => outln!(
                "{t} REMINDER {} is due (occurrence {}): huddle alerts; huddle remind done {}",
                &message.to_hex()[..8],
                u32::from(occurrence) + 1,
                &message.to_hex()[..8]
            ),
            _ => {}
        }
    }
}
