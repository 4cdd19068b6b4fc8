//! The screen's server side without a browser (issue 21): sign-in by a
//! one-time URL, the per-device cookie, CSRF on writes, the Host and Origin
//! guard, the Content-Security-Policy, the idle lock (the session kept,
//! locked) ending its event stream, signing out, administrator actions
//! confirmed by a fresh link,
//! and the history cursor. Requests are written by hand (net_common.rs).
#![cfg(feature = "cli")]

#[path = "net_common.rs"]
mod common;

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::*;
use huddle::api::ApiServer;
use huddle::node::{Command, Reply};
use huddle::web::WebOptions;
use huddle::{ConversationId, ConversationKind};

struct Screen {
    server: ApiServer,
    node: TestNode,
    _dir: tempfile::TempDir,
}

impl Screen {
    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Answer {
        http(self.server.addr, "GET", path, headers, Vec::new()).await
    }

    async fn post(&self, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Answer {
        http(self.server.addr, "POST", path, headers, body).await
    }
}

async fn screen(lock_after: Duration) -> Screen {
    let dir = tempfile::tempdir().expect("tempdir");
    let team = Team::new(1);
    let ana = team.member(2, "Ana Silva", &["nurse"]);
    let node = start_node(&ana, dir.path(), Vec::new()).await;
    let options = WebOptions {
        lock_after,
        ..WebOptions::default()
    };
    let server =
        huddle::api::start_with(node.handle.clone(), "127.0.0.1:0".parse().unwrap(), options)
            .await
            .expect("the API starts");
    Screen {
        server,
        node,
        _dir: dir,
    }
}

/// Signs in with a fresh one-time URL: the `Cookie` header value and the
/// session's CSRF token.
async fn sign_in(s: &Screen) -> (String, String) {
    let url = s.server.login_url();
    let path = &url[url.find("/login").expect("a login path")..];
    let a = s.get(path, &[]).await;
    assert_eq!(a.status, 303, "{}", a.head);
    let set = a.header("set-cookie").expect("a session cookie");
    let pair = set.split(';').next().unwrap().trim().to_owned();
    let session = s.get("/web/session", &[("Cookie", &pair)]).await;
    assert_eq!(session.status, 200);
    let csrf = session.json()["csrf"].as_str().unwrap().to_owned();
    (pair, csrf)
}

async fn group(node: &TestNode) -> ConversationId {
    let me = node
        .handle
        .query(|n| n.member_id())
        .await
        .unwrap()
        .expect("a member");
    let members = [me].into_iter().collect();
    match node
        .handle
        .command(Command::CreateConversation {
            kind: ConversationKind::Group {
                title: "Bay 2".into(),
                members,
            },
        })
        .await
    {
        Ok(Reply::Conversation(c)) => c,
        other => panic!("create failed: {other:?}"),
    }
}

#[tokio::test]
async fn a_one_time_link_sets_a_strict_cookie_named_for_the_device_once() {
    let s = screen(Duration::from_secs(300)).await;
    let url = s.server.login_url();
    let path = &url[url.find("/login").unwrap()..];
    let first = s.get(path, &[]).await;
    assert_eq!(first.status, 303);
    assert_eq!(first.header("location").as_deref(), Some("/"));
    let cookie = first.header("set-cookie").unwrap();
    let short = s
        .node
        .handle
        .query(|n| n.device_id().short())
        .await
        .unwrap();
    assert!(cookie.starts_with(&format!("huddle-{short}=")), "{cookie}");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attr), "{cookie} lacks {attr}");
    }
    let again = s.get(path, &[]).await;
    assert_eq!(again.status, 303);
    assert_eq!(again.header("location").as_deref(), Some("/#link-used"));
    assert_eq!(
        again.header("set-cookie"),
        None,
        "a used link signs nobody in"
    );
}

#[tokio::test]
async fn a_request_naming_another_host_or_origin_is_refused() {
    let s = screen(Duration::from_secs(300)).await;
    let port = s.server.addr.port();
    let (cookie, _) = sign_in(&s).await;
    let evil_host = format!("evil.example:{port}");
    for (what, headers) in [
        (
            "a rebound name",
            vec![("Host", evil_host.as_str()), ("Cookie", cookie.as_str())],
        ),
        (
            "another port",
            vec![("Host", "127.0.0.1:1"), ("Cookie", cookie.as_str())],
        ),
        (
            "a cross-site origin",
            vec![
                ("Origin", "http://evil.example"),
                ("Cookie", cookie.as_str()),
            ],
        ),
    ] {
        for path in ["/", "/v1/conversations", "/web/session"] {
            let a = s.get(path, &headers).await;
            assert_eq!(a.status, 403, "{what} on {path}");
            assert!(a.json()["error"].as_str().unwrap().contains("refused"));
        }
    }
    let local = format!("localhost:{port}");
    let ok = s.get("/", &[("Host", &local)]).await;
    assert_eq!(ok.status, 200, "localhost is this node too");
}

