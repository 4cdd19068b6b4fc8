//! The `huddle` command line: argument parsing, the error a user sees, and
//! dispatch to one file per group of commands.
//!
//! Invariants: arguments are parsed and validated before anything touches
//! the data directory; every failure reaches the user as one sentence that
//! says what went wrong and what to do (never a debug dump), with a non-zero
//! exit; results go to stdout (as JSON with `--json`), notes to stderr.

#[macro_use]
mod output;
pub(crate) mod admin;
mod args;
mod attach;
mod audit;
mod backend;
mod clinical;
mod demo;
mod error;
mod export;
mod lock;
mod offline;
mod passphrase;
mod pin;
mod render;
mod resolve;
mod run;
mod setup;
mod talk;

use std::fmt;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::OnceLock;

use clap::{CommandFactory, Parser};

pub use args::Cli;
use args::Cmd;
pub use error::{exit, CliError};

use crate::datadir::DataDir;

pub type Result<T, E = CliError> = std::result::Result<T, E>;

/// How to print: JSON or text, and how chatty.
#[derive(Clone, Copy, Debug)]
pub struct Out {
    pub json: bool,
    pub quiet: bool,
}

impl Out {
    /// A hint or a status line for a person (stderr, silenced by -q).
    pub fn note(&self, msg: impl fmt::Display) {
        if !self.quiet {
            output::note(format_args!("{msg}"));
        }
    }

    pub fn print_json<T: serde::Serialize>(&self, v: &T) {
        outln!(
            "{}",
            serde_json::to_string_pretty(v).expect("output serializes")
        );
    }
}

/// Everything a command needs besides its own arguments.
pub struct Ctx {
    pub dir: DataDir,
    pub out: Out,
}

static LOCAL_OFFSET: OnceLock<time::UtcOffset> = OnceLock::new();

/// The local time zone offset, read once at start while the process has a
/// single thread (reading it later is not sound on Unix).
pub(crate) fn local_offset() -> time::UtcOffset {
    *LOCAL_OFFSET.get_or_init(|| time::UtcOffset::UTC)
}

/// The entry point of the binary.
pub fn main() -> ExitCode {
    // Before any thread or file exists: everything this process creates,
    // sled's files included, is then owner-only.
    crate::private_dir::owner_only_umask();
    let _ =
        LOCAL_OFFSET.set(time::UtcOffset::current_local_offset().unwrap_or(time::UtcOffset::UTC));
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    init_logging(cli.verbose, cli.quiet);
    let json = cli.json;
    match run(cli) {
        // A reader that left took nothing wrong with it: quiet, and 0.
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => e.report(json),
    }
}

/// clap's own answer to arguments it cannot parse, or to `--help`; under
/// `--json` a usage error is one `{"error": …}` like every other.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    let informational = matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    );
    // Only an explicit `--json` before a `--` counts: the arguments did
    // not parse, so that is all we know.
    let json = std::env::args_os()
        .skip(1)
        .take_while(|a| a != "--")
        .any(|a| a == "--json");
    if informational || !json {
        let _ = e.print();
        // 0 for help asked for, 2 (exit::USAGE) for anything else.
        return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(exit::USAGE));
    }
    let text = e.render().to_string();
    let sentence = text
        .lines()
        .next()
        .unwrap_or_default()
        .trim_start_matches("error: ")
        .to_owned();
    CliError::usage(sentence).report(true)
}

