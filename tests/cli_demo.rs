//! `huddle demo --exit` tells its whole story (a ward on 127.0.0.1, no mDNS)
//! and proves identical histories on every device.
#![cfg(feature = "cli")]

mod cli_support;

use std::time::Duration;

#[test]
fn the_demo_story_ends_with_identical_histories() -> anyhow::Result<()> {
    let out = assert_cmd::Command::cargo_bin("huddle")?
        .args(["--json", "demo", "--exit", "--nodes", "3"])
        .env_remove("RUST_LOG")
        .timeout(Duration::from_secs(120))
        .output()?;
    let story = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{story}");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(summary["identical"], true, "{summary}");
    assert_eq!(summary["nodes"], 3);
    for c in summary["conversations"].as_array().expect("conversations") {
        let devices = c["devices"].as_array().expect("devices");
        assert!(devices.len() >= 2, "{c}");
        assert!(
            devices.iter().all(|d| d["digest"] == devices[0]["digest"]),
            "{c}"
        );
    }
    assert!(story.contains("merged in"), "{story}");
    Ok(())
}

/// Left running (on a terminal: `script` gives it one), the demo prints
/// Ana's and Ben's one-time screen links, and each signs a browser in to
/// that device's screen; Ctrl-C stops it cleanly.
#[test]
fn the_running_demo_prints_a_screen_link_per_device() -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let bin = assert_cmd::cargo::cargo_bin("huddle");
    let mut demo = std::process::Command::new("script")
        .args([
            "-qfec",
            &format!("exec {} demo --nodes 3", bin.display()),
            "/dev/null",
        ])
        .env_remove("RUST_LOG")
        // `script` runs the command with $SHELL; dash (CI's /bin/sh) dies of
        // the Ctrl-C itself unless `exec` hands the terminal to the demo.
        .env("SHELL", "/bin/sh")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let mut out = demo.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let mut buf = [0u8; 4096];
        let mut told = false;
        loop {
            match out.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => text.push_str(&String::from_utf8_lossy(&buf[..n])),
            }
            if !told && text.contains("Press Ctrl-C") {
                told = true;
                let _ = tx.send(text.clone());
            }
        }
        let _ = tx.send(text);
    });
    let story = rx.recv_timeout(Duration::from_secs(120))?;
    let links: Vec<&str> = story
        .split_whitespace()
        .filter(|w| w.starts_with("http://127.0.0.1:") && w.contains("/login?t="))
        .collect();
    let signed_in = links
        .first()
        .map(|url| cli_support::http("GET", url, &[], ""))
        .transpose();
    // Ctrl-C on its terminal.
    demo.stdin.as_mut().expect("piped").write_all(b"\x03")?;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let stopped = loop {
        if let Some(status) = demo.try_wait()? {
            break Some(status);
        }
        if std::time::Instant::now() >= deadline {
            let _ = demo.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(links.len(), 2, "Ana's and Ben's links: {story}");
    let login = signed_in?.expect("a link");
    assert_eq!(login.status, 303);
    assert!(login.header("set-cookie").is_some(), "{}", login.head);
    assert!(
        stopped.is_some_and(|s| s.success()),
        "the demo stops cleanly on Ctrl-C: {stopped:?}"
    );
    Ok(())
}
