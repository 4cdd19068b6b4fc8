//! `huddle run` child processes: spawning, their API, and /proc figures.

use super::*;

/// Child processes, stopped (SIGTERM, then SIGKILL after 10 s) when dropped.
#[derive(Default)]
pub(crate) struct Procs {
    pub(crate) children: Vec<Child>,
}

impl Procs {
    pub(crate) fn stop_all(&mut self) {
        for c in &self.children {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .stderr(Stdio::null())
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for c in &mut self.children {
            loop {
                match c.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    _ => {
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                }
            }
        }
        self.children.clear();
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// The release `huddle` binary cargo built for this bench, or `HUDDLE_BIN`.
pub(crate) fn huddle_bin() -> PathBuf {
    std::env::var_os("HUDDLE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_huddle")))
}

/// Starts `huddle run` on `dir`; returns the child and its listen address
/// (from the `started` line of `--json`). The rest of stdout is drained.
pub(crate) fn spawn_run(dir: &Path, peers: &[String], procs: &mut Procs) -> String {
    spawn_run_env(dir, peers, &[], procs)
}

/// [`spawn_run`] with environment variables set (a passphrase file).
pub(crate) fn spawn_run_env(
    dir: &Path,
    peers: &[String],
    env: &[(&str, &Path)],
    procs: &mut Procs,
) -> String {
    let log = std::fs::File::create(dir.join("run.log")).expect("log file");
    let mut cmd = std::process::Command::new(huddle_bin());
    cmd.arg("--data-dir")
        .arg(dir)
        .arg("--json")
        .args(["run", "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns"])
        .args(["--api", "127.0.0.1:0"]);
    for p in peers {
        cmd.args(["--peer", p]);
    }
    cmd.envs(env.iter().copied());
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn huddle run");
    let stdout = child.stdout.take().expect("stdout");
    procs.children.push(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(t) = tx.take() {
                let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
                let addr = v["listen"][0].as_str().unwrap_or_default().to_owned();
                let _ = t.send(addr);
            }
        }
    });
    rx.recv_timeout(DEADLINE).expect("huddle run started")
}

/// Waits for the API of the process `pid` serving `dir`, and connects.
pub(crate) fn api_of(dir: &Path, pid: u32, limit: Duration) -> Option<ApiClient> {
    let d = DataDir::new(dir);
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(info)) = d.api_info() {
            if info.pid == pid {
                let c = ApiClient::new(info);
                if c.status().is_ok() {
                    return Some(c);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    None
}

pub(crate) fn proc_status(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// utime + stime in seconds.
pub(crate) fn proc_cpu_secs(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / clk_tck())
}

pub(crate) fn clk_tck() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}
