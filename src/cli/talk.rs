//! Conversation commands: `chat new`, `chats`, `send`, `history`, `read`,
//! `ack`, `peers`. Each works through the running node's API when there is
//! one, and on the store otherwise, and says which.

use std::collections::BTreeMap;

use serde_json::json;

use super::args::{AckArgs, ChatNewArgs, ConversationArg, HistoryArgs, SendArgs};
use super::backend::{Backend, STORED_LOCALLY};
use super::{render, resolve, CliError, Ctx, Result};
use crate::api::types::{Chat, EventJson, HistoryMessage, Member, NewConversation, SendRequest};
use crate::ids::MessageId;
use crate::message::{Priority, MAX_BODY_LEN};

fn offline_note(ctx: &Ctx, b: &Backend) {
    if b.is_offline() {
        ctx.out
            .note(format!("No node is running: {STORED_LOCALLY}."));
    }
}

pub(super) fn find_chat(b: &Backend, query: &str) -> Result<Chat> {
    let chats = b.chats()?;
    Ok(resolve::conversation(&chats, query)?.clone())
}

pub fn chat_new(ctx: &Ctx, a: ChatNewArgs) -> Result<()> {
    let mut b = Backend::open(ctx)?;
    let req = if let Some(role) = &a.role {
        NewConversation::Role {
            role: super::normalize_role(role)?,
        }
    } else {
        if a.with.is_empty() {
            return Err(CliError::usage(
                "say who the conversation is with: --with \"Name\" (repeat it for a group, with --group \"Title\"), or --role ROLE for a role channel",
            ));
        }
        let dir = b.directory()?;
        let mut members = Vec::new();
        for w in &a.with {
            members.push(resolve::member(&dir, w)?.member);
        }
        match (&a.group, members.as_slice()) {
            (None, [one]) => NewConversation::Direct { with: *one },
            (None, _) => {
                return Err(CliError::usage(
                    "a conversation with several people is a group: add --group \"Title\"",
                ))
            }
            (Some(title), _) => NewConversation::Group {
                title: title.clone(),
                members,
            },
        }
    };
    let id = b.create(req)?;
    let title = b
        .chats()?
        .into_iter()
        .find(|c| c.id == id)
        .map(|c| c.title)
        .unwrap_or_default();
    if ctx.out.json {
        ctx.out
            .print_json(&json!({ "id": id, "title": title, "offline": b.is_offline() }));
    } else {
        outln!("{id}");
        ctx.out.note(format!(
            "Conversation \"{title}\" is ready: huddle send \"{title}\" \"your message\""
        ));
    }
    offline_note(ctx, &b);
    Ok(())
}

pub fn chats(ctx: &Ctx) -> Result<()> {
    let b = Backend::open(ctx)?;
    let list = b.chats()?;
    if ctx.out.json {
        ctx.out.print_json(&list);
    } else {
        out!("{}", render::chats(&list));
    }
    Ok(())
}

