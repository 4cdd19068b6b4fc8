//! Attachments with real `huddle run` processes on loopback (no mDNS):
//! a 10 MiB photo sent by one node fetched whole by nine others, its
//! location data stripped; a transfer cut halfway resumed, after both
//! nodes restarted, without sending verified chunks again; a device serving chunks that do not verify cut
//! and nothing of it kept; an attachment over the team's limit refused on
//! every device; a small one fetched without asking (protocol/blobs.md).
#![cfg(feature = "cli")]

mod cli_support;

use std::path::{Path, PathBuf};

use cli_support::{admit, eventually, fails, init, json, ok, Device, Running};
use huddle::blobs::BlobHash;
use serde_json::Value;

const MIB: usize = 1024 * 1024;

/// A JPEG of about `len` bytes whose EXIF block holds a GPS marker: SOI,
/// APP1 (Exif), SOF0, SOS, entropy bytes (never 0xFF, so no marker hides
/// in them), EOI.
fn photo(len: usize, seed: u8) -> Vec<u8> {
    let mut d = vec![0xFF, 0xD8];
    let exif = b"Exif\0\0GPS 51.5074N 0.1278W serial CAM-0042";
    d.extend_from_slice(&[0xFF, 0xE1]);
    d.extend_from_slice(&((exif.len() + 2) as u16).to_be_bytes());
    d.extend_from_slice(exif);
    d.extend_from_slice(&[0xFF, 0xC0, 0, 11, 8, 0, 1, 0, 1, 1, 1, 0x11, 0]);
    d.extend_from_slice(&[0xFF, 0xDA, 0, 8, 1, 1, 0, 0, 0x3F, 0]);
    let mut x: u32 = 0x9E37_79B9 ^ u32::from(seed);
    d.extend((0..len).map(|_| {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        (x >> 24) as u8 & 0xFE
    }));
    d.extend_from_slice(&[0xFF, 0xD9]);
    d
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A team of `n` nurses (Ana holds the team key), each device admitted.
fn ward(root: &Path, n: usize) -> anyhow::Result<Vec<Device>> {
    let ana = init(root, "ana", "Ana Silva", &["nurse"])?;
    ok(&ana.dir, &["team", "create", "St Mary Ward 7"])?;
    let mut all = vec![ana];
    for i in 1..n {
        let name = format!("Nurse {i}");
        let d = init(root, &format!("n{i}"), &name, &["nurse"])?;
        admit(&all[0], &d, &name, &["nurse"])?;
        all.push(d);
    }
    Ok(all)
}

/// The newest message in `#nurse` as `dev` sees it, once it has one with
/// an attachment.
fn attached(dev: &Device) -> anyhow::Result<Value> {
    eventually("a message with an attachment", || {
        let h = json(&dev.dir, &["history", "#nurse"]).unwrap_or(Value::Null);
        Ok(h.as_array()
            .and_then(|a| a.last())
            .filter(|m| m["attachments"].is_array())
            .cloned())
    })
}

/// The running node's `GET /v1/status`.
fn status(dev: &Device) -> anyhow::Result<Value> {
    let info = huddle::datadir::DataDir::new(dev.dir.clone())
        .api_info()?
        .ok_or_else(|| anyhow::anyhow!("no api.json: the node is not running"))?;
    Ok(serde_json::to_value(
        huddle::api::client::ApiClient::new(info).status()?,
    )?)
}

/// Sends `file` into `#nurse` from `dev`; returns the message id.
fn send_file(dev: &Device, text: &str, file: &Path) -> anyhow::Result<String> {
    let out = ok(
        &dev.dir,
        &[
            "send",
            "#nurse",
            text,
            "--attach",
            file.to_str().expect("utf-8"),
        ],
    )?;
    Ok(out.trim().to_owned())
}

fn expected_hash(m: &Value) -> String {
    m["attachments"][0]["hash"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn a_photo_sent_by_one_node_is_fetched_whole_by_nine_others() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let devs = ward(tmp.path(), 10)?;
    let a = Running::start(&devs[0], &[])?;
    let mut runs = vec![a];
    for d in &devs[1..] {
        runs.push(Running::start(d, &runs[0].listen)?);
    }
    ok(&devs[0].dir, &["chat", "new", "--role", "nurse"])?;
    let original = photo(10 * MIB, 1);
    let file = tmp.path().join("wound.jpg");
    std::fs::write(&file, &original)?;
    let id = send_file(&devs[0], "Wound on day 3", &file)?;

    let sent = attached(&devs[0])?;
    let hash = expected_hash(&sent);
    assert_eq!(sent["attachments"][0]["name"], "wound.jpg");
    assert_eq!(sent["attachments"][0]["reached"], false);
    // Nine devices fetch at once, each with `huddle fetch`.
    for d in &devs[1..] {
        attached(d)?;
    }
    let fetches: Vec<(PathBuf, std::process::Child)> = devs[1..]
        .iter()
        .map(|d| {
            let out = d.dir.with_extension("got");
            let child = std::process::Command::new(assert_cmd::cargo::cargo_bin("huddle"))
                .arg("--data-dir")
                .arg(&d.dir)
                .args(["fetch", &id, "--out"])
                .arg(&out)
                .env_remove("HUDDLE_DATA_DIR")
                .envs(cli_support::unlock_env(&d.dir))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn huddle fetch");
            (out, child)
        })
        .collect();
    for (out, child) in fetches {
        let o = child.wait_with_output()?;
        assert!(
            o.status.success(),
            "fetch failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let got = std::fs::read(out.join("wound.jpg"))?;
        assert_eq!(
            BlobHash::of(&got).to_hex(),
            hash,
            "the bytes the hash names"
        );
        // What left Ana's device had its location and serial removed, and
        // nothing else: the pixels are the original's.
        assert!(!contains(&got, b"51.5074N") && !contains(&got, b"CAM-0042"));
        assert!(contains(&original, b"51.5074N"));
        assert_eq!(got.len(), original.len() - (2 + 2 + 42));
        assert_eq!(&got[got.len() - 1000..], &original[original.len() - 1000..]);
    }
    // The author's history shows that the photo reached another device.
    eventually("Ana to see her photo reached someone", || {
        let m = attached(&devs[0])?;
        Ok((m["attachments"][0]["reached"] == true).then_some(()))
    })?;
    // Nothing held a file named by the hash.
    for d in &devs {
        for e in std::fs::read_dir(d.dir.join("blobs"))? {
            assert!(!e?.file_name().to_string_lossy().contains(&hash[..16]));
        }
    }
    Ok(())
}

#[test]
fn a_transfer_cut_halfway_resumes_after_a_restart_and_moves_little_more_than_the_blob(
) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let devs = ward(tmp.path(), 2)?;
    let (ana, ben) = (&devs[0], &devs[1]);
    // Ana's node ends itself after 41 blob responses: the outline and 40
    // of the 80 chunks (HUDDLE_BLOB_FAULT, debug builds only).
    let mut a = Running::spawn_env(ana, &[], &[], &[("HUDDLE_BLOB_FAULT", "exit-after:41")])?;
    a.wait_started()?;
    let b = Running::start(ben, &a.listen)?;
    ok(&ana.dir, &["chat", "new", "--role", "nurse"])?;
    let file = tmp.path().join("xray.jpg");
    std::fs::write(&file, photo(10 * MIB, 2))?;
    let id = send_file(ana, "Chest X-ray", &file)?;
    let m = attached(ben)?;
    let size = m["attachments"][0]["size"].as_u64().expect("size");
    // The fetch stops when Ana's node goes away mid-transfer.
    let unused = ben.dir.with_extension("unused");
    let why = fails(
        &ben.dir,
        &["fetch", &id, "--out", unused.to_str().expect("utf-8")],
    )?;
    assert!(why.contains("went away"), "{why}");
    eventually("Ana's node to exit", || a.exited())?;
    let cut = &status(ben)?["blobs"];
    let first = cut["bytes_in"].as_u64().expect("bytes_in");
    assert!(
        first > size / 4 && first < size * 3 / 4,
        "cut halfway: {first} of {size} bytes"
    );
    let held = attached(ben)?["attachments"][0]["held_chunks"].clone();
    assert!(held.as_u64().expect("held") >= 35, "{held}");
    drop(a);
    // Ben's node is killed too; when both are back (Ana without the
    // fault), Ben's fetch goes on by itself from the chunks on his disk.
    drop(b);
    let a = Running::start(ana, &[])?;
    let _b = Running::start(ben, &a.listen)?;
    eventually("Ben to hold the X-ray", || {
        let m = attached(ben)?;
        Ok((m["attachments"][0]["held"] == true).then_some(()))
    })?;
    let second = status(ben)?["blobs"]["bytes_in"]
        .as_u64()
        .expect("bytes_in");
    let total = first + second;
    assert!(
        total >= size && total <= size + size / 20,
        "{total} bytes moved for a blob of {size} (at most 5% more)"
    );
    assert!(!unused.exists(), "a failed fetch writes nothing");
    let out = ben.dir.with_extension("got");
    ok(
        &ben.dir,
        &["fetch", &id, "--out", out.to_str().expect("utf-8")],
    )?;
    let got = std::fs::read(out.join("xray.jpg"))?;
    assert_eq!(BlobHash::of(&got).to_hex(), expected_hash(&m));
    Ok(())
}

#[test]
fn chunks_that_do_not_verify_cut_their_sender_and_are_not_kept() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let devs = ward(tmp.path(), 3)?;
    let (ana, ben, carol) = (&devs[0], &devs[1], &devs[2]);
    let a = Running::start(ana, &[])?;
    ok(&ana.dir, &["chat", "new", "--role", "nurse"])?;
    let file = tmp.path().join("ecg.jpg");
    std::fs::write(&file, photo(3 * MIB, 3))?;
    let id = send_file(ana, "ECG strip", &file)?;
    // Carol fetches it honestly, then serves it with a bit flipped in
    // every chunk (HUDDLE_BLOB_FAULT, debug builds only).
    {
        let _c = Running::start(carol, &a.listen)?;
        attached(carol)?;
        let out = carol.dir.with_extension("got");
        ok(
            &carol.dir,
            &["fetch", &id, "--out", out.to_str().expect("utf-8")],
        )?;
    }
    let mut c = Running::spawn_env(carol, &a.listen, &[], &[("HUDDLE_BLOB_FAULT", "corrupt")])?;
    c.wait_started()?;
    let mut peers = a.listen.clone();
    peers.extend(c.listen.iter().cloned());
    let _b = Running::start(ben, &peers)?;
    let m = attached(ben)?;
    eventually("Ben to be connected to Ana and Carol", || {
        let p = json(&ben.dir, &["peers"])?;
        Ok((p.as_array().map_or(0, Vec::len) >= 2).then_some(()))
    })?;
    let out = ben.dir.with_extension("got");
    ok(
        &ben.dir,
        &["fetch", &id, "--out", out.to_str().expect("utf-8")],
    )?;
    let got = std::fs::read(out.join("ecg.jpg"))?;
    assert_eq!(BlobHash::of(&got).to_hex(), expected_hash(&m));
    let st = status(ben)?;
    assert!(st["blobs"]["cut"].as_u64() >= Some(1), "{}", st["blobs"]);
    // Each chunk Ben kept, he kept once (from Ana): Carol's were refused.
    assert_eq!(
        st["blobs"]["chunks_in"], m["attachments"][0]["chunks"],
        "{}",
        st["blobs"]
    );
    Ok(())
}

#[test]
fn an_attachment_over_the_limit_is_refused_on_every_device_and_a_small_one_comes_unasked(
) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let devs = ward(tmp.path(), 3)?;
    let (ana, ben, carol) = (&devs[0], &devs[1], &devs[2]);
    let a = Running::start(ana, &[])?;
    let _b = Running::start(ben, &a.listen)?;
    let _c = Running::start(carol, &a.listen)?;
    ok(&ana.dir, &["chat", "new", "--role", "nurse"])?;
    // A small lab result is fetched by everyone as soon as it arrives.
    let pdf = tmp.path().join("lactate.pdf");
    std::fs::write(&pdf, b"%PDF-1.7 lactate 4.1 mmol/L".repeat(4000))?;
    send_file(ana, "Lactate", &pdf)?;
    for d in [ben, carol] {
        eventually("the lab result to arrive unasked", || {
            let m = attached(d)?;
            Ok((m["attachments"][0]["held"] == true).then_some(()))
        })?;
    }
    // A 3 MiB photo, sent while the team allowed 25 MiB...
    let file = tmp.path().join("big.jpg");
    std::fs::write(&file, photo(3 * MIB, 4))?;
    let id = send_file(ana, "Big", &file)?;
    // ...then the team limits attachments to 2 MiB.
    let mut policy = json(&ana.dir, &["team", "policy"])?;
    policy["attachments"]["limit"] = (2 * MIB).into();
    policy["attachments"]["auto_fetch"] = MIB.into();
    let p = tmp.path().join("policy.json");
    std::fs::write(&p, policy.to_string())?;
    ok(
        &ana.dir,
        &["team", "policy", "--set", p.to_str().expect("utf-8")],
    )?;
    for d in [ben, carol] {
        eventually("the new limit to arrive", || {
            let p = json(&d.dir, &["team", "policy"])?;
            Ok((p["attachments"]["limit"] == 2 * MIB).then_some(()))
        })?;
        attached(d)?;
        let out = d.dir.with_extension("got");
        let why = fails(
            &d.dir,
            &["fetch", &id, "--out", out.to_str().expect("utf-8")],
        )?;
        assert!(why.contains("over the team's limit"), "{why}");
        let m = attached(d)?;
        assert_eq!(m["attachments"][0]["held_chunks"], 0);
        assert_eq!(
            status(d)?["blobs"]["stored"],
            4000 * 27,
            "only the lab result"
        );
    }
    // Ana cannot attach it again either.
    let why = fails(
        &ana.dir,
        &[
            "send",
            "#nurse",
            "Again",
            "--attach",
            file.to_str().expect("utf-8"),
        ],
    )?;
    assert!(why.contains("over the limit"), "{why}");
    Ok(())
}

