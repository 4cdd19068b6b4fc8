//! The demo's ward: a handful of real nodes in this process, each with its
//! own data directory (identity, certificate, sled store) under one
//! temporary directory, talking libp2p over 127.0.0.1.
//!
//! Invariant: nodes find each other only through the loopback addresses
//! handed to them, unless the user opted into mDNS.

use std::path::Path;
use std::time::{Duration, Instant};

use libp2p::Multiaddr;
use rand_core::OsRng;
use tokio::task::JoinHandle;

use crate::api::ApiServer;
use crate::cli::{now_ms, CliError, Result};
use crate::crypto::{AuthorityKey, DeviceKey};
use crate::datadir::{DataDir, Passphrase, Profile};
use crate::ids::{ConversationId, MemberId};
use crate::membership::CertificateRequest;
use crate::net::{self, NodeHandle, ShellConfig, ShellError};
use crate::node::{Command, Node, NodeConfig, Reply};

/// Everyone the demo can cast, in order; a ward of n uses the first n.
pub const CAST: [(&str, &str, &[&str]); 5] = [
    ("ana", "Ana Silva", &["nurse", "charge-nurse"]),
    ("ben", "Ben Okafor", &["physician"]),
    ("chloe", "Chloe Martin", &["nurse"]),
    ("dev", "Dev Patel", &["pharmacist"]),
    ("eli", "Eli Novak", &["nurse"]),
];

pub const TEAM: &str = "St Mary Ward 7";
const DEADLINE: Duration = Duration::from_secs(20);

/// One person's device.
pub struct Device {
    pub name: &'static str,
    pub dir: DataDir,
    pub member: MemberId,
    pub node: Option<Running>,
}

pub struct Running {
    handle: NodeHandle,
    task: JoinHandle<Result<(), ShellError>>,
    listen: Vec<Multiaddr>,
    pub api: Option<ApiServer>,
}

pub struct Ward {
    pub devices: Vec<Device>,
    pub mdns: bool,
}

impl Ward {
    /// Creates the identities, the team (on Ana's device) and a certificate
    /// for everyone: what `init`, `team create`, `team admit` and `team
    /// join` do, in code.
    pub fn create(root: &Path, n: usize, mdns: bool) -> Result<Ward> {
        let authority = AuthorityKey::generate(&mut OsRng);
        let now = now_ms();
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder
            .create(root)
            .map_err(|e| CliError::new(format!("cannot create {}: {e}", root.display())))?;
        let mut devices = Vec::new();
        for (slug, name, roles) in CAST.iter().take(n) {
            // Encrypted like any device, under a random passphrase kept
            // beside it (a demonstration has no one to type it).
            let pass_file = root.join(format!("{slug}.passphrase"));
            write_passphrase(&pass_file)?;
            let dir = DataDir::with_passphrase(root.join(slug), Passphrase::File(pass_file));
            dir.encrypt()?;
            let key = DeviceKey::generate(&mut OsRng);
            let member = MemberId::random(&mut OsRng);
            let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
            let profile = Profile {
                member,
                name: name.to_string(),
                roles: roles.clone(),
            };
            dir.create_identity(&key, &profile)?;
            if devices.is_empty() {
                dir.save_authority(&authority)?;
            }
            let cert = CertificateRequest {
                team_name: TEAM.into(),
                member,
                display_name: name.to_string(),
                roles,
                device: key.device_id(),
                issued: now,
                expires: now + 30 * 86_400_000,
            }
            .sign(&authority)?;
            dir.save_certificate(&cert)?;
            devices.push(Device {
                name,
                dir,
                member,
                node: None,
            });
        }
        Ok(Ward { devices, mdns })
    }

