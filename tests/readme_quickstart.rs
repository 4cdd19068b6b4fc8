//! The README's quickstart, run block by block as a new user would (issue
//! 20): Ana's and Ben's laptops are two data directories, Ben also gets a
//! second device, and every `sh` block of the section runs as written, with
//! only its placeholders (`12D3KooW…`, `5f0c…`, `HUDDLE1:…`, `9c1b2e`) filled
//! in. The one liberty: `huddle run` listens on loopback with mDNS off and
//! Ben's node is given Ana's address (tests carry no multicast).
#![cfg(feature = "cli")]

mod cli_support;

use std::process::Stdio;

use anyhow::{anyhow, bail, ensure};
use cli_support::{eventually, huddle, json, Device, Running};

/// The `sh` blocks of the README's quickstart section, each as its lines.
fn quickstart_blocks() -> Vec<Vec<String>> {
    let readme = include_str!("../README.md");
    let start = readme.find("## Quickstart").expect("a quickstart section");
    let section = &readme[start..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |e| e + 3)];
    let mut blocks = Vec::new();
    let mut current: Option<Vec<String>> = None;
    for line in section.lines() {
        match (line.trim(), current.as_mut()) {
            ("```sh", None) => current = Some(Vec::new()),
            ("```", Some(_)) => blocks.extend(current.take()),
            (l, Some(b)) if !l.is_empty() => b.push(l.to_owned()),
            _ => {}
        }
    }
    blocks
}