#[test]
fn downloads_honour_ranges_and_show_inline_only_what_cannot_run() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let devs = ward(tmp.path(), 1)?;
    let ana = &devs[0];
    let _a = Running::start(ana, &[])?;
    ok(&ana.dir, &["chat", "new", "--role", "nurse"])?;
    let page = tmp.path().join("results.html");
    std::fs::write(&page, "<script>steal(document.cookie)</script>")?;
    let photo_file = tmp.path().join("rash.jpg");
    let original = photo(300_000, 5);
    std::fs::write(&photo_file, &original)?;
    let out = ok(
        &ana.dir,
        &[
            "send",
            "#nurse",
            "Two files",
            "--attach",
            page.to_str().expect("utf-8"),
            photo_file.to_str().expect("utf-8"),
        ],
    )?;
    let id = out.trim();
    let m = attached(ana)?;
    let conv = json(&ana.dir, &["chats"])?[0]["id"]
        .as_str()
        .expect("conversation id")
        .to_owned();
    let info = huddle::datadir::DataDir::new(ana.dir.clone())
        .api_info()?
        .expect("api.json");
    let auth = format!("Bearer {}", info.token);
    let url = |i: usize| {
        format!(
            "{}/v1/conversations/{conv}/messages/{id}/attachments/{i}",
            info.url
        )
    };
    // An HTML attachment is never a page of ours: a download, untyped.
    let r = cli_support::http("GET", &url(0), &[("Authorization", &auth)], "")?;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/octet-stream")
    );
    assert!(r
        .header("content-disposition")
        .is_some_and(|d| d.starts_with("attachment;")));
    assert_eq!(
        r.header("x-content-type-options").as_deref(),
        Some("nosniff")
    );
    // A photo is shown inline, and served by ranges.
    let r = cli_support::http(
        "GET",
        &url(1),
        &[("Authorization", &auth), ("Range", "bytes=100-199")],
        "",
    )?;
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-type").as_deref(), Some("image/jpeg"));
    let size = m["attachments"][1]["size"].as_u64().expect("size");
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes 100-199/{size}"))
    );
    assert_eq!(r.header("content-length").as_deref(), Some("100"));
    let r = cli_support::http(
        "GET",
        &url(1),
        &[
            ("Authorization", &auth),
            ("Range", &format!("bytes={size}-")),
        ],
        "",
    )?;
    assert_eq!(r.status, 416);
    // Without the token, nothing.
    assert_eq!(cli_support::http("GET", &url(1), &[], "")?.status, 401);
    Ok(())
}
