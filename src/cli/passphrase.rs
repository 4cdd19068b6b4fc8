//! `huddle passphrase set | change`: encrypt a data directory that is not
//! encrypted yet, or wrap its data key under a new passphrase.
//!
//! Invariant: both run with no node on the data directory (`set` rewrites
//! the store, and a running node holds its own copy of the key file's
//! meaning); `change` rewrites only `key.wrap`.

use super::args::PassphraseCmd;
use super::{lock, CliError, Ctx, Result};
use crate::datadir::Passphrase;

pub fn run(ctx: &Ctx, cmd: PassphraseCmd) -> Result<()> {
    ctx.dir.identity_exists()?;
    if lock::running_node(ctx).is_some() {
        return Err(CliError::new(
            "a node is running on this data directory: stop `huddle run` first, then try again",
        ));
    }
    match cmd {
        PassphraseCmd::Set => {
            if ctx.dir.is_encrypted() {
                // `encrypt` says so, and what to run instead.
                ctx.dir.encrypt()?;
            }
            // The plain store, held until it is encrypted: no other
            // command opens it meanwhile.
            let store = lock::store_for_node(ctx)?;
            ctx.dir.encrypt()?;
            let keys = ctx
                .dir
                .keys()?
                .ok_or_else(|| CliError::new("the data key was not kept"))?;
            // Rewrites the store encrypted and removes the plain one.
            drop(store.encrypt(ctx.dir.path(), keys)?);
            record(ctx, true)?;
            done(ctx, "encrypted", "This data directory is now encrypted: a command that reads it without a running node needs its passphrase.");
        }
        PassphraseCmd::Change { new_file } => {
            let source = match new_file {
                Some(f) => Passphrase::File(f),
                None => Passphrase::Prompt,
            };
            ctx.dir.change_passphrase(&source)?;
            record(ctx, false)?;
            done(ctx, "changed", "The passphrase is changed.");
        }
    }
    Ok(())
}

/// The change goes into this device's audit trail (the directory is
/// unlocked already in this process, so nothing more is asked).
fn record(ctx: &Ctx, first: bool) -> Result<()> {
    let r = crate::api::audit::AuditRecord::PassphraseChanged { first };
    super::backend::Backend::open(ctx)?.record(r)
}

fn done(ctx: &Ctx, what: &str, text: &str) {
    if ctx.out.json {
        ctx.out
            .print_json(&serde_json::json!({ "passphrase": what }));
    } else {
        outln!("{text}");
    }
}
