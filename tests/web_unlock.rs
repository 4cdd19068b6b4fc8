//! Unlocking a locked screen on the real binary (issue 24): a locked
//! session keeps its cookie but opens nothing; the data directory's
//! passphrase or the PIN `huddle pin set` sets (while the node runs)
//! unlocks it; wrong secrets back off for the whole node, not per session;
//! an unencrypted directory without a PIN says a new sign-in link is the
//! only way. Requests are written by hand (`cli_support::http`).

mod cli_support;

use cli_support::{eventually, http, init, init_with, ok, screen_session, Http, Running};
use serde_json::Value;

/// The passphrase `cli_support::passphrase_file` writes.
const PASSPHRASE: &str = "a test passphrase";

struct Screen {
    origin: String,
    cookie: String,
    csrf: String,
}

impl Screen {
    fn sign_in(dev: &cli_support::Device) -> Screen {
        let (origin, cookie, csrf) = screen_session(dev).expect("signed in");
        Screen {
            origin,
            cookie,
            csrf,
        }
    }

    fn post(&self, path: &str, body: &str) -> Http {
        let headers = [
            ("Cookie", self.cookie.as_str()),
            ("x-huddle-csrf", self.csrf.as_str()),
            ("Content-Type", "application/json"),
        ];
        http("POST", &format!("{}{path}", self.origin), &headers, body).expect("an answer")
    }

    fn get(&self, path: &str) -> Http {
        http(
            "GET",
            &format!("{}{path}", self.origin),
            &[("Cookie", &self.cookie)],
            "",
        )
        .expect("an answer")
    }

    fn unlock(&self, secret: &str) -> Http {
        self.post(
            "/web/unlock",
            &serde_json::json!({ "secret": secret }).to_string(),
        )
    }

    fn lock(&self) {
        assert_eq!(self.post("/web/lock", "").status, 200);
        assert_eq!(self.get("/v1/conversations").status, 401, "locked");
    }

    fn session(&self) -> Value {
        let s = self.get("/web/session");
        assert_eq!(s.status, 200, "{}", s.body);
        serde_json::from_str(&s.body).unwrap()
    }
}

fn json(a: &Http) -> Value {
    serde_json::from_str(&a.body).unwrap_or_else(|_| panic!("not JSON: {}", a.body))
}

