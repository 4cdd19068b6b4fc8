//! The ward's screen in a real browser: three real `huddle run` nodes on
//! loopback, Ana's and Ben's pages side by side in headless Chromium
//! (Debian's `/usr/bin/chromium`, driven by playwright-core from
//! `tests/browser/`, which never downloads a browser), checked with
//! axe-core. The checks themselves are in `tests/browser/ward.mjs`; the
//! screenshots land in `target/screens/`.
//!
//! Under `CI=true` a missing browser or Node.js fails this test; elsewhere
//! it says what to install and passes without a browser.

mod cli_support;

use std::path::{Path, PathBuf};
use std::process::Command;

use cli_support::{admit, init, ok, Running};

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// The browser tests' npm packages, installed from the lock file when
/// missing (`.ci/run` installs them first).
fn npm_packages(dir: &Path) -> Result<(), String> {
    if dir.join("node_modules/playwright-core").exists()
        && dir.join("node_modules/axe-core").exists()
    {
        return Ok(());
    }
    let out = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--prefix"])
        .arg(dir)
        .output()
        .map_err(|e| format!("npm could not run ({e})"))?;
    if !out.status.success() {
        return Err(format!(
            "npm ci failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

fn missing(what: &str) {
    if ci() {
        panic!("{what}: under CI=true the browser tests must run (.ci/run installs chromium and the npm packages)");
    }
    eprintln!(
        "SKIPPED the browser tests: {what} (apt install chromium nodejs npm, then run again)"
    );
}

#[test]
fn the_ward_screen_in_a_real_browser() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !Path::new(&chromium).exists() {
        return missing(&format!("no browser at {chromium}"));
    }
    if Command::new("node").arg("--version").output().is_err() {
        return missing("Node.js is not installed");
    }
    let browser_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    if let Err(e) = npm_packages(&browser_dir) {
        return missing(&e);
    }

    let tmp = tempfile::tempdir().unwrap();
    let ana = init(tmp.path(), "ana", "Ana Silva", &["nurse", "charge-nurse"]).unwrap();
    ok(&ana.dir, &["team", "create", "St Mary Ward 7"]).unwrap();
    let ben = init(tmp.path(), "ben", "Ben Okafor", &["physician"]).unwrap();
    let cara = init(tmp.path(), "cara", "Cara Jones", &["nurse"]).unwrap();
    let dan = init(tmp.path(), "dan", "Dan Reyes", &["physician"]).unwrap();
    admit(&ana, &ben, "Ben Okafor", &["physician"]).unwrap();
    admit(&ana, &cara, "Cara Jones", &["nurse"]).unwrap();

    let a = Running::start(&ana, &[]).unwrap();
    let mut b = Running::spawn(&ben, &a.listen).unwrap();
    b.wait_started().unwrap();
    let mut c = Running::spawn_with(&cara, &a.listen, &["--lock-after", "5s"]).unwrap();
    c.wait_started().unwrap();
    let url = |dir: &Path| ok(dir, &["open", "--print"]).unwrap();

    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/screens");
    let out = Command::new("node")
        .arg(browser_dir.join("ward.mjs"))
        .env("ANA_URL", url(&ana.dir))
        .env("BEN_URL", url(&ben.dir))
        .env("CARA_URL", url(&cara.dir))
        .env("HUDDLE", assert_cmd::cargo::cargo_bin("huddle"))
        // Every test directory's passphrase is the same text: Ana's file
        // unlocks Dan's too.
        .envs(cli_support::unlock_env(&ana.dir))
        .env("ANA_DIR", &ana.dir)
        .env("CARA_DIR", &cara.dir)
        .env(
            "CARA_PASSPHRASE_FILE",
            cli_support::passphrase_file(&cara.dir),
        )
        .env("DAN_DIR", &dan.dir)
        .env("DAN_DEVICE", &dan.device)
        .env("SHOTS", &shots)
        .env("CHROMIUM", &chromium)
        .output()
        .expect("node runs");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{said}");
    assert!(
        out.status.success(),
        "the browser checks failed:\n{said}\nAna's node: {}\nBen's node: {}",
        a.stderr(),
        b.stderr()
    );
    // What the screens did is in the audit trail, and Ana's device (it
    // holds the team key) holds Ben's and Cara's: the conversations Ben's
    // screen opened, Cara's screen unlocked.
    let by_screen = |trail: &[serde_json::Value], kind: &str| {
        trail.iter().any(|e| {
            e["action"] == kind
                && e["description"]
                    .as_str()
                    .unwrap_or("")
                    .contains("the screen")
        })
    };
    cli_support::eventually(
        "Ben's and Cara's screens in Ana's copy of their trails",
        || {
            let trails = cli_support::json(&ana.dir, &["audit", "show"])?;
            let trail = |d: &str| -> Vec<serde_json::Value> {
                let t = trails
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|t| t["device"] == d);
                t.and_then(|t| t["entries"].as_array().cloned())
                    .unwrap_or_default()
            };
            let (ben_t, cara_t) = (trail(&ben.device), trail(&cara.device));
            Ok((by_screen(&ben_t, "opened") && by_screen(&cara_t, "unlocked")).then_some(()))
        },
    )
    .unwrap();
    drop((a, b, c));
}
