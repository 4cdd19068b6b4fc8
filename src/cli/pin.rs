//! `huddle pin set | clear`: the PIN that unlocks this device's locked
//! screen, beside the passphrase (`datadir/pin.rs` keeps it hashed).
//!
//! Invariants: setting a PIN in an encrypted directory first unlocks it
//! with the passphrase (whoever sets a PIN proves they hold it); the PIN
//! is read from a file or asked twice without echo, never from an argument
//! (it would sit in the shell's history); a running node reads the file at
//! each unlock attempt, so neither command needs it stopped.

use std::io::Read;
use std::path::Path;

use zeroize::Zeroizing;

use super::args::PinCmd;
use super::{CliError, Ctx, Result};
use crate::datadir::{MAX_PIN, MIN_PIN};

pub fn run(ctx: &Ctx, cmd: PinCmd) -> Result<()> {
    ctx.dir.identity_exists()?;
    match cmd {
        PinCmd::Set { pin_file } => {
            // The passphrase first (asked now if at a terminal), then the PIN.
            ctx.dir.keys()?;
            let pin = match pin_file {
                Some(f) => read_pin_file(&f)?,
                None => prompt()?,
            };
            ctx.dir.set_pin(&pin)?;
            record(ctx, false)?;
            done(
                ctx,
                "set",
                "The PIN is set: it unlocks this device's locked screen, as the passphrase does.",
            );
        }
        PinCmd::Clear => {
            if ctx.dir.clear_pin()? {
                record(ctx, true)?;
                done(
                    ctx,
                    "cleared",
                    "The PIN is removed: the screen unlocks only with the passphrase.",
                );
            } else {
                done(ctx, "none", "No PIN was set.");
            }
        }
    }
    Ok(())
}

/// The PIN in `path`: its text up to a last newline.
fn read_pin_file(path: &Path) -> Result<Zeroizing<String>> {
    let bad = |why: String| CliError::new(format!("{}: {why}", path.display()));
    let mut bytes = Zeroizing::new(Vec::new());
    std::fs::File::open(path)
        .and_then(|f| f.take(4 * MAX_PIN as u64 + 3).read_to_end(&mut bytes))
        .map_err(|e| bad(format!("cannot read the PIN file ({e})")))?;
    let text = std::str::from_utf8(&bytes).map_err(|_| bad("the PIN is not UTF-8 text".into()))?;
    let text = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(text);
    Ok(Zeroizing::new(text.to_owned()))
}

fn prompt() -> Result<Zeroizing<String>> {
    let ask = |what: &str| {
        rpassword::prompt_password(what)
            .map(Zeroizing::new)
            .map_err(|e| {
                CliError::new(format!(
                    "cannot read a PIN from the terminal ({e}): give it with --pin-file FILE"
                ))
            })
    };
    let first = ask(&format!("New PIN ({MIN_PIN} to {MAX_PIN} characters): "))?;
    let again = ask("The same PIN again: ")?;
    if first != again {
        return Err(CliError::new("the two PINs differ; nothing was changed"));
    }
    Ok(first)
}

/// The change goes into this device's audit trail (through the running
/// node, or on the store).
fn record(ctx: &Ctx, cleared: bool) -> Result<()> {
    let r = crate::api::audit::AuditRecord::PinChanged { cleared };
    super::backend::Backend::open(ctx)?.record(r)
}

fn done(ctx: &Ctx, what: &str, text: &str) {
    if ctx.out.json {
        ctx.out.print_json(&serde_json::json!({ "pin": what }));
    } else {
        outln!("{text}");
    }
}
