//! The local API's request bodies and path ids, as a client (or a page
//! anyone can open in a browser on the device) might send them: parsed with
//! serde_json as axum's `Json` extractor parses them, then carried out
//! against a node the way `api/server.rs` carries them out.
//!
//! What must hold: every request is answered (a reply or an error), none
//! panics the node, and the node still reads every conversation after.

use arbitrary::Arbitrary;
use huddle::api::types::{NewConversation, RevokeRequest, SendRequest};
use huddle::api::views;
use huddle::node::Command;
use huddle::{ConversationId, MessageId};
use serde_json::{Map, Value};

use super::stored::Opened;
use super::{pick, structured, Damage};

#[derive(Arbitrary, Debug)]
enum Call {
    /// `POST /v1/conversations`
    Create(Body),
    /// `POST /v1/conversations/{id}/messages`
    Send(Id, Body),
    /// `POST /v1/revocations`
    Revoke(Body),
    /// `POST /v1/conversations/{id}/messages/{message}/ack`
    Ack(Id, Id),
    /// `POST /v1/conversations/{id}/read`
    Read(Id),
    /// `GET /v1/conversations/{id}/messages?limit=&before=`
    History(Id, Option<Id>, Option<usize>),
    /// `GET /v1/messages?prefix=`
    Find(String),
    /// `POST /web/admin/admit` and `/web/admin/revoke`: the bodies parse
    /// or are refused (minting needs the team key, which the screen reads
    /// from the data directory, not here).
    Admin(Body),
}

/// A path segment: a conversation or message the node holds, or any text.
#[derive(Arbitrary, Debug)]
enum Id {
    Known(u16),
    Text(String),
}

/// A request body: any bytes, or a JSON object whose fields are the API's
/// own names with values of any JSON type.
#[derive(Arbitrary, Debug)]
enum Body {
    Raw(Vec<u8>),
    Object(Vec<(Field, Scalar)>),
}

#[derive(Arbitrary, Debug)]
enum Field {
    Kind,
    With,
    Title,
    Members,
    Role,
    Body,
    Priority,
    ReplyTo,
    Revocation,
    Device,
    Name,
    Roles,
    Member,
    Expires,
    Confirm,
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum Scalar {
    Text(String),
    /// A kind, priority or role the API knows.
    Word(u8),
    Member(u16),
    Message(u16),
    /// The team authority's genuine revocation of Ben, hex, damaged.
    Revocation(Vec<Damage>),
    Number(i64),
    Float(f64),
    Bool(bool),
    Null,
    List(Vec<u16>),
}

const WORDS: &[&str] = &[
    "direct",
    "group",
    "role",
    "routine",
    "urgent",
    "charge-nurse",
    "",
];

/// What the node holds that a request may name.
struct Known {
    conversations: Vec<ConversationId>,
    messages: Vec<MessageId>,
    members: Vec<String>,
}

pub fn api_json(data: &[u8]) {
    let Some(calls) = structured::<Vec<Call>>(data) else {
        return;
    };
    let mut o = Opened::genuine();
    let conversations: Vec<ConversationId> = o.node.conversation_ids().copied().collect();
    let messages = conversations
        .iter()
        .flat_map(|c| o.node.history(c, None).unwrap_or_default())
        .map(|m| m.id)
        .collect();
    let members = o.node.directory().map(|c| c.member.to_string()).collect();
    let known = Known {
        conversations,
        messages,
        members,
    };
    for call in calls.iter().take(8) {
        carry_out(&mut o, &known, call);
    }
    for id in &known.conversations {
        assert!(
            views::history(&o.node, id, None).is_some(),
            "a conversation became unreadable"
        );
    }
    assert_eq!(o.node.contained_panics(), 0, "a request panicked the node");
}

/// What `api/server.rs` does with the call.
fn carry_out(o: &mut Opened, known: &Known, call: &Call) {
    match call {
        Call::Create(body) => {
            let Ok(req) = serde_json::from_slice::<NewConversation>(&body.bytes(known)) else {
                return;
            };
            if let Ok(cmd) = views::create_command(&o.node, req) {
                let _ = o.command(cmd);
            }
        }
        Call::Send(id, body) => {
            let Ok(conversation) = id.text(&known.conversations).parse() else {
                return;
            };
            let Ok(req) = serde_json::from_slice::<SendRequest>(&body.bytes(known)) else {
                return;
            };
            let _ = o.command(Command::Send {
                conversation,
                body: req.body,
                priority: req.priority,
                reply_to: req.reply_to,
                fields: Default::default(),
            });
        }
        Call::Revoke(body) => {
            let Ok(req) = serde_json::from_slice::<RevokeRequest>(&body.bytes(known)) else {
                return;
            };
            if let Some(rev) = req.decode() {
                let _ = o.command(Command::Revoke(rev));
            }
        }
        Call::Ack(id, message) => {
            let (Ok(conversation), Ok(message)) = (
                id.text(&known.conversations).parse(),
                message.text(&known.messages).parse(),
            ) else {
                return;
            };
            let _ = o.command(Command::Ack {
                conversation,
                message,
            });
        }
        Call::Read(id) => {
            if let Ok(conversation) = id.text(&known.conversations).parse() {
                let _ = o.command(Command::MarkRead { conversation });
            }
        }
        Call::History(id, before, limit) => {
            if let Ok(id) = id.text(&known.conversations).parse::<ConversationId>() {
                let before = before
                    .as_ref()
                    .map(|b| b.text(&known.messages).parse::<MessageId>());
                match before {
                    Some(Err(_)) => {}
                    Some(Ok(b)) => {
                        let _ = views::history_page(
                            &o.node,
                            &id,
                            Some(&b),
                            limit.unwrap_or(usize::MAX),
                        );
                    }
                    None => {
                        let _ = views::history(&o.node, &id, *limit);
                    }
                }
            }
        }
        Call::Admin(body) => {
            let bytes = body.bytes(known);
            let _ = serde_json::from_slice::<huddle::web::AdmitForm>(&bytes);
            let _ = serde_json::from_slice::<huddle::web::RevokeForm>(&bytes);
        }
        Call::Find(prefix) => {
            if !prefix.is_empty() && prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
                let _ = views::find_messages(&o.node, prefix);
            }
        }
    }
}

