//! A `huddle run` inside a network namespace the test created, driven by
//! the CLI inside the same namespace (the node's local API is on its
//! loopback): shared by the namespace tests (`net_carrier`, `net_thin_link`).
#![allow(dead_code)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{anyhow, bail, Context};
use serde_json::Value;

use crate::cli_support::{eventually, unlock_env, Device};

#[path = "../../benches/shared/netns.rs"]
pub mod netns;

/// Deletes the namespaces named `<prefix><pid>-…` of an earlier run that
/// was killed before its guard ran (its process is gone), so that a reused
/// pid finds none.
pub fn remove_stale(prefix: &str) {
    let Ok(out) = netns::run(&["ip", "netns", "list"]) else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(pid) = name
            .strip_prefix(prefix)
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = netns::run(&["ip", "netns", "del", name]);
        }
    }
}

/// `huddle --data-dir <dir> --json <args>` inside namespace `ns` (where its
/// running node's local API is), parsed; killed after a minute.
pub fn json_in(ns: &str, dir: &Path, args: &[&str]) -> anyhow::Result<Value> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "timeout", "60"])
        .arg(assert_cmd::cargo::cargo_bin("huddle"))
        .arg("--data-dir")
        .arg(dir)
        .arg("--json")
        .args(args)
        .env_remove("HUDDLE_DATA_DIR")
        .env_remove("RUST_LOG")
        .envs(unlock_env(dir))
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        bail!(
            "huddle {args:?} in {ns} failed: {} {}",
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_slice(&out.stdout).with_context(|| format!("huddle {args:?} printed no JSON"))
}

/// A `huddle run` inside a namespace (`ip netns exec` execs it: the child
/// is the node itself). Killed if dropped; [`InNs::stop`] stops it cleanly.
pub struct InNs {
    child: Child,
    ns: String,
    dir: PathBuf,
    listen: Vec<String>,
}

impl InNs {
    /// Starts `dev`'s node in `ns`, dialing `peers`, with `env` set.
    pub fn start(
        ns: &str,
        dev: &Device,
        peers: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<InNs> {
        let out = dev.dir.with_extension(format!("{ns}.stdout"));
        let err = dev.dir.with_extension(format!("{ns}.stderr"));
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns])
            .arg(assert_cmd::cargo::cargo_bin("huddle"))
            .arg("--data-dir")
            .arg(&dev.dir)
            .args(["--json", "run", "--listen", "/ip4/0.0.0.0/tcp/0"])
            .args(["--no-mdns", "--api", "127.0.0.1:0"])
            .env_remove("HUDDLE_DATA_DIR")
            .env_remove("RUST_LOG")
            .envs(unlock_env(&dev.dir))
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(File::create(&out)?)
            .stderr(File::create(&err)?);
        for p in peers {
            cmd.args(["--peer", p]);
        }
        // The guard first: a node that fails to start is killed too.
        let mut node = InNs {
            child: cmd.spawn()?,
            ns: ns.to_owned(),
            dir: dev.dir.clone(),
            listen: Vec::new(),
        };
        let started = eventually(&format!("{} to start in {ns}", dev.dir.display()), || {
            if let Some(status) = node.child.try_wait()? {
                bail!(
                    "huddle run exited ({status}): {}",
                    std::fs::read_to_string(&err).unwrap_or_default()
                );
            }
            Ok(std::fs::read_to_string(&out)?
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|v| v["event"] == "started"))
        })?;
        node.listen = started["listen"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str().map(str::to_owned))
            .collect();
        Ok(node)
    }

    /// Its listen address on the subnet starting `prefix`.
    pub fn address(&self, prefix: &str) -> anyhow::Result<String> {
        self.listen
            .iter()
            .find(|a| a.starts_with(prefix))
            .cloned()
            .ok_or_else(|| anyhow!("no listen address under {prefix}: {:?}", self.listen))
    }

    pub fn json(&self, args: &[&str]) -> anyhow::Result<Value> {
        json_in(&self.ns, &self.dir, args)
    }

    /// The envelopes its mailbox holds, if the node answers.
    pub fn mailbox(&self) -> Option<u64> {
        self.json(&["whoami"]).ok()?["carrying"]["envelopes"].as_u64()
    }

    /// Its copy of `conversation`'s message with `body`, if it has it.
    pub fn message(&self, conversation: &str, body: &str) -> Option<Value> {
        let history = self.json(&["history", conversation]).ok()?;
        history
            .as_array()?
            .iter()
            .find(|m| m["body"] == body)
            .cloned()
    }

    /// Waits until its copy of `conversation` holds `body`, delivered to
    /// (a receipt from) `to` if given.
    pub fn wait_for(&self, what: &str, conversation: &str, body: &str, to: Option<&Device>) {
        let delivered = |m: &Value| {
            to.is_none_or(|d| {
                m["delivered_to"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|x| x == d.member.as_str()))
            })
        };
        eventually(what, || {
            Ok(self.message(conversation, body).filter(delivered).map(drop))
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", self.log()));
    }

    /// The tail of its log, for a failure's message.
    pub fn log(&self) -> String {
        let err = self.dir.with_extension(format!("{}.stderr", self.ns));
        let text = std::fs::read_to_string(err).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        format!(
            "--- {} in {} ---\n{}",
            self.dir.display(),
            self.ns,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    }

    /// SIGTERM, and waits for the clean shutdown (store flushed).
    pub fn stop(mut self) -> anyhow::Result<()> {
        netns::must(&["kill", "-TERM", &self.child.id().to_string()]).map_err(|e| anyhow!(e))?;
        let what = format!("{} to stop in {}", self.dir.display(), self.ns);
        let status = eventually(&what, || Ok(self.child.try_wait()?))?;
        if !status.success() {
            bail!("it did not stop cleanly ({status})\n{}", self.log());
        }
        Ok(())
    }
}

impl Drop for InNs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
