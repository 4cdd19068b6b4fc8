//! Helpers shared by the `cli_*` tests: run the real `huddle` binary against
//! a data directory, read its JSON, start `huddle run` processes that are
//! killed when the test ends, and wait for a condition with a deadline.
//!
//! Every node started here listens on 127.0.0.1 only, with `--no-mdns`.
#![allow(dead_code)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context};
use assert_cmd::Command;
use serde_json::Value;

/// How long any condition in these tests may take to become true.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// `huddle --data-dir <dir>`, isolated from the environment, with the
/// directory's passphrase ([`unlock_env`]).
pub fn huddle(dir: &Path) -> Command {
    let mut c = Command::cargo_bin("huddle").expect("the huddle binary is built");
    c.arg("--data-dir")
        .arg(dir)
        .env_remove("HUDDLE_DATA_DIR")
        .env_remove("RUST_LOG")
        .envs(unlock_env(dir))
        .timeout(Duration::from_secs(60));
    c
}

/// The store of a data directory the CLI made, unlocked as the CLI does.
pub fn open_store(dir: &Path) -> anyhow::Result<huddle::store::SledStore> {
    let dir = huddle::datadir::DataDir::with_passphrase(
        dir,
        huddle::datadir::Passphrase::File(passphrase_file(dir)),
    );
    Ok(dir.open_store()??)
}

/// The passphrase file of the data directory `dir` in these tests (beside
/// it, as `<dir>.passphrase`), written on first use.
pub fn passphrase_file(dir: &Path) -> PathBuf {
    let path = dir.with_extension("passphrase");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    if let Ok(mut f) = options.open(&path) {
        std::io::Write::write_all(&mut f, b"a test passphrase\n").expect("write the passphrase");
    }
    path
}