impl Id {
    fn text<T: Clone + ToString>(&self, known: &[T]) -> String {
        match self {
            Id::Known(p) => pick(known, *p).map(|x| x.to_string()).unwrap_or_default(),
            Id::Text(t) => t.clone(),
        }
    }
}

impl Body {
    fn bytes(&self, known: &Known) -> Vec<u8> {
        match self {
            Body::Raw(b) => b.clone(),
            Body::Object(fields) => {
                let mut map = Map::new();
                for (f, v) in fields {
                    map.insert(f.name(), v.value(known));
                }
                serde_json::to_vec(&Value::Object(map)).expect("JSON values serialize")
            }
        }
    }
}

impl Field {
    fn name(&self) -> String {
        let name = match self {
            Field::Kind => "kind",
            Field::With => "with",
            Field::Title => "title",
            Field::Members => "members",
            Field::Role => "role",
            Field::Body => "body",
            Field::Priority => "priority",
            Field::ReplyTo => "reply_to",
            Field::Revocation => "revocation",
            Field::Device => "device",
            Field::Name => "name",
            Field::Roles => "roles",
            Field::Member => "member",
            Field::Expires => "expires",
            Field::Confirm => "confirm",
            Field::Other(s) => return s.clone(),
        };
        name.into()
    }
}

impl Scalar {
    fn value(&self, known: &Known) -> Value {
        match self {
            Scalar::Text(s) => Value::from(s.as_str()),
            Scalar::Word(w) => Value::from(WORDS[usize::from(*w) % WORDS.len()]),
            Scalar::Member(p) => Value::from(pick(&known.members, *p).unwrap_or_default()),
            Scalar::Message(p) => Value::from(
                pick(&known.messages, *p)
                    .map(|m| m.to_string())
                    .unwrap_or_default(),
            ),
            Scalar::Revocation(damage) => {
                let mut b = super::stored::revocation().encode();
                damage.iter().for_each(|d| d.apply(&mut b));
                Value::from(data_encoding::HEXLOWER.encode(&b))
            }
            Scalar::Number(n) => Value::from(*n),
            Scalar::Float(x) => serde_json::Number::from_f64(*x).map_or(Value::Null, Value::Number),
            Scalar::Bool(b) => Value::from(*b),
            Scalar::Null => Value::Null,
            Scalar::List(picks) => Value::Array(
                picks
                    .iter()
                    .filter_map(|p| pick(&known.members, *p))
                    .map(Value::from)
                    .collect(),
            ),
        }
    }
}