pub fn send(ctx: &Ctx, a: SendArgs) -> Result<()> {
    let mut b = Backend::open(ctx)?;
    let chat = find_chat(&b, &a.conversation)?;
    let reply_to = match &a.reply_to {
        None => None,
        Some(q) => {
            let prefix = resolve::message_prefix(q)?;
            let found: Vec<_> = b
                .find_messages(&prefix)?
                .into_iter()
                .filter(|r| r.conversation == chat.id)
                .collect();
            Some(resolve::message(&found, q)?.message)
        }
    };
    let priority = if a.stat {
        Priority::Stat
    } else if a.urgent {
        Priority::Urgent
    } else {
        Priority::Routine
    };
    let body = match a.text {
        Some(t) if t == "-" => body_from_stdin()?,
        Some(t) => t,
        None => String::new(),
    };
    let attachments = super::attach::prepare(&mut b, &a.attach)?;
    let ack_by = a
        .ack_by
        .as_deref()
        .map(|who| super::clinical::ack_by(&b, who))
        .transpose()?;
    let id = b.send(
        chat.id,
        SendRequest {
            body,
            priority,
            reply_to,
            ack_by,
            reminder: None,
            attachments,
        },
    )?;
    let (self_revoked, unreachable) = revoked_around(&b, &chat)?;
    if ctx.out.json {
        ctx.out.print_json(&json!({
            "id": id,
            "conversation": chat.id,
            "offline": b.is_offline(),
            "device_revoked": self_revoked,
            "revoked_members": unreachable.iter().map(|m| m.member).collect::<Vec<_>>(),
        }));
    } else {
        outln!("{id}");
    }
    if self_revoked {
        ctx.out.note(
            "This device's membership was revoked: the message is stored on this device only, and the team will not accept it (an administrator can admit this device again).",
        );
        return Ok(());
    }
    if b.is_offline() {
        offline_note(ctx, &b);
    } else {
        ctx.out.note(format!(
            "Sent to \"{}\" (stored safely on this device).",
            chat.title
        ));
    }
    if !unreachable.is_empty() {
        let names: Vec<&str> = unreachable.iter().map(|m| m.name.as_str()).collect();
        let others = chat.members.len().saturating_sub(1);
        ctx.out.note(format!(
            "Warning: {} {} revoked from the team: this message will never reach them (it is stored, and {}).",
            names.join(", "),
            if names.len() == 1 { "was" } else { "were" },
            if unreachable.len() >= others {
                "nobody else in this conversation can receive it"
            } else {
                "goes to the conversation's other members"
            }
        ));
    }
    Ok(())
}

/// Whether this device was revoked, and which of the conversation's other
/// members were: what a sender must be told, since the message is stored
/// either way. A role channel's members change, so only its listed ones count.
fn revoked_around(b: &Backend, chat: &Chat) -> Result<(bool, Vec<Member>)> {
    let status = b.status()?;
    if status.revoked {
        return Ok((true, Vec::new()));
    }
    let unreachable = b
        .directory()?
        .into_iter()
        .filter(|m| {
            m.revoked && Some(m.member) != status.member && chat.members.contains(&m.member)
        })
        .collect();
    Ok((false, unreachable))
}

/// The message body piped in for `send -`, bounded before it is read
/// whole: a few KiB past the limit leave room for surrounding whitespace,
/// which the node trims before it checks the length.
fn body_from_stdin() -> Result<String> {
    use std::io::Read;
    let cap = MAX_BODY_LEN + 4096;
    let mut buf = Vec::new();
    std::io::stdin()
        .lock()
        .take(cap as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| {
            CliError::new(format!(
                "could not read the message from standard input: {e}"
            ))
        })?;
    if buf.len() > cap {
        return Err(CliError::usage(format!(
            "the message on standard input is longer than the limit of {MAX_BODY_LEN} bytes (16 KiB): split it into several messages"
        )));
    }
    String::from_utf8(buf)
        .map_err(|_| CliError::usage("the message on standard input is not UTF-8 text"))
}

pub fn history(ctx: &Ctx, a: HistoryArgs) -> Result<()> {
    if a.limit == Some(0) {
        return Err(CliError::usage(
            "--limit 0 would show nothing: give 1 or more, or leave --limit out for the whole conversation",
        ));
    }
    let mut b = if a.follow {
        Backend::node(ctx, "follow new messages")?
    } else {
        Backend::open(ctx)?
    };
    let chat = find_chat(&b, &a.conversation)?;
    b.record_read(chat.id)?;
    let msgs = b.history(&chat.id, a.limit)?;
    let names = render::names(&b.directory()?);
    if ctx.out.json {
        if a.follow {
            for m in &msgs {
                outln!("{}", serde_json::to_string(m).expect("serializes"));
            }
        } else {
            ctx.out.print_json(&msgs);
        }
    } else {
        out!("{}", render::history(&chat, &msgs, &names));
    }
    if a.follow {
        follow(ctx, &b, &chat, msgs)?;
    }
    Ok(())
}