/// One line of a block: the words of its `huddle` command (double quotes
/// honoured, a `# comment` dropped) and, for `cat FILE | huddle …`, the file.
fn parse(line: &str) -> anyhow::Result<(Option<String>, Vec<String>)> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut quoted = false;
    for ch in line.chars() {
        match ch {
            '"' => {
                quoted = !quoted;
                word.get_or_insert_with(String::new);
            }
            '#' if !quoted && word.is_none() => break,
            c if c.is_whitespace() && !quoted => words.extend(word.take()),
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    let (stdin, words) = match words.iter().position(|w| w == "|") {
        Some(i) if words.first().map(String::as_str) == Some("cat") && i == 2 => {
            (Some(words[1].clone()), words[3..].to_vec())
        }
        Some(_) => bail!("a pipe other than `cat FILE | huddle …`: {line}"),
        None => (None, words),
    };
    ensure!(
        words.first().map(String::as_str) == Some("huddle"),
        "not a huddle command: {line}"
    );
    Ok((stdin, words[1..].to_vec()))
}

/// What the placeholders stand for, filled in as the walk learns them.
#[derive(Default)]
struct Filled {
    ben: Option<Device>,
    ben2: Option<Device>,
    token: Option<String>,
    urgent: Option<String>,
}

impl Filled {
    fn fill(&self, word: &str) -> anyhow::Result<String> {
        let need = |v: Option<&String>, what: &str| {
            v.cloned()
                .ok_or_else(|| anyhow!("the README uses {what} before the walk knows it"))
        };
        Ok(match word {
            "12D3KooW…second-device" => need(self.ben2.as_ref().map(|d| &d.device), word)?,
            "12D3KooW…" => need(self.ben.as_ref().map(|d| &d.device), word)?,
            "5f0c…" => need(self.ben.as_ref().map(|d| &d.member), word)?,
            "HUDDLE1:…" => need(self.token.as_ref(), word)?,
            "9c1b2e" => need(self.urgent.as_ref(), word)?,
            w if w.contains('…') => bail!("an unknown placeholder in the README: {w}"),
            w => w.to_owned(),
        })
    }
}

/// Runs one README line on the device at `dir`; returns its stdout.
fn run(dir: &std::path::Path, line: &str, filled: &Filled) -> anyhow::Result<String> {
    let (stdin, words) = parse(line)?;
    let args = words
        .iter()
        .map(|w| filled.fill(w))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut cmd = huddle(dir);
    cmd.args(&args);
    if let Some(file) = stdin {
        ensure!(file == "handover.txt", "an unexpected file: {file}");
        cmd.write_stdin("Handover: bed 4 settled, obs due at 06:00\n");
    }
    let out = cmd.output()?;
    let stdout = String::from_utf8(out.stdout)?;
    ensure!(
        out.status.success(),
        "`{line}` failed: {}{}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(stdout.trim().to_owned())
}

fn device(dir: std::path::PathBuf) -> anyhow::Result<Device> {
    let me = json(&dir, &["whoami"])?;
    let id = |k: &str| me[k].as_str().map(str::to_owned).ok_or(anyhow!("no {k}"));
    Ok(Device {
        device: id("device")?,
        member: id("member")?,
        dir,
    })
}

/// `block` as the lines `want` start with, in order.
fn expect(block: &[String], want: &[&str]) -> anyhow::Result<()> {
    ensure!(
        block.len() == want.len() && block.iter().zip(want).all(|(l, w)| l.starts_with(w)),
        "the README's block changed: {block:?} (the walk expects {want:?})"
    );
    Ok(())
}

#[test]
fn the_readme_quickstart_works_block_by_block() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let (ana, ben, ben2) = (
        tmp.path().join("ana"),
        tmp.path().join("ben"),
        tmp.path().join("ben2"),
    );
    let mut f = Filled::default();
    let b = quickstart_blocks();
    ensure!(
        b.len() == 8,
        "the quickstart has {} sh blocks, the walk knows 8",
        b.len()
    );

    // Ana's laptop holds the team key; Ben's laptop.
    expect(
        &b[0],
        &["huddle init --name \"Ana Silva\"", "huddle team create"],
    )?;
    for line in &b[0] {
        run(&ana, line, &f)?;
    }
    expect(&b[1], &["huddle init --name \"Ben Okafor\""])?;
    run(&ben, &b[1][0], &f)?;
    f.ben = Some(device(ben.clone())?);

    // Ana admits Ben; Ben's second device, after its own `init` (prose),
    // is admitted with the member id Ben already has.
    expect(
        &b[2],
        &["huddle team admit 12D3KooW… --name \"Ben Okafor\""],
    )?;
    let ben_token = run(&ana, &b[2][0], &f)?;
    run(&ben2, &b[1][0], &f)?;
    f.ben2 = Some(device(ben2.clone())?);
    expect(&b[3], &["huddle team admit 12D3KooW…second-device"])?;
    let ben2_token = run(&ana, &b[3][0], &f)?;

    expect(&b[4], &["huddle team join HUDDLE1:…"])?;
    for (dir, token) in [(&ben, ben_token), (&ben2, ben2_token)] {
        f.token = Some(token);
        run(dir, &b[4][0], &f)?;
    }
    // A node on each laptop.
    expect(&b[5], &["huddle run"])?;
    let ana_dev = device(ana.clone())?;
    let a = Running::start(&ana_dev, &[])?;
    let _b = Running::start(f.ben.as_ref().expect("known"), &a.listen)?;
    let _b2 = Running::start(f.ben2.as_ref().expect("known"), &a.listen)?;
    // Ben's second device is Ben, not a second person.
    eventually("Ana to know Ben as one member with two devices", || {
        let shown = json(&ana, &["team", "show"])?;
        let members = shown["members"].as_array().cloned().unwrap_or_default();
        let bens: Vec<_> = members
            .iter()
            .filter(|m| m["name"] == "Ben Okafor")
            .collect();
        ensure!(bens.len() <= 1, "Ben is two members: {shown}");
        let devices = bens
            .first()
            .and_then(|b| b["devices"].as_array())
            .map_or(0, Vec::len);
        Ok((devices == 2).then_some(()))
    })?;

    // Talking, on Ana's laptop.
    expect(
        &b[6],
        &[
            "huddle chat new --with \"Ben Okafor\"",
            "huddle send \"Ben Okafor\"",
            "huddle chat new --role charge-nurse",
            "cat handover.txt | huddle send \"#charge-nurse\" -",
            "huddle chat new --group",
            "huddle chats",
            "huddle peers",
        ],
    )?;
    for line in &b[6] {
        run(&ana, line, &f)?;
    }

    // On Ben's laptop: the 1:1 as it comes, then the acknowledgement by the
    // id prefix history shows.
    expect(
        &b[7],
        &["huddle history \"Ana Silva\" --follow", "huddle ack 9c1b2e"],
    )?;
    let (_, words) = parse(&b[7][0])?;
    let out = tmp.path().join("follow.out");
    let mut follow = std::process::Command::new(assert_cmd::cargo::cargo_bin("huddle"))
        .arg("--data-dir")
        .arg(&ben)
        .args(&words)
        .env_remove("HUDDLE_DATA_DIR")
        .env_remove("RUST_LOG")
        .envs(cli_support::unlock_env(&ben))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out)?)
        .stderr(Stdio::null())
        .spawn()?;
    let seen = eventually("Ben's history to show the urgent message", || {
        let text = std::fs::read_to_string(&out)?;
        Ok(text
            .lines()
            .find(|l| l.contains("URGENT") && l.contains("Can you review bed 4?"))
            .map(str::to_owned))
    });
    let _ = follow.kill();
    let _ = follow.wait();
    let seen = seen?;
    let id = seen
        .rsplit('[')
        .next()
        .and_then(|s| s.strip_suffix(']'))
        .ok_or_else(|| anyhow!("no message id in {seen:?}"))?;
    f.urgent = Some(id.trim_start_matches('…').to_owned());
    let acked = run(&ben, &b[7][1], &f)?;
    ensure!(acked.contains("Acknowledged"), "{acked}");
    eventually("Ana to see Ben's acknowledgement", || {
        let h = run(&ana, "huddle history \"Ben Okafor\"", &f)?;
        Ok(h.contains("acknowledged by Ben Okafor").then_some(()))
    })?;

    Ok(())
}
