//! The release `huddle` binary as a child process, for the benches that run
//! it for real (attack, soak): one-shot CLI commands, `huddle run` on
//! loopback with mDNS off, and waiting for its local API.
//!
//! Invariant: a process started here is killed (SIGKILL) when its [`Guard`]
//! drops, also on a panic's unwind, and every wait on it has a deadline.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use huddle::api::client::ApiClient;
use huddle::datadir::{ApiInfo, DataDir};

/// The release `huddle` binary cargo built for this bench, or `HUDDLE_BIN`.
pub fn huddle_bin() -> PathBuf {
    std::env::var_os("HUDDLE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_huddle")))
}

/// The passphrase file of the data directory `dir` (beside it, as
/// `<dir>.passphrase`), written on first use: every process started here
/// gets it, so `init` encrypts the directory as a user's would be.
pub fn passphrase_file(dir: &Path) -> PathBuf {
    let path = dir.with_extension("passphrase");
    if !path.exists() {
        std::fs::write(&path, "a bench passphrase\n").expect("write the passphrase file");
    }
    path
}

/// Runs one CLI command on `dir` to completion; its stdout.
pub fn cli(dir: &Path, args: &[&str]) -> Result<String, String> {
    let out = std::process::Command::new(huddle_bin())
        .arg("--data-dir")
        .arg(dir)
        .env("HUDDLE_PASSPHRASE_FILE", passphrase_file(dir))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("huddle {args:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "huddle {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A child process, killed (SIGKILL) when dropped.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `huddle run` just spawned: the first line it prints (`--json`'s
/// `started`) arrives on `started` once its store is open and it listens.
pub struct Run {
    pub child: Guard,
    pub pid: u32,
    started: Receiver<String>,
}

impl Run {
    /// `huddle run` on `dir`, listening on 127.0.0.1 (a port of its own), its
    /// API on 127.0.0.1, mDNS off, dialing `peers`; stderr is appended to
    /// `log`, stdout drained.
    pub fn spawn(dir: &Path, peers: &[String], log: &Path) -> Result<Run, String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| format!("{}: {e}", log.display()))?;
        let mut cmd = std::process::Command::new(huddle_bin());
        cmd.arg("--data-dir")
            .arg(dir)
            .env("HUDDLE_PASSPHRASE_FILE", passphrase_file(dir))
            .arg("--json")
            .args(["run", "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns"])
            .args(["--api", "127.0.0.1:0"]);
        for p in peers {
            cmd.args(["--peer", p]);
        }
        let mut child = Guard(
            cmd.stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::from(log))
                .spawn()
                .map_err(|e| format!("spawn huddle run: {e}"))?,
        );
        let pid = child.0.id();
        let stdout = child.0.stdout.take().ok_or("no stdout")?;
        let (tx, started) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // Only the first line matters; the rest is drained so the
                // child never blocks on a full pipe.
                let _ = tx.send(line);
            }
        });
        Ok(Run {
            child,
            pid,
            started,
        })
    }

    /// The first address it listens on (`/ip4/127.0.0.1/tcp/…/p2p/…`), from
    /// its `started` line.
    pub fn listen_addr(&self, within: Duration) -> Result<String, String> {
        let line = self
            .started
            .recv_timeout(within)
            .map_err(|_| format!("huddle run ({}) did not start within {within:?}", self.pid))?;
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        match v["listen"][0].as_str() {
            Some(a) if !a.is_empty() => Ok(a.to_owned()),
            _ => Err(format!("huddle run printed no listen address: {line}")),
        }
    }
}

/// Waits for the API of the process `pid` serving `dir` (`api.json` in the
/// data directory names its pid: one left by a killed process is not
/// taken) until it answers `GET /v1/status`.
pub fn api_info_of(dir: &Path, pid: u32, within: Duration) -> Result<ApiInfo, String> {
    let d = DataDir::new(dir);
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(Some(info)) = d.api_info() {
            if info.pid == pid && ApiClient::new(info.clone()).status().is_ok() {
                return Ok(info);
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(format!("the API of {pid} did not answer within {within:?}"))
}
