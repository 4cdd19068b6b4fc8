//! The local API answers every error as `{"error": "one sentence"}` JSON
//! with the right status, as the README promises (issue 20 item 3): the
//! errors axum answers by itself (a body without `Content-Type`, malformed
//! or mistyped JSON, a body too large, a wrong method, an unknown path, a
//! bad query) as well as the handlers' own. Requests are written by hand so
//! that each can be as wrong as a careless client makes it.
#![cfg(feature = "cli")]

#[path = "net_common.rs"]
mod common;

use common::*;
use huddle::node::{Command, Reply};
use huddle::{ConversationId, ConversationKind, Priority};
use serde_json::Value;

/// One request on its own connection: the status, the `Content-Type` and
/// the body of the answer.
async fn call(
    api: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, String, Vec<u8>) {
    let a = http(api, method, path, headers, body).await;
    let content_type = a.header("content-type").unwrap_or_default();
    (a.status, content_type, a.body)
}

/// Asserts that the answer is `status` with `{"error": sentence}` and
/// nothing else; returns the sentence.
fn error_of(what: &str, answer: (u16, String, Vec<u8>), status: u16) -> String {
    let (got, content_type, body) = answer;
    let text = String::from_utf8_lossy(&body).into_owned();
    assert_eq!(got, status, "{what}: status ({text})");
    assert!(
        content_type.starts_with("application/json"),
        "{what}: Content-Type {content_type:?} ({text})"
    );
    let v: Value = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("{what}: the body is not JSON ({e}): {text:?}"));
    let obj = v.as_object().expect("an object");
    assert_eq!(obj.len(), 1, "{what}: only \"error\": {text}");
    let sentence = obj["error"].as_str().expect("a string").to_owned();
    assert!(!sentence.is_empty(), "{what}: an empty sentence");
    sentence
}

async fn get(
    api: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String, Vec<u8>) {
    call(api, "GET", path, headers, Vec::new()).await
}

fn message_id(reply: Reply) -> huddle::MessageId {
    match reply {
        Reply::Message(id) => id,
        other => panic!("unexpected reply {other:?}"),
    }
}

#[tokio::test]
async fn every_api_error_is_json_with_its_status() {
    let dir = tempfile::tempdir().expect("tempdir");
    let team = Team::new(1);
    let ana = team.member(2, "Ana Silva", &["nurse"]);
    let node = start_node(&ana, dir.path(), Vec::new()).await;
    let server = huddle::api::start(node.handle.clone(), "127.0.0.1:0".parse().unwrap())
        .await
        .expect("the API starts");
    let api = server.addr;
    let bearer = format!("Bearer {}", server.token);
    let auth = ("Authorization", bearer.as_str());
    let json = ("Content-Type", "application/json");

    let Reply::Conversation(chan) = node
        .handle
        .command(Command::CreateConversation {
            kind: ConversationKind::Role {
                role: "nurse".into(),
            },
        })
        .await
        .expect("create")
    else {
        panic!("no conversation")
    };
    let send = |priority| Command::Send {
        conversation: chan,
        body: "Bed 4 obs are stable".into(),
        priority,
        reply_to: None,
        fields: Default::default(),
    };
    let routine = message_id(node.handle.command(send(Priority::Routine)).await.unwrap());
    let urgent = message_id(node.handle.command(send(Priority::Urgent)).await.unwrap());
    let messages = format!("/v1/conversations/{chan}/messages");
    let unknown = ConversationId([7; 16]);

    // The token.
    error_of("no token", get(api, "/v1/status", &[]).await, 401);
    let wrong = [("Authorization", "Bearer 00")];
    error_of("a wrong token", get(api, "/v1/status", &wrong).await, 401);
    let a = get(api, "/v1/nothing", &wrong).await;
    error_of("a wrong token on an unknown path", a, 401);

    // Paths and methods.
    let e = error_of(
        "an unknown path",
        get(api, "/v1/nothing", &[auth]).await,
        404,
    );
    assert!(e.contains("/v1/nothing"), "{e}");
    let a = call(api, "DELETE", "/v1/status", &[auth], Vec::new()).await;
    let e = error_of("a wrong method", a, 405);
    assert!(e.contains("DELETE") && e.contains("/v1/status"), "{e}");
    let read = format!("/v1/conversations/{chan}/read");
    error_of("GET on a POST path", get(api, &read, &[auth]).await, 405);

    // Ids and queries.
    let a = get(api, "/v1/conversations/not-hex/messages", &[auth]).await;
    let e = error_of("a conversation id that does not parse", a, 400);
    assert!(e.contains("not a conversation id"), "{e}");
    let path = format!("/v1/conversations/{chan}/messages/zz/ack");
    let a = call(api, "POST", &path, &[auth], Vec::new()).await;
    error_of("a message id that does not parse", a, 400);
    let path = format!("/v1/conversations/{unknown}/messages");
    let e = error_of(
        "an unknown conversation",
        get(api, &path, &[auth]).await,
        404,
    );
    assert!(e.contains("no conversation"), "{e}");
    let path = format!("{messages}?limit=lots");
    error_of(
        "a limit that is not a number",
        get(api, &path, &[auth]).await,
        400,
    );
    error_of(
        "a missing query",
        get(api, "/v1/messages", &[auth]).await,
        400,
    );

    // Bodies.
    let body = br#"{"body":"hello","priority":"routine"}"#.to_vec();
    let a = call(api, "POST", &messages, &[auth], body.clone()).await;
    let e = error_of("a body without Content-Type", a, 415);
    assert!(e.contains("Content-Type: application/json"), "{e}");
    let a = call(
        api,
        "POST",
        &messages,
        &[auth, json],
        b"{\"body\": ".to_vec(),
    )
    .await;
    error_of("malformed JSON", a, 400);
    let bad = br#"{"body":"hello","priority":"whenever"}"#.to_vec();
    let a = call(api, "POST", &messages, &[auth, json], bad).await;
    let e = error_of("an unknown priority", a, 422);
    assert!(e.contains("priority"), "{e}");
    let mut huge = br#"{"body":""#.to_vec();
    huge.extend(vec![b'a'; huddle::api::BODY_LIMIT + 1]);
    huge.extend_from_slice(br#"","priority":"routine"}"#);
    let a = call(api, "POST", &messages, &[auth, json], huge).await;
    error_of("a body too large", a, 413);

    // The node's own refusals.
    let path = format!("/v1/conversations/{chan}/messages/{routine}/ack");
    let a = call(api, "POST", &path, &[auth], Vec::new()).await;
    let e = error_of("an ack of a routine message", a, 400);
    assert!(e.contains("only urgent messages"), "{e}");
    let path = format!("/v1/conversations/{chan}/messages/{urgent}/ack");
    let a = call(api, "POST", &path, &[auth], Vec::new()).await;
    let e = error_of("an ack of one's own message", a, 400);
    assert!(e.contains("you wrote this message"), "{e}");

    // And what works still answers as before.
    let (status, content_type, body) = call(api, "POST", &messages, &[auth, json], body).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(content_type.starts_with("application/json"));

    drop(server);
    node.stop().await;
}
