//! The one error type of the `huddle` command line, and how it reaches the
//! user: a sentence on stderr, or `{"error": "…"}` (the API's `ErrorBody`)
//! on stdout under `--json`, with an exit code that says what kind of
//! failure it was.
//!
//! Invariant: every failure of a command is a [`CliError`]; its text is one
//! sentence that says what went wrong and what to do, and its kind alone
//! decides the exit code (the table in the README).

use std::process::ExitCode;

use crate::store::StoreError;

/// A failure, as one sentence for the user, of a kind a script can tell
/// apart by the exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Anything not named below (exit 1).
    #[error("{0}")]
    Failed(String),
    /// The arguments cannot mean anything, whatever the data (exit 2, as
    /// clap's own usage errors).
    #[error("{0}")]
    Usage(String),
    /// What the arguments name is not there: a conversation, member or
    /// message (exit 3).
    #[error("{0}")]
    NotFound(String),
    /// The command needs a running node and none answers (exit 4).
    #[error("{0}")]
    NoNode(String),
    /// Another process holds the data directory and did not let go in
    /// time (exit 4).
    #[error("the data directory is locked by another huddle process{}: {hint}", pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    Locked {
        pid: Option<u32>,
        hint: &'static str,
    },
}

/// Exit codes: the README's table.
pub mod exit {
    pub const OK: u8 = 0;
    pub const FAILED: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const NOT_FOUND: u8 = 3;
    pub const UNAVAILABLE: u8 = 4;
}

/// What to tell the holder's user when we gave up waiting for the lock.
pub const LOCKED_HINT: &str = "stop it first, or use another --data-dir";

impl CliError {
    pub fn new(msg: impl Into<String>) -> CliError {
        CliError::Failed(msg.into())
    }

    pub fn usage(msg: impl Into<String>) -> CliError {
        CliError::Usage(msg.into())
    }

    pub fn not_found(msg: impl Into<String>) -> CliError {
        CliError::NotFound(msg.into())
    }

    pub fn no_node(msg: impl Into<String>) -> CliError {
        CliError::NoNode(msg.into())
    }

    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Failed(_) => exit::FAILED,
            CliError::Usage(_) => exit::USAGE,
            CliError::NotFound(_) => exit::NOT_FOUND,
            CliError::NoNode(_) | CliError::Locked { .. } => exit::UNAVAILABLE,
        }
    }

    /// Tells the user, in the form they asked for, and gives the exit code.
    pub fn report(&self, json: bool) -> ExitCode {
        if json {
            let body = crate::api::types::ErrorBody {
                error: self.to_string(),
            };
            // One line, so that it also ends a stream of JSON lines
            // (`run`, `history --follow`) as one more value.
            super::output::line(format_args!(
                "{}",
                serde_json::to_string(&body).expect("an error body serializes")
            ));
        } else {
            super::output::note(format_args!("error: {self}"));
        }
        ExitCode::from(self.exit_code())
    }
}

macro_rules! sentence_from {
    ($($t:ty),*) => {$(
        impl From<$t> for CliError {
            fn from(e: $t) -> CliError {
                CliError::Failed(e.to_string())
            }
        }
    )*};
}

sentence_from!(
    crate::datadir::DataDirError,
    crate::node::LoadError,
    crate::membership::TokenError,
    crate::membership::CertFieldError,
    crate::api::ApiError,
    crate::net::ShellError
);

impl From<crate::node::CommandError> for CliError {
    fn from(e: crate::node::CommandError) -> CliError {
        use crate::node::CommandError as E;
        match e {
            E::UnknownConversation(_) | E::UnknownMessage(_) => CliError::NotFound(e.to_string()),
            e => CliError::Failed(e.to_string()),
        }
    }
}

impl From<crate::api::client::ClientError> for CliError {
    fn from(e: crate::api::client::ClientError) -> CliError {
        use crate::api::client::ClientError as E;
        match e {
            E::Unreachable { .. } => CliError::NoNode(e.to_string()),
            e => CliError::Failed(e.to_string()),
        }
    }
}

impl From<StoreError> for CliError {
    fn from(e: StoreError) -> CliError {
        match e {
            StoreError::Locked { pid } => CliError::Locked {
                pid,
                hint: LOCKED_HINT,
            },
            e => CliError::Failed(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_has_its_exit_code() {
        assert_eq!(CliError::new("x").exit_code(), 1);
        assert_eq!(CliError::usage("x").exit_code(), 2);
        assert_eq!(CliError::not_found("x").exit_code(), 3);
        assert_eq!(CliError::no_node("x").exit_code(), 4);
        let locked = CliError::from(StoreError::Locked { pid: Some(4711) });
        assert_eq!(locked.exit_code(), 4);
        assert_eq!(
            locked.to_string(),
            "the data directory is locked by another huddle process (pid 4711): stop it first, or use another --data-dir"
        );
    }
}