/// What a `huddle` process on `dir` is given to unlock it: its passphrase
/// file (so `init` encrypts the directory and every command opens it), and
/// Argon2id's cheapest parameters (honoured by debug builds only: the suite
/// starts hundreds of processes).
pub fn unlock_env(dir: &Path) -> [(&'static str, std::ffi::OsString); 2] {
    [
        (
            "HUDDLE_PASSPHRASE_FILE",
            passphrase_file(dir).into_os_string(),
        ),
        ("HUDDLE_TEST_FAST_KDF", "1".into()),
    ]
}

/// Runs `huddle --json <args>` and parses its stdout.
pub fn json(dir: &Path, args: &[&str]) -> anyhow::Result<Value> {
    let out = huddle(dir).arg("--json").args(args).output()?;
    if !out.status.success() {
        // The error is `{"error": …}` on stdout; notes stay on stderr.
        bail!(
            "huddle {args:?} failed: {} {}",
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_slice(&out.stdout).with_context(|| format!("huddle {args:?} printed no JSON"))
}

/// Runs `huddle <args>`, expecting success; returns stdout trimmed.
pub fn ok(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = huddle(dir).args(args).output()?;
    if !out.status.success() {
        bail!(
            "huddle {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

/// Runs `huddle <args>`, expecting failure; returns stderr.
pub fn fails(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = huddle(dir).args(args).output()?;
    if out.status.success() {
        bail!("huddle {args:?} succeeded but should have failed");
    }
    Ok(String::from_utf8(out.stderr)?)
}

/// One device: its data directory and ids.
#[derive(Clone, Debug)]
pub struct Device {
    pub dir: PathBuf,
    pub device: String,
    pub member: String,
}

/// `huddle init` in `root/<slug>` (encrypted, with [`passphrase_file`]).
pub fn init(root: &Path, slug: &str, name: &str, roles: &[&str]) -> anyhow::Result<Device> {
    init_with(root, slug, name, roles, &[])
}

/// [`init`] with more `init` arguments.
pub fn init_with(
    root: &Path,
    slug: &str,
    name: &str,
    roles: &[&str],
    extra: &[&str],
) -> anyhow::Result<Device> {
    let dir = root.join(slug);
    let mut args = vec!["init", "--name", name];
    for r in roles {
        args.extend(["--role", r]);
    }
    args.extend(extra);
    ok(&dir, &args)?;
    let me = json(&dir, &["whoami"])?;
    Ok(Device {
        dir,
        device: me["device"]
            .as_str()
            .ok_or(anyhow!("no device id"))?
            .to_owned(),
        member: me["member"]
            .as_str()
            .ok_or(anyhow!("no member id"))?
            .to_owned(),
    })
}

/// Admits `who` on the administrator's device and installs the token.
pub fn admit(admin: &Device, who: &Device, name: &str, roles: &[&str]) -> anyhow::Result<()> {
    let mut args = vec![
        "team",
        "admit",
        &who.device,
        "--name",
        name,
        "--member",
        &who.member,
    ];
    for r in roles {
        args.extend(["--role", r]);
    }
    let token = ok(&admin.dir, &args)?;
    ok(&who.dir, &["team", "join", &token])?;
    Ok(())
}

/// A `huddle run` process, killed when dropped.
pub struct Running {
    child: Child,
    /// Its `started` event (JSON).
    pub started: Value,
    pub listen: Vec<String>,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    /// Starts `huddle --json run` on loopback without mDNS, dialing `peers`,
    /// and waits until it reports its listen addresses.
    pub fn start(dev: &Device, peers: &[String]) -> anyhow::Result<Running> {
        let mut running = Running::spawn(dev, peers)?;
        running.wait_started()?;
        Ok(running)
    }

    /// Starts `huddle --json run` as [`Running::start`] does, without
    /// waiting for it.
    pub fn spawn(dev: &Device, peers: &[String]) -> anyhow::Result<Running> {
        Running::spawn_with(dev, peers, &[])
    }

    /// [`Running::spawn`] with more `huddle run` arguments.
    pub fn spawn_with(dev: &Device, peers: &[String], extra: &[&str]) -> anyhow::Result<Running> {
        Running::spawn_env(dev, peers, extra, &[])
    }

    /// [`Running::spawn_with`] with environment variables set.
    pub fn spawn_env(
        dev: &Device,
        peers: &[String],
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Running> {
        let err_path = dev.dir.with_extension("stderr");
        let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("huddle"));
        cmd.arg("--data-dir")
            .arg(&dev.dir)
            .args([
                "--json",
                "run",
                "--listen",
                "/ip4/127.0.0.1/tcp/0",
                "--no-mdns",
                "--api",
                "127.0.0.1:0",
            ])
            .env_remove("HUDDLE_DATA_DIR")
            .env_remove("RUST_LOG")
            .envs(unlock_env(&dev.dir))
            .stdin(Stdio::null())
            .stdout(File::create(dev.dir.with_extension("stdout"))?)
            .stderr(File::create(&err_path)?);
        for p in peers {
            cmd.args(["--peer", p]);
        }
        cmd.args(extra);
        cmd.envs(env.iter().copied());
        Ok(Running {
            child: cmd.spawn()?,
            started: Value::Null,
            listen: Vec::new(),
            stdout: dev.dir.with_extension("stdout"),
            stderr: err_path,
        })
    }

    /// Waits until the node reports its listen addresses; fails at once if
    /// it exits instead.
    pub fn wait_started(&mut self) -> anyhow::Result<()> {
        self.started = eventually("the node to start", || {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(anyhow!(
                    "huddle run exited ({status}): {} {}",
                    std::fs::read_to_string(&self.stdout).unwrap_or_default(),
                    std::fs::read_to_string(&self.stderr).unwrap_or_default()
                ));
            }
            let text = std::fs::read_to_string(&self.stdout)?;
            let started = text
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|v| v["event"] == "started");
            Ok(started)
        })?;
        self.listen = self.started["listen"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        Ok(())
    }

    /// Its exit status once it has exited by itself (`None` while it runs).
    pub fn exited(&mut self) -> anyhow::Result<Option<std::process::ExitStatus>> {
        Ok(self.child.try_wait()?)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

/// Polls `f` until it returns `Ok(Some(_))`, fails, or [`DEADLINE`] passes.
pub fn eventually<T>(
    what: &str,
    mut f: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = f()? {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {DEADLINE:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An HTTP answer: status, head and body.
pub struct Http {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Http {
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }
}

/// One HTTP/1.1 request to `url` (`http://host:port/path`) on its own
/// connection, read to the end.
pub fn http(method: &str, url: &str, headers: &[(&str, &str)], body: &str) -> anyhow::Result<Http> {
    use std::io::{Read, Write};
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("not an http URL: {url}"))?;
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let mut s = std::net::TcpStream::connect(host)?;
    s.set_read_timeout(Some(DEADLINE))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes())?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("no complete answer from {url}"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("no status line from {url}"))?;
    Ok(Http {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    })
}

/// Signs in to a running node's screen with a fresh `huddle open --print`
/// link: the screen's origin, its `Cookie` header value and CSRF token.
pub fn screen_session(dev: &Device) -> anyhow::Result<(String, String, String)> {
    let url = ok(&dev.dir, &["open", "--print"])?;
    let origin = url[..url
        .find("/login")
        .ok_or_else(|| anyhow!("no login path: {url}"))?]
        .to_owned();
    let login = http("GET", &url, &[], "")?;
    ensure!(
        login.status == 303,
        "the login link answered {}",
        login.status
    );
    let cookie = login
        .header("set-cookie")
        .ok_or_else(|| anyhow!("no session cookie"))?
        .split(';')
        .next()
        .unwrap_or_default()
        .to_owned();
    let session = http(
        "GET",
        &format!("{origin}/web/session"),
        &[("Cookie", &cookie)],
        "",
    )?;
    let v: Value = serde_json::from_str(&session.body)?;
    let csrf = v["csrf"]
        .as_str()
        .ok_or_else(|| anyhow!("no CSRF token: {v}"))?
        .to_owned();
    Ok((origin, cookie, csrf))
}