#[tokio::test]
async fn every_response_carries_a_strict_csp_and_the_page_has_no_inline_script() {
    let s = screen(Duration::from_secs(300)).await;
    let page = s.get("/", &[]).await;
    assert_eq!(page.status, 200);
    let csp = page.header("content-security-policy").expect("a CSP");
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    let html = String::from_utf8(page.body).unwrap();
    for tag in html.split("<script").skip(1) {
        assert!(
            tag.trim_start().starts_with("type=\"module\" src="),
            "an inline script: {tag}"
        );
    }
    let handler = html.split(" on").skip(1).find(|rest| {
        let name: String = rest.chars().take_while(char::is_ascii_lowercase).collect();
        !name.is_empty() && rest[name.len()..].starts_with('=')
    });
    assert_eq!(handler, None, "an inline event handler");
    let api = s.get("/v1/status", &[]).await;
    assert_eq!(api.status, 401);
    assert!(api.header("content-security-policy").is_some());
}

#[tokio::test]
async fn a_session_reads_but_writes_only_with_its_csrf_token() {
    let s = screen(Duration::from_secs(300)).await;
    let conv = group(&s.node).await;
    let (cookie, csrf) = sign_in(&s).await;
    let json = ("Content-Type", "application/json");
    let read = s.get("/v1/conversations", &[("Cookie", &cookie)]).await;
    assert_eq!(read.status, 200);
    let path = format!("/v1/conversations/{conv}/messages");
    let body = br#"{"body":"Bed 2 obs stable"}"#.to_vec();
    let forged = s
        .post(&path, &[("Cookie", &cookie), json], body.clone())
        .await;
    assert_eq!(forged.status, 401, "a write without the CSRF header");
    let wrong = s
        .post(
            &path,
            &[("Cookie", &cookie), json, ("x-huddle-csrf", "0123")],
            body.clone(),
        )
        .await;
    assert_eq!(wrong.status, 401);
    let sent = s
        .post(
            &path,
            &[("Cookie", &cookie), json, ("x-huddle-csrf", &csrf)],
            body,
        )
        .await;
    assert_eq!(sent.status, 200, "{}", String::from_utf8_lossy(&sent.body));
    // Minting a login URL takes the bearer token, never a session.
    let mint = s
        .post(
            "/web/login",
            &[("Cookie", &cookie), ("x-huddle-csrf", &csrf)],
            vec![],
        )
        .await;
    assert_eq!(mint.status, 401);
    let bearer = format!("Bearer {}", s.server.token);
    let mint = s
        .post("/web/login", &[("Authorization", &bearer)], vec![])
        .await;
    assert_eq!(mint.status, 200);
    assert!(mint.json()["url"].as_str().unwrap().contains("/login?t="));
}

#[tokio::test]
async fn an_idle_session_locks_and_its_event_stream_ends() {
    let s = screen(Duration::from_millis(1500)).await;
    let (cookie, csrf) = sign_in(&s).await;
    let with_cookie = [("Cookie", cookie.as_str())];
    let events = s.get("/v1/events", &with_cookie);
    // `http` reads to the end: it returns only once the stream has ended.
    let ended = tokio::time::timeout(Duration::from_secs(20), events).await;
    assert!(ended.is_ok(), "the event stream outlived its session");
    let after = s.get("/v1/conversations", &[("Cookie", &cookie)]).await;
    assert_eq!(after.status, 401, "locked");
    let alive = s
        .post(
            "/web/alive",
            &[("Cookie", &cookie), ("x-huddle-csrf", &csrf)],
            vec![],
        )
        .await;
    assert_eq!(alive.status, 401, "a locked session stays locked");
    let session = s.get("/web/session", &[("Cookie", &cookie)]).await;
    assert_eq!(session.status, 200, "locked, not ended");
    assert_eq!(session.json()["locked"], true);
    // No passphrase, no PIN: only a new sign-in link opens it.
    let unlock = s
        .post(
            "/web/unlock",
            &[("Cookie", &cookie), ("x-huddle-csrf", &csrf)],
            br#"{"secret": "anything"}"#.to_vec(),
        )
        .await;
    assert_eq!(unlock.status, 409);
    assert!(unlock.json()["error"]
        .as_str()
        .unwrap()
        .contains("huddle open"));
}

