//! The screen from the command line (issue 21): `huddle run` serves it on a
//! stable default address or says clearly that it moved, `huddle open
//! --print` gives a one-time link, and the Team page's administrator
//! actions work only on the device holding the team key and only when
//! confirmed by a fresh link. Real `huddle run` processes on loopback.
#![cfg(feature = "cli")]

mod cli_support;

use cli_support::{admit, eventually, fails, http, init, json, ok, screen_session, Running};

#[test]
fn without_api_the_node_serves_on_4835_or_says_it_moved() {
    let root = tempfile::tempdir().unwrap();
    let ana = init(root.path(), "ana", "Ana Silva", &["nurse"]).unwrap();
    ok(&ana.dir, &["team", "create", "Ward 7"]).unwrap();
    // Held here (or by whoever holds it already): the node must move.
    let _held = std::net::TcpListener::bind("127.0.0.1:4835");
    let mut run = std::process::Command::new(assert_cmd::cargo::cargo_bin("huddle"))
        .arg("--data-dir")
        .arg(&ana.dir)
        .args(["run", "--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0"])
        .envs(cli_support::unlock_env(&ana.dir))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut out = run.stdout.take().unwrap();
    let said = std::thread::spawn(move || {
        use std::io::Read;
        let mut text = String::new();
        let mut buf = [0u8; 4096];
        while !text.contains("Press Ctrl-C") {
            match out.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => text.push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
        text
    })
    .join()
    .unwrap();
    let _ = run.kill();
    let _ = run.wait();
    assert!(
        said.contains("127.0.0.1:4835, the usual address, is taken"),
        "{said}"
    );
    let screen = said
        .lines()
        .find(|l| l.trim_start().starts_with("screen"))
        .expect("a screen line");
    assert!(!screen.contains(":4835 "), "{screen}");
    assert!(screen.contains("huddle open"), "{screen}");
}

#[test]
fn open_print_gives_a_link_that_signs_in_once() {
    let root = tempfile::tempdir().unwrap();
    let ana = init(root.path(), "ana", "Ana Silva", &["nurse"]).unwrap();
    ok(&ana.dir, &["team", "create", "Ward 7"]).unwrap();
    let no_node = fails(&ana.dir, &["open", "--print"]).unwrap();
    assert!(no_node.contains("huddle run"), "{no_node}");
    let _a = Running::start(&ana, &[]).unwrap();
    let url = ok(&ana.dir, &["open", "--print"]).unwrap();
    assert!(
        url.starts_with("http://127.0.0.1:") && url.contains("/login?t="),
        "{url}"
    );
    let first = http("GET", &url, &[], "").unwrap();
    assert_eq!(first.status, 303);
    assert!(first.header("set-cookie").is_some());
    let again = http("GET", &url, &[], "").unwrap();
    assert_eq!(again.header("location").as_deref(), Some("/#link-used"));
    let j = json(&ana.dir, &["open", "--print"]).unwrap();
    assert!(j["url"].as_str().unwrap().contains("/login?t="));
}

#[test]
fn admitting_and_revoking_need_the_team_key_and_a_fresh_link() {
    let root = tempfile::tempdir().unwrap();
    let ana = init(root.path(), "ana", "Ana Silva", &["nurse"]).unwrap();
    ok(&ana.dir, &["team", "create", "Ward 7"]).unwrap();
    let ben = init(root.path(), "ben", "Ben Okafor", &["physician"]).unwrap();
    let cara = init(root.path(), "cara", "Cara Jones", &["nurse"]).unwrap();
    let dan = init(root.path(), "dan", "Dan Reyes", &["nurse"]).unwrap();
    admit(&ana, &ben, "Ben Okafor", &["physician"]).unwrap();
    admit(&ana, &cara, "Cara Jones", &["nurse"]).unwrap();
    let a = Running::start(&ana, &[]).unwrap();
    let _b = Running::start(&ben, &a.listen).unwrap();
    let _c = Running::start(&cara, &a.listen).unwrap();

    let (origin, cookie, csrf) = screen_session(&ana).unwrap();
    let post = |path: &str, body: String| {
        http(
            "POST",
            &format!("{origin}{path}"),
            &[
                ("Cookie", &cookie),
                ("x-huddle-csrf", &csrf),
                ("Content-Type", "application/json"),
            ],
            &body,
        )
        .unwrap()
    };
    let admit_body = |confirm: &str| {
        serde_json::json!({
            "device": dan.device, "name": "Dan Reyes", "roles": ["nurse"], "confirm": confirm,
        })
        .to_string()
    };
    // The screen's own session link does not confirm: it is used up.
    let unconfirmed = post("/web/admin/admit", admit_body("not a link"));
    assert_eq!(unconfirmed.status, 403, "{}", unconfirmed.body);
    assert!(unconfirmed.body.contains("huddle open --print"));
    let fresh = ok(&ana.dir, &["open", "--print"]).unwrap();
    let admitted = post("/web/admin/admit", admit_body(&fresh));
    assert_eq!(admitted.status, 200, "{}", admitted.body);
    let token: serde_json::Value = serde_json::from_str(&admitted.body).unwrap();
    ok(
        &dan.dir,
        &["team", "join", token["token"].as_str().unwrap()],
    )
    .unwrap();
    let reused = post("/web/admin/admit", admit_body(&fresh));
    assert_eq!(reused.status, 403, "a confirmation link works once");

    // Ben holds no team key: his screen refuses, even confirmed.
    let (b_origin, b_cookie, b_csrf) = screen_session(&ben).unwrap();
    let b_fresh = ok(&ben.dir, &["open", "--print"]).unwrap();
    let refused = http(
        "POST",
        &format!("{b_origin}/web/admin/revoke"),
        &[
            ("Cookie", &b_cookie),
            ("x-huddle-csrf", &b_csrf),
            ("Content-Type", "application/json"),
        ],
        &serde_json::json!({ "member": cara.member, "confirm": b_fresh }).to_string(),
    )
    .unwrap();
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(refused.body.contains("team key"));

    let own = post(
        "/web/admin/revoke",
        serde_json::json!({ "member": ana.member, "confirm": ok(&ana.dir, &["open", "--print"]).unwrap() })
            .to_string(),
    );
    assert_eq!(own.status, 400, "never one's own membership: {}", own.body);
    let revoked = post(
        "/web/admin/revoke",
        serde_json::json!({ "member": cara.member, "confirm": ok(&ana.dir, &["open", "--print"]).unwrap() })
            .to_string(),
    );
    assert_eq!(revoked.status, 200, "{}", revoked.body);
    eventually("Ben's node to learn that Cara is revoked", || {
        let shown = json(&ben.dir, &["team", "show"])?;
        Ok(shown["members"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|m| m["name"] == "Cara Jones" && m["revoked"] == true)
            .then_some(()))
    })
    .unwrap();
}