/// Prints new messages (and new acknowledgements) until the node stops.
fn follow(ctx: &Ctx, b: &Backend, chat: &Chat, seen: Vec<HistoryMessage>) -> Result<()> {
    let client = b.client(ctx, "follow new messages")?;
    let mut events = client.events()?;
    let mut seen: BTreeMap<MessageId, HistoryMessage> =
        seen.into_iter().map(|m| (m.id, m)).collect();
    ctx.out.note("Following; press Ctrl-C to stop.");
    // The first pass catches anything that arrived between the first read
    // and the subscription.
    let mut refresh = true;
    loop {
        if !refresh {
            match events.next() {
                None => break,
                Some(EventJson::Lagged { .. }) => {}
                Some(e) if e.conversation() == Some(chat.id) => {}
                Some(_) => continue,
            }
        }
        refresh = false;
        let names = render::names(&b.directory()?);
        for m in b.history(&chat.id, None)? {
            match seen.get(&m.id) {
                None => {
                    if ctx.out.json {
                        outln!("{}", serde_json::to_string(&m).expect("serializes"));
                    } else {
                        out!("{}", render::message(&m, chat, &names));
                    }
                }
                Some(old) if old.acked_by != m.acked_by && !ctx.out.json => {
                    let new: Vec<String> = m
                        .acked_by
                        .iter()
                        .filter(|x| !old.acked_by.contains(x))
                        .map(|x| render::name_of(&names, x))
                        .collect();
                    if !new.is_empty() {
                        outln!(
                            "       [{}] acknowledged by {}",
                            render::short(&m.id.to_hex()),
                            new.join(", ")
                        );
                    }
                }
                Some(_) => {}
            }
            seen.insert(m.id, m);
        }
        // The reader left (`| head`): nobody to follow for.
        if super::output::closed() {
            return Ok(());
        }
    }
    ctx.out.note("The node stopped.");
    Ok(())
}

pub fn read(ctx: &Ctx, a: ConversationArg) -> Result<()> {
    let mut b = Backend::open(ctx)?;
    let chat = find_chat(&b, &a.conversation)?;
    b.mark_read(chat.id)?;
    if ctx.out.json {
        ctx.out
            .print_json(&json!({ "conversation": chat.id, "offline": b.is_offline() }));
    } else {
        outln!("Marked \"{}\" as read.", chat.title);
    }
    offline_note(ctx, &b);
    Ok(())
}

pub fn ack(ctx: &Ctx, a: AckArgs) -> Result<()> {
    let mut b = Backend::open(ctx)?;
    let prefix = resolve::message_prefix(&a.message)?;
    let found = b.find_messages(&prefix)?;
    let r = resolve::message(&found, &a.message)?.clone();
    b.ack(&r)?;
    let title = b
        .chats()?
        .into_iter()
        .find(|c| c.id == r.conversation)
        .map(|c| c.title)
        .unwrap_or_default();
    if ctx.out.json {
        ctx.out.print_json(&json!({
            "message": r.message,
            "conversation": r.conversation,
            "offline": b.is_offline(),
        }));
    } else {
        outln!(
            "Acknowledged [{}] in \"{title}\".",
            render::short(&r.message.to_hex())
        );
    }
    offline_note(ctx, &b);
    Ok(())
}

pub fn peers(ctx: &Ctx) -> Result<()> {
    let b = Backend::node(ctx, "see who is connected")?;
    let list = b.peers(ctx)?;
    if ctx.out.json {
        ctx.out.print_json(&list);
    } else {
        // With nobody connected, say how this node looks for peers.
        let reach = match list.is_empty() {
            true => Some(b.status()?),
            false => None,
        };
        out!("{}", render::peers(&list, reach.as_ref()));
    }
    Ok(())
}
