//! One policy for the data directory's lock, for every command.
//!
//! The store admits one process at a time. A short-lived command (`chats`,
//! `send`…) goes through the running node's API when one answers, and
//! takes the store only when none does; a command that cannot work without
//! a node (`peers`, `history --follow`) never takes it. Whoever finds the
//! store held waits, polling with a deadline ([`BUSY_WAIT`]) and saying so:
//! `huddle run` for a short-lived command to finish, a short-lived command
//! for it to finish or for a starting node to answer.
//!
//! Invariant: no command fails on the lock at its first try, and none waits
//! longer than [`BUSY_WAIT`] (plus one API probe) for it; the error then
//! names the holder's pid.

use std::time::{Duration, Instant};

use super::error::{CliError, LOCKED_HINT};
use super::{Ctx, Out, Result};
use crate::api::client::ApiClient;
use crate::store::{SledStore, StoreError};

/// How long a command waits for another to let go of the data directory.
pub const BUSY_WAIT: Duration = Duration::from_secs(5);
/// How often it looks again.
const POLL: Duration = Duration::from_millis(20);

/// The node running on the data directory, if one answers on its API.
pub fn running_node(ctx: &Ctx) -> Option<ApiClient> {
    let info = ctx.dir.api_info().ok()??;
    ApiClient::probe(info).map(|(c, _)| c)
}

/// The store for `huddle run`, once no short-lived command holds it.
pub fn store_for_node(ctx: &Ctx) -> Result<SledStore> {
    let mut wait = Wait::new("another huddle command", "to finish");
    loop {
        match ctx.dir.open_store()? {
            Ok(store) => return Ok(store),
            Err(StoreError::Locked { pid }) => {
                // Another node will not finish: say so at once.
                if !wait.told && running_node(ctx).is_some() {
                    return Err(CliError::Locked {
                        pid,
                        hint: "`huddle run` is already running on it (stop it first, or use another --data-dir)",
                    });
                }
                if !wait.again(&ctx.out, pid) {
                    return Err(CliError::Locked {
                        pid,
                        hint: LOCKED_HINT,
                    });
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The running node, or the store if none answers (`open` takes it).
pub fn node_or_store<T>(ctx: &Ctx, open: impl Fn() -> Result<T>) -> Result<Result<ApiClient, T>> {
    let mut wait = Wait::new("another huddle process", "to finish, or its node to answer");
    loop {
        if let Some(client) = running_node(ctx) {
            return Ok(Ok(client));
        }
        match open() {
            Ok(store) => return Ok(Err(store)),
            Err(CliError::Locked { pid, .. }) => {
                if !wait.again(&ctx.out, pid) {
                    return Err(CliError::Locked {
                        pid,
                        hint: "it neither finished nor answered as a running node in time: try again, or stop it",
                    });
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// The running node, for what only a node can do (`what`, e.g. "see who
/// is connected"). A node that is starting (it holds the store, its API
/// is not up yet) is waited for.
pub fn node_only(ctx: &Ctx, what: &str) -> Result<ApiClient> {
    let mut wait = Wait::new(
        "the huddle process holding the data directory",
        "to answer as a node",
    );
    loop {
        if let Some(client) = running_node(ctx) {
            return Ok(client);
        }
        match SledStore::holder(ctx.dir.path())? {
            None => {
                return Err(CliError::no_node(format!(
                    "no node is running on {}: start it with `huddle run` to {what}",
                    ctx.dir.path().display()
                )))
            }
            Some(pid) => {
                if !wait.again(&ctx.out, pid) {
                    return Err(CliError::no_node(format!(
                        "no node answers on {}: another huddle process{} holds it; once it is done, start `huddle run` to {what}",
                        ctx.dir.path().display(),
                        pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
                    )));
                }
            }
        }
    }
}

/// A bounded wait for another process, told to the user once.
struct Wait {
    deadline: Instant,
    told: bool,
    /// "waiting for {who} (pid …) {until}…"
    who: &'static str,
    until: &'static str,
}

impl Wait {
    fn new(who: &'static str, until: &'static str) -> Wait {
        Wait {
            deadline: Instant::now() + BUSY_WAIT,
            told: false,
            who,
            until,
        }
    }

    /// Sleeps one poll interval and says true, or says false once the
    /// deadline has passed.
    fn again(&mut self, out: &Out, pid: Option<u32>) -> bool {
        if Instant::now() >= self.deadline {
            return false;
        }
        if !self.told {
            self.told = true;
            out.note(format!(
                "waiting for {}{} {}…",
                self.who,
                pid.map(|p| format!(" (pid {p})")).unwrap_or_default(),
                self.until
            ));
        }
        std::thread::sleep(POLL);
        true
    }
}
