//! Running `ip` and friends for the code that builds network namespaces (the
//! mDNS start-up bench and the mDNS test), so both check the same
//! prerequisites and report a failed command the same way.

use std::process::{Command, Output, Stdio};

/// Runs a command to completion, its stdin closed.
pub fn run(args: &[&str]) -> Result<Output, String> {
    Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", args.join(" ")))
}

/// Runs a command that must succeed; the error names it and quotes its stderr.
pub fn must(args: &[&str]) -> Result<(), String> {
    let out = run(args)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Why this machine cannot create network namespaces, if it cannot: the
/// `ip` command (iproute2) and root are needed.
pub fn missing_prerequisite() -> Option<String> {
    match run(&["ip", "-V"]) {
        Ok(o) if o.status.success() => {}
        _ => return Some("the `ip` command (iproute2) is not installed".into()),
    }
    let uid = run(&["id", "-u"])
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    if uid.as_deref() != Some("0") {
        return Some("creating network namespaces needs root".into());
    }
    None
}