#[tokio::test]
async fn the_lock_button_ends_the_event_stream_at_once() {
    let s = screen(Duration::from_secs(3600)).await;
    let (cookie, csrf) = sign_in(&s).await;
    let with_cookie = [("Cookie", cookie.as_str())];
    // The stream is open (its head read) before the lock.
    let mut stream = tokio::net::TcpStream::connect(s.server.addr).await.unwrap();
    let req = format!(
        "GET /v1/events HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nCookie: {cookie}\r\n\r\n",
        s.server.addr
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(
            stream.read(&mut byte).await.unwrap(),
            1,
            "the stream closed early"
        );
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    let events = async move {
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).await.map(|_| rest)
    };
    let lock = s
        .post(
            "/web/lock",
            &[("Cookie", &cookie), ("x-huddle-csrf", &csrf)],
            vec![],
        )
        .await;
    assert_eq!(lock.status, 200);
    let ended = tokio::time::timeout(Duration::from_secs(10), events).await;
    assert!(
        ended.is_ok(),
        "the stream outlived the lock by 10 s (idle time: 1 h)"
    );
    assert_eq!(s.get("/v1/conversations", &with_cookie).await.status, 401);
}

#[tokio::test]
async fn a_person_keeps_the_session_open_lock_locks_it_and_sign_out_ends_it() {
    let s = screen(Duration::from_millis(1500)).await;
    let (cookie, csrf) = sign_in(&s).await;
    let auth = [
        ("Cookie", cookie.as_str()),
        ("x-huddle-csrf", csrf.as_str()),
    ];
    for _ in 0..4 {
        // Under the idle time each round, three times over it in all.
        tokio::time::sleep(Duration::from_millis(600)).await;
        let a = s.post("/web/alive", &auth, vec![]).await;
        assert_eq!(a.status, 200, "alive");
    }
    let lock = s.post("/web/lock", &auth, vec![]).await;
    assert_eq!(lock.status, 200);
    assert_eq!(lock.header("set-cookie"), None, "the cookie is kept");
    let after = s.get("/web/session", &[("Cookie", &cookie)]).await;
    assert_eq!(after.status, 200);
    assert_eq!(after.json()["locked"], true);
    let refused = s.get("/v1/conversations", &[("Cookie", &cookie)]).await;
    assert_eq!(refused.status, 401);
    let out = s.post("/web/signout", &auth, vec![]).await;
    assert_eq!(out.status, 200);
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));
    let after = s.get("/web/session", &[("Cookie", &cookie)]).await;
    assert_eq!(after.status, 401, "signed out");
}

#[tokio::test]
async fn history_pages_back_from_the_newest_by_cursor() {
    let s = screen(Duration::from_secs(300)).await;
    let conv = group(&s.node).await;
    for i in 0..7 {
        s.node
            .handle
            .command(Command::Send {
                conversation: conv,
                body: format!("m{i}"),
                priority: huddle::Priority::Routine,
                reply_to: None,
                fields: Default::default(),
            })
            .await
            .expect("sent");
    }
    let bearer = format!("Bearer {}", s.server.token);
    let page = |q: String| {
        let bearer = bearer.clone();
        let addr = s.server.addr;
        async move {
            let a = http(
                addr,
                "GET",
                &format!("/v1/conversations/{conv}/messages{q}"),
                &[("Authorization", &bearer)],
                vec![],
            )
            .await;
            (a.status, a.json())
        }
    };
    let bodies = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|m| m["body"].as_str().unwrap().to_owned())
            .collect()
    };
    let (_, newest) = page("?limit=3".into()).await;
    assert_eq!(bodies(&newest), ["m4", "m5", "m6"]);
    let cursor = newest[0]["id"].as_str().unwrap().to_owned();
    let (_, older) = page(format!("?limit=3&before={cursor}")).await;
    assert_eq!(bodies(&older), ["m1", "m2", "m3"]);
    let cursor = older[0]["id"].as_str().unwrap().to_owned();
    let (_, oldest) = page(format!("?limit=3&before={cursor}")).await;
    assert_eq!(bodies(&oldest), ["m0"]);
    let (_, all) = page(String::new()).await;
    assert_eq!(all.as_array().unwrap().len(), 7);
    let (status, err) = page(format!("?before={}", "ab".repeat(16))).await;
    assert_eq!(status, 404, "{err}");
    let (status, _) = page("?before=nope".into()).await;
    assert_eq!(status, 400);
}