fn init_logging(verbose: u8, quiet: u8) {
    use tracing_subscriber::EnvFilter;
    let level = match (verbose, quiet) {
        (_, q) if q >= 2 => "off",
        (_, 1) => "error",
        (0, _) => "warn",
        (1, _) => "info",
        (2, _) => "debug",
        _ => "trace",
    };
    // Our own crate at the chosen level; libraries one notch quieter.
    // yamux warns whenever a connection ends untidily ("Failure while
    // closing connection"): peers come and go, so below -vv that is noise.
    let default = match level {
        "warn" => "warn,yamux=error".to_owned(),
        "info" => "warn,huddle=info,yamux=error".to_owned(),
        "debug" => "info,huddle=debug".to_owned(),
        other => other.to_owned(),
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never into a file
        // or a pipe.
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}

fn data_dir(cli: &Cli) -> Result<DataDir> {
    let path: PathBuf = match &cli.data_dir {
        Some(p) => p.clone(),
        None => DataDir::default_path().ok_or_else(|| {
            CliError::new(
                "cannot find this platform's data directory: pass --data-dir DIR or set HUDDLE_DATA_DIR",
            )
        })?,
    };
    Ok(DataDir::with_passphrase(
        path,
        crate::datadir::passphrase_source(cli.passphrase_file.clone()),
    ))
}

fn run(cli: Cli) -> Result<()> {
    let out = Out {
        json: cli.json,
        quiet: cli.quiet > 0,
    };
    if let Cmd::Completions { shell } = &cli.command {
        let mut cmd = Cli::command();
        // Into memory first: clap_complete panics if its writer fails.
        let mut script = Vec::new();
        clap_complete::generate(*shell, &mut cmd, "huddle", &mut script);
        output::bytes(&script);
        return Ok(());
    }
    if let Cmd::Demo(a) = &cli.command {
        return demo::run(a, out);
    }
    let ctx = Ctx {
        dir: data_dir(&cli)?,
        out,
    };
    // Every command reads or writes the data directory: none trusts one
    // that others could have written, or leaves it readable to them.
    ctx.dir.protect()?;
    match cli.command {
        Cmd::Init(a) => setup::init(&ctx, a),
        Cmd::Passphrase(p) => passphrase::run(&ctx, p),
        Cmd::Pin(p) => pin::run(&ctx, p),
        Cmd::Export(a) => export::run(&ctx, a),
        Cmd::Audit(a) => audit::run(&ctx, a),
        Cmd::Whoami => setup::whoami(&ctx),
        Cmd::Team(t) => setup::team(&ctx, t),
        Cmd::Run(a) => run::run(&ctx, a),
        Cmd::Chat(args::ChatCmd::New(a)) => talk::chat_new(&ctx, a),
        Cmd::Chats => talk::chats(&ctx),
        Cmd::Send(a) => talk::send(&ctx, a),
        Cmd::History(a) => talk::history(&ctx, a),
        Cmd::Read(a) => talk::read(&ctx, a),
        Cmd::Ack(a) => talk::ack(&ctx, a),
        Cmd::Fetch(a) => attach::fetch(&ctx, &a.message, &a.out),
        Cmd::Peers => talk::peers(&ctx),
        Cmd::Alerts => clinical::alerts(&ctx),
        Cmd::Oncall(c) => clinical::oncall(&ctx, c),
        Cmd::Remind(c) => clinical::remind(&ctx, c),
        Cmd::Open(a) => run::open(&ctx, a),
        Cmd::Demo(_) | Cmd::Completions { .. } => unreachable!("handled above"),
    }
}

/// Milliseconds since the Unix epoch, from the system clock.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Parses a duration such as `90d`, `12h`, `52w`, `1y`, `30m` or `45s` into ms.
pub(crate) fn parse_duration(s: &str) -> Result<u64> {
    let bad = || {
        CliError::usage(format!(
            "\"{s}\" is not a duration: write a number and a unit, e.g. 12h, 90d, 52w or 1y"
        ))
    };
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| bad())?;
    let unit_ms: u64 = match unit.trim() {
        "s" => 1_000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        "y" => 365 * 86_400_000,
        _ => return Err(bad()),
    };
    match n.checked_mul(unit_ms) {
        Some(ms) if ms > 0 => Ok(ms),
        _ => Err(bad()),
    }
}

/// How long a membership asked for with `--expires` lasts, in ms, within
/// the team's policy.
pub(crate) fn membership_length(expires: &str) -> Result<u64> {
    let ms = parse_duration(expires)?;
    let max = crate::membership::TeamPolicy::default().max_membership_ms;
    if ms > max {
        return Err(CliError::usage(format!(
            "--expires {} is longer than the team allows: a membership lasts at most {} days; admit the device again when it runs out",
            expires.trim(),
            max / 86_400_000
        )));
    }
    Ok(ms)
}

/// Turns what a person typed as a role ("Charge Nurse") into a role slug
/// ("charge-nurse"), or explains what a role may be.
pub(crate) fn normalize_role(r: &str) -> Result<String> {
    let slug = r
        .trim()
        .to_lowercase()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join("-");
    if crate::membership::valid_role(&slug) {
        Ok(slug)
    } else {
        Err(CliError::usage(format!(
            "\"{r}\" is not a role: use 1 to 64 letters, digits or '-', e.g. charge-nurse"
        )))
    }
}

pub(crate) fn check_name(n: &str) -> Result<String> {
    let n = n.trim();
    if n.is_empty() || n.len() > crate::membership::MAX_NAME_LEN {
        return Err(CliError::usage(format!(
            "a name must be 1 to {} bytes long",
            crate::membership::MAX_NAME_LEN
        )));
    }
    Ok(n.to_owned())
}

/// A tokio runtime for the commands that run a node (one thread: the shell
/// is a single loop).
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::new(format!("cannot start the async runtime: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_roles() {
        assert_eq!(parse_duration("90d").unwrap(), 90 * 86_400_000);
        assert_eq!(parse_duration("12h").unwrap(), 12 * 3_600_000);
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("0d").is_err());
        assert_eq!(normalize_role("Charge Nurse").unwrap(), "charge-nurse");
        assert!(normalize_role("nurse!").is_err());
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }
}