    /// Starts device `i`'s node, dialing every running node before it.
    pub async fn start(&mut self, i: usize, with_api: bool) -> Result<()> {
        let peers: Vec<Multiaddr> = if self.mdns {
            Vec::new()
        } else {
            self.devices[..i]
                .iter()
                .chain(&self.devices[i + 1..])
                .filter_map(|d| d.node.as_ref())
                .flat_map(|r| r.listen.iter().cloned())
                .collect()
        };
        let d = &mut self.devices[i];
        let id = d.dir.identity()?;
        let cert = d.dir.certificate()?;
        let store = d.dir.open_store()??;
        let config = ShellConfig {
            key: id.key,
            certificate: cert,
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("a valid multiaddr")],
            peers,
            mdns: self.mdns,
            node: NodeConfig::default(),
        };
        let (handle, task) = net::start(config, store).await?;
        let listen = crate::cli::run::listen_addrs(&handle).await?;
        let api = if with_api {
            let web = crate::web::WebOptions {
                data_dir: Some(d.dir.clone()),
                ..Default::default()
            };
            let api = crate::api::start_with(
                handle.clone(),
                "127.0.0.1:0".parse().expect("an address"),
                web,
            )
            .await?;
            d.dir.write_api_info(&api.info())?;
            Some(api)
        } else {
            None
        };
        d.node = Some(Running {
            handle,
            task,
            listen,
            api,
        });
        Ok(())
    }

    /// Stops device `i`'s node: departure announced, store flushed and closed.
    pub async fn stop(&mut self, i: usize) -> Result<()> {
        let d = &mut self.devices[i];
        if let Some(r) = d.node.take() {
            r.handle.shutdown().await?;
            r.task
                .await
                .map_err(|e| CliError::new(format!("a demo node failed: {e}")))??;
            d.dir.remove_api_info(std::process::id());
        }
        Ok(())
    }

    pub async fn stop_all(&mut self) -> Result<()> {
        for i in 0..self.devices.len() {
            self.stop(i).await?;
        }
        Ok(())
    }

    fn handle(&self, i: usize) -> Result<&NodeHandle> {
        self.devices[i]
            .node
            .as_ref()
            .map(|r| &r.handle)
            .ok_or_else(|| CliError::new(format!("{}'s node is not running", self.devices[i].name)))
    }

    pub fn running(&self) -> Vec<usize> {
        (0..self.devices.len())
            .filter(|i| self.devices[*i].node.is_some())
            .collect()
    }

    pub async fn command(&self, i: usize, cmd: Command) -> Result<Reply> {
        Ok(self.handle(i)?.command(cmd).await?)
    }

    pub async fn query<R: Send + 'static>(
        &self,
        i: usize,
        f: impl FnOnce(&Node) -> R + Send + 'static,
    ) -> Result<R> {
        Ok(self.handle(i)?.query(f).await?)
    }

    /// Waits until `pred` holds on every node in `who`; returns how long it took.
    pub async fn wait<F>(&self, what: &str, who: &[usize], pred: F) -> Result<Duration>
    where
        F: Fn(&Node) -> bool + Clone + Send + 'static,
    {
        let start = Instant::now();
        loop {
            let mut all = true;
            for &i in who {
                let p = pred.clone();
                all &= self.query(i, move |n| p(n)).await?;
            }
            if all {
                return Ok(start.elapsed());
            }
            if start.elapsed() > DEADLINE {
                return Err(CliError::new(format!(
                    "the demo timed out after {DEADLINE:?} waiting for {what}: run it again with -v to see why"
                )));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// (messages, history digest) of `conv` on node `i`.
    pub async fn digest(
        &self,
        i: usize,
        conv: ConversationId,
    ) -> Result<Option<(usize, [u8; 32])>> {
        self.query(i, move |n| {
            n.conversation(&conv).map(|c| (c.len(), c.history_digest()))
        })
        .await
    }
}

/// A random passphrase in a new owner-only file.
fn write_passphrase(path: &Path) -> Result<()> {
    use std::io::Write;
    let mut bytes = [0u8; 20];
    rand_core::RngCore::fill_bytes(&mut OsRng, &mut bytes);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options
        .open(path)
        .map_err(|e| CliError::new(format!("cannot write {}: {e}", path.display())))?;
    writeln!(f, "{}", data_encoding::BASE32_NOPAD.encode(&bytes))
        .map_err(|e| CliError::new(format!("cannot write {}: {e}", path.display())))
}