#[test]
fn the_passphrase_or_the_pin_unlocks_and_wrong_secrets_back_off_for_the_node() {
    let tmp = tempfile::tempdir().unwrap();
    let ana = init(tmp.path(), "ana", "Ana Silva", &["nurse"]).unwrap();
    ok(&ana.dir, &["team", "create", "Ward 7"]).unwrap();
    let node = Running::spawn_env(
        &ana,
        &[],
        &["-v", "--lock-after", "1h", "--unlock-attempts", "2"],
        &[("HUDDLE_TEST_UNLOCK_BACKOFF_MS", "1500")],
    )
    .and_then(|mut n| n.wait_started().map(|()| n))
    .unwrap();
    let s = Screen::sign_in(&ana);
    assert_eq!(s.unlock(PASSPHRASE).status, 200, "an open session is open");

    s.lock();
    let state = s.session();
    assert_eq!(state["locked"], true);
    assert_eq!(state["admin"], false, "a locked session learns nothing");
    assert_eq!(state["unlock_with"]["passphrase"], true);
    assert_eq!(state["unlock_with"]["pin"], false);
    let events = s.get("/v1/events");
    assert_eq!(events.status, 401, "no event stream for a locked session");

    // Bad requests are refused before any secret is checked, and count
    // for nothing.
    for (body, status) in [
        ("not json", 400),
        ("{\"secret\": \"\"}", 400),
        ("{\"secret\": 5}", 400),
    ] {
        let a = s.post("/web/unlock", body);
        assert_eq!(a.status, status, "{body}: {}", a.body);
        assert!(json(&a)["error"].is_string());
    }
    let huge = format!("{{\"secret\": \"{}\"}}", "x".repeat(20_000));
    assert_eq!(s.post("/web/unlock", &huge).status, 413);
    let no_csrf = http(
        "POST",
        &format!("{}/web/unlock", s.origin),
        &[("Cookie", &s.cookie)],
        "{\"secret\": \"x\"}",
    )
    .unwrap();
    assert_eq!(no_csrf.status, 403);

    let wrong = s.unlock("not the passphrase");
    assert_eq!(wrong.status, 403, "{}", wrong.body);
    assert!(
        json(&wrong)["retry_after_ms"].is_null(),
        "one wrong: no wait yet"
    );
    assert!(!wrong.body.contains("not the passphrase"), "never echoed");
    // The second wrong secret comes from another session: the count is
    // the node's.
    let other = Screen::sign_in(&ana);
    other.lock();
    let wrong = other.unlock("13572468");
    assert_eq!(wrong.status, 403, "{}", wrong.body);
    assert!(json(&wrong)["retry_after_ms"].as_u64().unwrap() > 0);
    for who in [&s, &other] {
        let refused = who.unlock(PASSPHRASE);
        assert_eq!(refused.status, 429, "refused unchecked: {}", refused.body);
        let v = json(&refused);
        assert!(v["retry_after_ms"].as_u64().unwrap() > 0, "{v}");
        assert!(v["error"].as_str().unwrap().contains("wait"));
        assert!(refused.header("retry-after").is_some());
        assert_eq!(who.get("/v1/conversations").status, 401, "still locked");
    }
    // Refused attempts are not counted: once the delay passes, the right
    // passphrase opens the session.
    eventually("the backoff to pass", || {
        let a = s.unlock(PASSPHRASE);
        match a.status {
            429 => Ok(None),
            200 => Ok(Some(())),
            other => anyhow::bail!("unlock answered {other}: {}", a.body),
        }
    })
    .unwrap();
    assert_eq!(s.get("/v1/conversations").status, 200, "unlocked");
    assert_eq!(s.session()["locked"], false);
    assert_eq!(
        other.get("/v1/conversations").status,
        401,
        "only that session"
    );
    let wrong = other.unlock("still wrong");
    assert!(
        json(&wrong)["retry_after_ms"].is_null(),
        "the right secret reset the count: {}",
        wrong.body
    );

    // A PIN set while the node runs unlocks at once; cleared, it does not.
    let pin_file = tmp.path().join("pin.txt");
    std::fs::write(&pin_file, "86420975\n").unwrap();
    ok(
        &ana.dir,
        &["pin", "set", "--pin-file", pin_file.to_str().unwrap()],
    )
    .unwrap();
    s.lock();
    assert_eq!(s.session()["unlock_with"]["pin"], true);
    assert_eq!(s.unlock("86420975").status, 200);
    assert_eq!(s.get("/v1/conversations").status, 200);
    ok(&ana.dir, &["pin", "clear"]).unwrap();
    s.lock();
    assert_eq!(s.unlock("86420975").status, 403);
    assert_eq!(s.unlock(PASSPHRASE).status, 200);

    // Signing out ends the session: nothing is left to unlock.
    let out = s.post("/web/signout", "");
    assert_eq!(out.status, 200);
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));
    assert_eq!(s.get("/web/session").status, 401);
    assert_eq!(s.unlock(PASSPHRASE).status, 401);

    // The audit hook names sessions by tag and never carries a secret.
    let log = node.stderr();
    assert!(log.contains("screen unlocked"), "{log}");
    assert!(log.contains("screen unlock failed"), "{log}");
    for secret in [PASSPHRASE, "86420975", "not the passphrase", "13572468"] {
        assert!(!log.contains(secret), "the log holds a secret: {log}");
    }
    assert!(!log.contains(s.cookie.split('=').nth(1).unwrap()));

    // ...and the audit trail holds each unlock and each secret checked and
    // found wrong at the screen (not the attempts refused unchecked), and
    // the PIN's changes.
    let screen = |e: &Value, kind: &str| {
        e["action"] == kind
            && e["description"]
                .as_str()
                .unwrap_or("")
                .contains("the screen")
    };
    eventually("the screen's unlocks in the audit trail", || {
        let trails = cli_support::json(&ana.dir, &["audit", "show"])?;
        let entries = trails[0]["entries"].as_array().cloned().unwrap_or_default();
        let count = |kind: &str| entries.iter().filter(|e| screen(e, kind)).count();
        let pins = entries
            .iter()
            .filter(|e| e["action"] == "pin_changed")
            .count();
        Ok((count("unlocked"), count("unlock_failed"), pins)
            .eq(&(3, 4, 2))
            .then_some(()))
    })
    .unwrap();
}

#[test]
fn an_unencrypted_device_unlocks_only_with_a_pin() {
    let tmp = tempfile::tempdir().unwrap();
    let ben = init_with(
        tmp.path(),
        "ben",
        "Ben Okafor",
        &["physician"],
        &["--unencrypted"],
    )
    .unwrap();
    ok(&ben.dir, &["team", "create", "Ward 8"]).unwrap();
    let _node = Running::start(&ben, &[]).unwrap();
    let s = Screen::sign_in(&ben);
    s.lock();
    let state = s.session();
    assert_eq!(state["unlock_with"]["passphrase"], false);
    assert_eq!(state["unlock_with"]["pin"], false);
    let none = s.unlock(PASSPHRASE);
    assert_eq!(none.status, 409, "{}", none.body);
    assert!(json(&none)["error"]
        .as_str()
        .unwrap()
        .contains("huddle open"));

    let short = tmp.path().join("short.txt");
    std::fs::write(&short, "123\n").unwrap();
    let said = cli_support::fails(
        &ben.dir,
        &["pin", "set", "--pin-file", short.to_str().unwrap()],
    )
    .unwrap();
    assert!(said.contains("4 to 64"), "{said}");
    let pin_file = tmp.path().join("pin.txt");
    std::fs::write(&pin_file, "7531\n").unwrap();
    ok(
        &ben.dir,
        &["pin", "set", "--pin-file", pin_file.to_str().unwrap()],
    )
    .unwrap();
    let pin = std::fs::read_to_string(ben.dir.join("pin")).unwrap();
    assert!(!pin.contains("7531"), "only a hash is stored");
    assert_eq!(s.unlock(PASSPHRASE).status, 403, "there is no passphrase");
    assert_eq!(s.unlock("7531").status, 200);
    assert_eq!(s.get("/v1/conversations").status, 200);
}
