//! The data directory's lock policy, through the real binary (issue 20,
//! item 1): `huddle run` started together with a short-lived command
//! starts every time, and the command answers every time, never "locked";
//! `peers`, which needs a node, never takes the store at all.
//!
//! Nodes listen on 127.0.0.1 only, with `--no-mdns`.
#![cfg(feature = "cli")]

mod cli_support;

use cli_support::{huddle, init, ok, Device, Running};
use serde_json::Value;

/// Ana, administrator of her own team, with one role channel.
fn ana(root: &std::path::Path) -> anyhow::Result<Device> {
    let ana = init(root, "ana", "Ana Silva", &["nurse"])?;
    ok(&ana.dir, &["team", "create", "Ward 7"])?;
    ok(&ana.dir, &["chat", "new", "--role", "nurse"])?;
    Ok(ana)
}

#[test]
fn run_and_chats_started_together_both_succeed_20_times() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let ana = ana(root.path())?;
    for round in 0..20 {
        let mut node = Running::spawn(&ana, &[])?;
        let chats = huddle(&ana.dir).args(["--json", "chats"]).output()?;
        let stderr = String::from_utf8_lossy(&chats.stderr);
        assert!(
            chats.status.success(),
            "round {round}: `chats` failed ({}): {stderr}",
            chats.status
        );
        let list: Value = serde_json::from_slice(&chats.stdout)?;
        assert_eq!(
            list.as_array().map(Vec::len),
            Some(1),
            "round {round}: {list}"
        );
        assert!(!stderr.contains("locked"), "round {round}: {stderr}");
        node.wait_started()
            .map_err(|e| anyhow::anyhow!("round {round}: {e}"))?;
        assert!(
            !node.stderr().contains("locked"),
            "round {round}: {}",
            node.stderr()
        );
    }
    Ok(())
}

#[test]
fn peers_never_keeps_a_node_from_starting() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let ana = ana(root.path())?;
    for round in 0..10 {
        let mut node = Running::spawn(&ana, &[])?;
        let peers = huddle(&ana.dir).args(["--json", "peers"]).output()?;
        let stdout: Value = serde_json::from_slice(&peers.stdout)?;
        match peers.status.code() {
            // The node answered: no peers on loopback.
            Some(0) => assert_eq!(stdout, serde_json::json!([]), "round {round}"),
            // It had not taken the data directory yet: said plainly.
            Some(4) => assert!(
                stdout["error"]
                    .as_str()
                    .is_some_and(|e| e.starts_with("no node is running")),
                "round {round}: {stdout}"
            ),
            other => panic!("round {round}: `peers` exited with {other:?}: {stdout}"),
        }
        node.wait_started()
            .map_err(|e| anyhow::anyhow!("round {round}: {e}"))?;
    }
    Ok(())
}

/// `huddle run` on loopback, without mDNS, on a free API port.
const RUN: [&str; 6] = [
    "run",
    "--no-mdns",
    "--listen",
    "/ip4/127.0.0.1/tcp/0",
    "--api",
    "127.0.0.1:0",
];

#[test]
fn a_second_node_is_told_who_holds_the_data_directory() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let ana = ana(root.path())?;
    let first = Running::start(&ana, &[])?;
    let second = huddle(&ana.dir).args(RUN).output()?;
    assert_eq!(second.status.code(), Some(4));
    let stderr = String::from_utf8_lossy(&second.stderr);
    let pid = first.pid();
    assert!(
        stderr.contains(&format!("(pid {pid})")) && stderr.contains("already running"),
        "{stderr}"
    );
    Ok(())
}

#[test]
fn the_lock_error_names_a_holder_that_had_not_written_its_pid_yet() -> anyhow::Result<()> {
    use std::io::{BufRead, BufReader, Write};
    let root = tempfile::tempdir()?;
    let ana = ana(root.path())?;
    // A holder caught between taking the lock and writing its pid, as a
    // command started at the same moment finds it.
    let mut lock = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(ana.dir.join("huddle.lock"))?;
    lock.try_lock()?;
    let mut run = std::process::Command::new(assert_cmd::cargo::cargo_bin("huddle"))
        .arg("--data-dir")
        .arg(&ana.dir)
        .args(RUN)
        .env_remove("RUST_LOG")
        .envs(cli_support::unlock_env(&ana.dir))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let mut stderr = BufReader::new(run.stderr.take().expect("piped"));
    let mut told = String::new();
    stderr.read_line(&mut told)?;
    // Once it waits, the holder writes its pid (and holds on).
    if told.starts_with("waiting for another huddle command") {
        writeln!(lock, "{}", std::process::id())?;
    }
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest)?;
    let status = run.wait()?;
    assert_eq!(status.code(), Some(4), "{told}{rest}");
    assert!(
        rest.contains(&format!(
            "locked by another huddle process (pid {})",
            std::process::id()
        )),
        "{told}{rest}"
    );
    Ok(())
}
