//! The system around a run: commands, the processes and namespaces still
//! alive (so a signal can clean them up), prerequisites.

use super::*;

/// Namespaces and child pids alive right now, for the signal handler.
pub(crate) struct Live {
    pub(crate) namespaces: Vec<String>,
    pub(crate) pids: Vec<u32>,
}

pub(crate) static LIVE: Mutex<Live> = Mutex::new(Live {
    namespaces: Vec::new(),
    pids: Vec::new(),
});

pub(crate) fn live() -> std::sync::MutexGuard<'static, Live> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn kill_pid(pid: u32) {
    let _ = Process::new("kill")
        .args(["-KILL", &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// On SIGINT or SIGTERM: kill our children (by pid), delete our namespaces,
/// exit.
pub(crate) fn watch_signals() {
    std::thread::spawn(|| {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        let got = rt.block_on(async {
            use tokio::signal::unix::{signal, SignalKind};
            let Ok(mut term) = signal(SignalKind::terminate()) else {
                return false;
            };
            tokio::select! {
                r = tokio::signal::ctrl_c() => r.is_ok(),
                _ = term.recv() => true,
            }
        });
        if got {
            eprintln!("\ninterrupted: stopping the nodes and deleting the namespaces");
            let l = live();
            for pid in &l.pids {
                kill_pid(*pid);
            }
            for n in &l.namespaces {
                let _ = run(&["ip", "netns", "del", n]);
            }
            std::process::exit(130);
        }
    });
}

/// Why this machine cannot run the bench, if it cannot: the shared checks,
/// then a probe namespace actually created and deleted.
pub(crate) fn missing_prerequisite() -> Option<String> {
    if let Some(why) = netns::missing_prerequisite() {
        return Some(why);
    }
    let probe = format!("{NS_PREFIX}{}-probe", std::process::id());
    if let Err(e) = must(&["ip", "netns", "add", &probe]) {
        return Some(format!("cannot create a network namespace ({e})"));
    }
    let _ = run(&["ip", "netns", "del", &probe]);
    None
}

/// Deletes namespaces left by an earlier run of this bench that died
/// without cleaning up (their pid no longer exists). Only ours, by prefix.
pub(crate) fn delete_stale_namespaces() {
    let Ok(out) = run(&["ip", "netns", "list"]) else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(NS_PREFIX) else {
            continue;
        };
        let pid = rest.split('-').next().unwrap_or("");
        if !pid.is_empty()
            && pid.bytes().all(|b| b.is_ascii_digit())
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            println!("deleting stale namespace {name} (its bench, pid {pid}, is gone)");
            let _ = run(&["ip", "netns", "del", name]);
        }
    }
}

pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}
