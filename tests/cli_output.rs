//! What the binary prints, for a script as much as for a person (issue 20,
//! items 2, 9 and 10): a reader that leaves early (`| head -1`) ends the
//! output quietly; an error is one sentence on a terminal and one
//! `{"error": …}` under `--json`, with the README's exit codes; logs carry
//! no colour codes when stderr is not a terminal.
#![cfg(feature = "cli")]

mod cli_support;

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use cli_support::{huddle, init, ok, Device};
use huddle::api::types::ErrorBody;

/// Ana, administrator of her own team, with a role channel holding more
/// history than a pipe buffers (so that its reader can leave mid-way).
fn ana_with_history(root: &std::path::Path) -> anyhow::Result<Device> {
    let ana = init(root, "ana", "Ana Silva", &["nurse"])?;
    ok(&ana.dir, &["team", "create", "Ward 7"])?;
    ok(&ana.dir, &["chat", "new", "--role", "nurse"])?;
    let body = "handover note ".repeat(800);
    for _ in 0..12 {
        ok(&ana.dir, &["send", "nurse", &body])?;
    }
    Ok(ana)
}

fn binary() -> std::process::Command {
    let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("huddle"));
    c.env_remove("HUDDLE_DATA_DIR").env_remove("RUST_LOG");
    c
}

/// Exit status and stderr of a child whose stdout reader has left.
fn assert_quiet_after_reader_left(status: std::process::ExitStatus, stderr: &str) {
    assert_eq!(status.code(), Some(0), "{status}: {stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.to_lowercase().contains("broken pipe"),
        "{stderr}"
    );
}

#[test]
fn history_into_head_exits_quietly() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let ana = ana_with_history(root.path())?;
    // `huddle --json history nurse | head -1`
    let mut child = binary()
        .arg("--data-dir")
        .arg(&ana.dir)
        .envs(cli_support::unlock_env(&ana.dir))
        .args(["--json", "history", "nurse"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("piped")).read_line(&mut first)?;
    assert_eq!(first.trim(), "[");
    // The reader is gone; the rest (more than a pipe holds) finds no one.
    let out = child.wait_with_output()?;
    assert_quiet_after_reader_left(out.status, &String::from_utf8_lossy(&out.stderr));
    Ok(())
}

#[test]
fn completions_into_a_closed_pipe_exit_quietly() -> anyhow::Result<()> {
    // `huddle completions zsh | head` with head already gone.
    let (reader, writer) = std::io::pipe()?;
    drop(reader);
    let out = binary()
        .args(["completions", "zsh"])
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()?;
    assert_quiet_after_reader_left(out.status, &String::from_utf8_lossy(&out.stderr));
    Ok(())
}

/// `huddle --json <args>`: exit code, the error sentence (stdout must be
/// exactly one `{"error": …}`), stderr.
fn json_error(dev: &Device, args: &[&str]) -> anyhow::Result<(i32, String, String)> {
    let out = huddle(&dev.dir).arg("--json").args(args).output()?;
    let stdout = String::from_utf8(out.stdout)?;
    let body: ErrorBody = serde_json::from_str(&stdout)
        .map_err(|e| anyhow::anyhow!("{args:?}: stdout is not an error body ({e}): {stdout:?}"))?;
    assert_eq!(stdout.trim().lines().count(), 1, "{stdout}");
    Ok((
        out.status.code().unwrap_or(-1),
        body.error,
        String::from_utf8(out.stderr)?,
    ))
}

#[test]
fn json_errors_are_json_with_documented_exit_codes() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let ana = init(root.path(), "ana", "Ana Silva", &["nurse"])?;
    ok(&ana.dir, &["team", "create", "Ward 7"])?;

    // An empty answer is an answer...
    let empty = huddle(&ana.dir).args(["--json", "chats"]).output()?;
    assert_eq!(empty.status.code(), Some(0));
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&empty.stdout)?,
        serde_json::json!([])
    );

    // ...and an error is told apart from it, by its body and its code.
    let (code, error, stderr) = json_error(&ana, &["history", "Nobody"])?;
    assert_eq!(code, 3, "{error}");
    assert!(error.starts_with("no conversation \"Nobody\""), "{error}");
    assert!(!stderr.contains("error:"), "said twice: {stderr}");

    let (code, error, _) = json_error(&ana, &["peers"])?;
    assert_eq!(code, 4, "{error}");
    assert!(error.starts_with("no node is running on "), "{error}");

    // Arguments that cannot mean anything: ours and clap's alike.
    let (code, error, _) = json_error(&ana, &["team", "admit", "not-a-device", "--name", "X"])?;
    assert_eq!(code, 2, "{error}");
    assert!(error.contains("is not a device id"), "{error}");
    let (code, error, _) = json_error(&ana, &["history", "--no-such-flag"])?;
    assert_eq!(code, 2, "{error}");
    assert!(error.contains("--no-such-flag"), "{error}");

    let (code, error, _) = json_error(&ana, &["team", "join", "not-a-token"])?;
    assert_eq!(code, 1, "{error}");

    // On a terminal, the same error is one sentence on stderr.
    let out = huddle(&ana.dir).args(["history", "Nobody"]).output()?;
    assert_eq!(out.status.code(), Some(3));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8(out.stderr)?;
    assert!(
        stderr.starts_with("error: no conversation \"Nobody\""),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    Ok(())
}

#[test]
fn logs_into_a_file_carry_no_colour_codes() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let ana = init(root.path(), "ana", "Ana Silva", &["nurse"])?;
    ok(&ana.dir, &["team", "create", "Ward 7"])?;
    let out = huddle(&ana.dir)
        .args(["chats"])
        .env("RUST_LOG", "debug")
        .output()?;
    assert!(out.status.success());
    let stderr = String::from_utf8(out.stderr)?;
    assert!(stderr.contains("DEBUG"), "nothing was logged: {stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "colour codes in a pipe: {stderr:?}"
    );
    Ok(())
}
