//! Turns what a person typed into ids: conversations by id, unique id prefix
//! or title; members by member id, unique prefix or display name; messages
//! by id or unique prefix.
//!
//! Invariant: a name that could mean more than one thing is never guessed:
//! the error lists the candidates. A role channel answers to the name it is
//! shown by ("#charge-nurse"), to its role ("charge-nurse"), and to a unique
//! start of either ("#charge", "charge").

use super::{CliError, Result};
use crate::api::types::{Chat, Member, MessageRef};

fn short(hex: &str) -> &str {
    &hex[..8.min(hex.len())]
}

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Picks one of `matches`, or explains why not.
fn one<'a, T>(
    matches: Vec<&'a T>,
    what: &str,
    query: &str,
    label: impl Fn(&T) -> String,
    list_hint: &str,
) -> Result<&'a T> {
    match matches.as_slice() {
        [one] => Ok(one),
        [] => Err(CliError::not_found(format!(
            "no {what} \"{query}\": {list_hint}"
        ))),
        many => {
            let names: Vec<String> = many.iter().map(|m| label(m)).collect();
            Err(CliError::new(format!(
                "\"{query}\" matches {} {what}s: {}; use more of the id",
                many.len(),
                names.join(", ")
            )))
        }
    }
}

/// A conversation by exact id, exact title (any case), or unique id prefix.
pub fn conversation<'a>(chats: &'a [Chat], query: &str) -> Result<&'a Chat> {
    let q = query.trim();
    let ql = q.to_lowercase();
    let label = |c: &Chat| format!("{} ({}…)", c.title, short(&c.id.to_hex()));
    let hint = "see `huddle chats` for the list, or start one with `huddle chat new`";
    if let Some(c) = chats.iter().find(|c| c.id.to_hex() == ql) {
        return Ok(c);
    }
    // A role channel is shown as "#role" and also answers to its bare role,
    // so the '#' a person copies from the screen is optional.
    let bare = ql.strip_prefix('#').unwrap_or(&ql);
    let titled = |c: &Chat| {
        c.title.to_lowercase() == ql
            || c.role.as_deref() == Some(ql.as_str())
            || c.role.as_deref() == Some(bare)
    };
    let by_title: Vec<&Chat> = chats.iter().filter(|c| titled(c)).collect();
    if !by_title.is_empty() {
        return one(by_title, "conversation", q, label, hint);
    }
    if is_hex(&ql) {
        let by_id: Vec<&Chat> = chats
            .iter()
            .filter(|c| c.id.to_hex().starts_with(&ql))
            .collect();
        if !by_id.is_empty() {
            return one(by_id, "conversation", q, label, hint);
        }
    }
    let by_start: Vec<&Chat> = chats
        .iter()
        .filter(|c| {
            c.title
                .to_lowercase()
                .trim_start_matches('#')
                .starts_with(bare)
        })
        .collect();
    one(by_start, "conversation", q, label, hint)
}

/// A member by exact id, display name (any case), or unique id prefix.
pub fn member<'a>(directory: &'a [Member], query: &str) -> Result<&'a Member> {
    let q = query.trim();
    let ql = q.to_lowercase();
    let label = |m: &Member| format!("{} ({}…)", m.name, short(&m.member.to_hex()));
    let hint = "see `huddle team show` for the members this device knows (a new member appears once their device has connected)";
    if let Some(m) = directory.iter().find(|m| m.member.to_hex() == ql) {
        return Ok(m);
    }
    let by_name: Vec<&Member> = directory
        .iter()
        .filter(|m| m.name.to_lowercase() == ql)
        .collect();
    if !by_name.is_empty() {
        return one(by_name, "member", q, label, hint);
    }
    if is_hex(&ql) {
        let by_id: Vec<&Member> = directory
            .iter()
            .filter(|m| m.member.to_hex().starts_with(&ql))
            .collect();
        if !by_id.is_empty() {
            return one(by_id, "member", q, label, hint);
        }
    }
    // "Ben" for "Ben Okafor", if only one name starts so.
    let by_start: Vec<&Member> = directory
        .iter()
        .filter(|m| m.name.to_lowercase().starts_with(&ql))
        .collect();
    one(by_start, "member", q, label, hint)
}

/// A message among `found` (the answer to a prefix search for `query`).
pub fn message<'a>(found: &'a [MessageRef], query: &str) -> Result<&'a MessageRef> {
    let label = |r: &MessageRef| format!("{}…", short(&r.message.to_hex()));
    one(
        found.iter().collect(),
        "message",
        query.trim(),
        label,
        "message ids are shown by `huddle history`",
    )
}

/// Checks a message id prefix before it is searched for.
pub fn message_prefix(query: &str) -> Result<String> {
    let q = query.trim().to_lowercase();
    if is_hex(&q) {
        Ok(q)
    } else {
        Err(CliError::usage(format!(
            "\"{query}\" is not a message id: use the hex id (or its start) shown by `huddle history`"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ConversationId;

    fn chat(id: u8, title: &str) -> Chat {
        Chat {
            id: ConversationId([id; 16]),
            title: title.into(),
            kind: "group".into(),
            members: vec![],
            role: title.strip_prefix('#').map(str::to_owned),
            messages: 0,
            unread: 0,
            last_activity: None,
            last: None,
            to_ack: 0,
            stat_to_ack: 0,
        }
    }

    #[test]
    fn conversations_by_title_prefix_and_ambiguity() {
        let chats = vec![
            chat(0xab, "Sepsis review"),
            chat(0xac, "Ward 7"),
            chat(0x11, "ward 7"),
        ];
        assert_eq!(
            conversation(&chats, "sepsis REVIEW").unwrap().id,
            chats[0].id
        );
        assert_eq!(conversation(&chats, "abab").unwrap().id, chats[0].id);
        let e = conversation(&chats, "a").unwrap_err().to_string();
        assert!(e.contains("matches 2 conversations"), "{e}");
        assert_eq!(conversation(&chats, "seps").unwrap().id, chats[0].id);
        let e = conversation(&chats, "Ward 7").unwrap_err().to_string();
        assert!(e.contains("matches 2"), "{e}");
        let e = conversation(&chats, "nope").unwrap_err().to_string();
        assert!(e.starts_with("no conversation \"nope\""), "{e}");
    }

    #[test]
    fn role_channels_answer_to_the_name_they_are_shown_by() {
        let chats = vec![chat(0xab, "#charge-nurse"), chat(0xac, "Ward 7")];
        for q in [
            "#charge-nurse",
            "charge-nurse",
            "#charge",
            "charge",
            "#CHARGE",
        ] {
            assert_eq!(conversation(&chats, q).unwrap().id, chats[0].id, "{q}");
        }
    }
}
