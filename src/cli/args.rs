//! The command line, declared with clap's derive API. Doc comments are the
//! help text; every subcommand's help ends with an example.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand};

/// huddle: a peer-to-peer, offline-first messenger for care teams.
///
/// Every device is a full node: it finds the devices around it, talks to them
/// over encrypted connections and keeps every conversation locally, so the
/// ward keeps talking when the hospital's network or servers are down.
#[derive(Debug, Parser)]
#[command(name = "huddle", version, propagate_version = true)]
#[command(
    after_help = "Start here:\n  huddle demo                               see a whole ward in one process\n  huddle init --name \"Ana Silva\" --role nurse      # asks for a passphrase\n  huddle team create \"St Mary Ward 7\"\n  huddle run"
)]
pub struct Cli {
    /// Where this device keeps its identity, keys and messages
    /// [default: the platform data directory, e.g. ~/.local/share/huddle]
    #[arg(long, global = true, env = "HUDDLE_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// A file holding the data directory's passphrase (for services: on the
    /// same disk it protects nothing against a thief) [default: ask at the terminal]
    #[arg(
        long,
        global = true,
        env = "HUDDLE_PASSPHRASE_FILE",
        value_name = "FILE"
    )]
    pub passphrase_file: Option<PathBuf>,

    /// Print machine-readable JSON instead of text
    #[arg(long, global = true)]
    pub json: bool,

    /// Say more (-v, -vv, -vvv); RUST_LOG overrides
    #[arg(short, long, global = true, action = ArgAction::Count)]
    pub verbose: u8,

    /// Say less: only results and errors (-qq: only errors)
    #[arg(short, long, global = true, action = ArgAction::Count, conflicts_with = "verbose")]
    pub quiet: u8,

    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Create this device's identity: its key and who uses it
    #[command(
        after_help = "Example:\n  huddle init --name \"Ana Silva\" --role nurse --role charge-nurse"
    )]
    Init(InitArgs),

    /// Show this device's identity, team and whether its node is running
    #[command(after_help = "Example:\n  huddle whoami")]
    Whoami,

    /// Create a team, admit devices into it, join one, revoke, show
    #[command(subcommand)]
    #[command(
        after_help = "Examples:\n  huddle team create \"St Mary Ward 7\"\n  huddle team admit 12D3KooW... --name \"Ben Okafor\" --role physician\n  huddle team join HUDDLE1:..."
    )]
    Team(TeamCmd),

    /// Run this device's node in the foreground until Ctrl-C
    #[command(
        after_help = "Examples:\n  huddle run\n  huddle run --peer /ip4/192.168.1.20/tcp/4001      # when multicast is blocked\n  huddle run --listen /ip4/127.0.0.1/tcp/0 --no-mdns --api 127.0.0.1:0"
    )]
    Run(RunArgs),

    /// Start a conversation: 1:1, a named group, or a role channel
    #[command(subcommand)]
    #[command(after_help = "Example:\n  huddle chat new --with \"Ben Okafor\"")]
    Chat(ChatCmd),

    /// List conversations with their unread counts
    #[command(after_help = "Example:\n  huddle chats")]
    Chats,

    /// Send a message; returns once it is safely stored on this device
    #[command(
        after_help = "Examples:\n  huddle send \"Ben Okafor\" \"Bed 4 obs are back, all stable\"\n  huddle send \"Sepsis review\" \"Lactate 4.1 in bed 12\" --urgent\n  huddle send 3fa2 \"Agreed\" --reply-to 9c1b\n  huddle send \"#charge-nurse\" \"Bed 12 crashing\" --stat --ack-by all\n  huddle send \"Wound care\" \"Day 3\" --attach wound.jpg\n  cat handover.txt | huddle send \"#charge-nurse\" -\n\nA message is at most 16 KiB (16384 bytes of UTF-8)."
    )]
    Send(SendArgs),

    /// Show a conversation's messages with receipts
    #[command(
        after_help = "Examples:\n  huddle history \"Sepsis review\" --limit 20\n  huddle history \"Ben Okafor\" --follow"
    )]
    History(HistoryArgs),

    /// Mark everything in a conversation as read
    #[command(after_help = "Example:\n  huddle read \"Sepsis review\"")]
    Read(ConversationArg),

    /// Acknowledge an urgent or STAT message
    #[command(after_help = "Example:\n  huddle ack 9c1b2e")]
    Ack(AckArgs),

    /// Save a message's attachments, fetching them from the team's devices first
    #[command(
        after_help = "Examples:\n  huddle fetch 9c1b2e --out ~/Downloads\n  huddle fetch 9c1b2e --json\n\nFetching needs `huddle run`; what is already on this device is saved without it."
    )]
    Fetch(FetchArgs),

    /// What waits for you: urgent and STAT messages to acknowledge, reminders due
    #[command(
        after_help = "Examples:\n  huddle alerts\n  huddle alerts --json\n\nAcknowledge with `huddle ack MESSAGE`; a reminder with `huddle remind done MESSAGE`."
    )]
    Alerts,

    /// Who is on call for each role, and setting who is
    #[command(subcommand)]
    #[command(
        after_help = "Examples:\n  huddle oncall show\n  huddle oncall set charge-nurse \"Ana Silva\" --from 19:00 --to 07:00"
    )]
    Oncall(OncallCmd),

    /// Reminders in a conversation: set one, mark one done, snooze one
    #[command(subcommand)]
    #[command(
        after_help = "Examples:\n  huddle remind set \"Ward 7\" \"Turn the patient in bed 4\" --in 2h --every 2h --times 6\n  huddle remind done 9c1b\n  huddle remind snooze 9c1b --for 15m"
    )]
    Remind(RemindCmd),

    /// List the devices this node is connected to
    #[command(after_help = "Example:\n  huddle peers")]
    Peers,

    /// Open this device's screen in the browser (the node must be running)
    #[command(
        after_help = "Examples:\n  huddle open\n  huddle open --print     # print a one-time sign-in URL instead"
    )]
    Open(OpenArgs),

    /// Run a whole ward (4 nodes) in this process and tell its story
    #[command(
        after_help = "Examples:\n  huddle demo\n  huddle demo --exit        # tell the story, then stop (for CI)"
    )]
    Demo(DemoArgs),

    /// Export a conversation for the patient record: HL7 FHIR R4 or
    /// huddle's own JSON
    #[command(
        after_help = "Examples:\n  huddle export \"Sepsis review\" --fhir --out sepsis-review.fhir.json\n  huddle export \"#charge-nurse\" --fhir --since 2026-12-01\n  huddle export 3fa2 --since 12h > last-shift.json\n\nThe FHIR form is a Bundle (type collection) of Communication resources, one per\nmessage, each with a Provenance carrying its signed entry. Without --fhir the\nexport is huddle's own JSON (format huddle-export/1)."
    )]
    Export(ExportArgs),

    /// The audit trail: who unlocked, read, sent, acknowledged, exported,
    /// admitted or revoked, on this device (and, on the device with the
    /// team key, on every device of the team)
    #[command(subcommand)]
    #[command(
        after_help = "Examples:\n  huddle audit show --last 20\n  huddle audit verify\n  huddle audit export --out ward-audit.json"
    )]
    Audit(AuditCmd),

    /// Encrypt this data directory, or change its passphrase
    #[command(subcommand)]
    #[command(after_help = "Examples:\n  huddle passphrase change\n  huddle passphrase set")]
    Passphrase(PassphraseCmd),

    /// Set or clear the PIN that unlocks this device's locked screen
    #[command(subcommand)]
    #[command(
        after_help = "Examples:\n  huddle pin set\n  huddle pin set --pin-file pin.txt\n  huddle pin clear"
    )]
    Pin(PinCmd),

    /// Print a shell completion script
    #[command(
        after_help = "Example:\n  huddle completions bash > ~/.local/share/bash-completion/completions/huddle"
    )]
    Completions {
        /// bash, zsh, fish, elvish or powershell
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Your name as colleagues will see it
    #[arg(long)]
    pub name: String,
    /// A role you hold, e.g. nurse, charge-nurse, physician (repeatable)
    #[arg(long = "role", value_name = "ROLE")]
    pub roles: Vec<String>,
    /// Keep this data directory unencrypted (demonstrations and tests only:
    /// a lost laptop then gives away every message on it)
    #[arg(long)]
    pub unencrypted: bool,
}

#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// List the entries, oldest first
    #[command(
        after_help = "Examples:\n  huddle audit show\n  huddle audit show --device 12D3KooW… --last 50"
    )]
    Show {
        /// Only this device's trail (its id, or the start of it)
        #[arg(long)]
        device: Option<String>,
        /// Only the last N entries of each trail
        #[arg(long, value_name = "N")]
        last: Option<usize>,
    },
    /// Check every trail: each entry signed by its device, chained to the
    /// one before, none removed or moved, no tail cut shorter than an
    /// administrator's copy (exit status 1 if not)
    #[command(after_help = "Example:\n  huddle audit verify")]
    Verify,
    /// Write every trail held, with each entry's signed bytes, as JSON
    #[command(after_help = "Example:\n  huddle audit export --out ward-audit.json")]
    Export {
        /// Write to FILE (created new; never written over) [default: stdout]
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum PinCmd {
    /// Set the PIN (4 to 64 characters; asks for the passphrase first in
    /// an encrypted data directory). A running node uses it at once.
    #[command(after_help = "Example:\n  huddle pin set")]
    Set {
        /// A file holding the PIN [default: ask at the terminal, twice]
        #[arg(long, value_name = "FILE")]
        pin_file: Option<PathBuf>,
    },
    /// Remove the PIN: the screen then unlocks only with the passphrase
    #[command(after_help = "Example:\n  huddle pin clear")]
    Clear,
}

#[derive(Debug, Subcommand)]
pub enum PassphraseCmd {
    /// Encrypt a data directory that is not encrypted yet (one from before
    /// encryption at rest, or made with `init --unencrypted`)
    #[command(after_help = "Example:\n  huddle passphrase set")]
    Set,
    /// Change the passphrase (nothing else is rewritten)
    #[command(
        after_help = "Examples:\n  huddle passphrase change\n  huddle --passphrase-file old.txt passphrase change --new-file new.txt"
    )]
    Change {
        /// A file holding the new passphrase [default: ask at the terminal]
        #[arg(long, value_name = "FILE")]
        new_file: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum TeamCmd {
    /// Create a new team; this device holds its authority key and joins it
    #[command(after_help = "Example:\n  huddle team create \"St Mary Ward 7\"")]
    Create {
        /// The team's name
        name: String,
        /// How long this device's own membership lasts (e.g. 90d, 52w, 1y; at most 2y)
        #[arg(long, default_value = "365d")]
        expires: String,
    },
    /// Admit a device (run on the device holding the team key); prints a token
    #[command(
        after_help = "Examples:\n  huddle team admit 12D3KooW... --name \"Ben Okafor\" --role physician --member 5f0c... --expires 90d\n  huddle team admit 12D3KooW...(his second device) --name \"Ben Okafor\" --member 5f0c...   # same person\n\nThe device's owner finds its id with `huddle whoami` (and `huddle init` prints this whole line),\nthen runs\n  huddle team join <token>\nA second device of a member is admitted with that member's id (--member), or it becomes a\nsecond person. A membership lasts at most 2 years."
    )]
    Admit(AdmitArgs),
    /// Install the membership token an administrator gave you
    #[command(after_help = "Example:\n  huddle team join HUDDLE1:AEBAGBAF...")]
    Join {
        /// The token printed by `huddle team admit`
        token: String,
    },
    /// Revoke a device or a member (everywhere, as the news spreads)
    #[command(
        after_help = "Examples:\n  huddle team revoke 12D3KooW...          # one lost device\n  huddle team revoke \"Ben Okafor\"         # every device of a member"
    )]
    Revoke {
        /// A device id, a member id (or its unique prefix) or a member's name
        target: String,
    },
    /// Show the team and the members this device knows
    #[command(after_help = "Example:\n  huddle team show")]
    Show,
    /// Show the team's policy for urgent and STAT messages; set it (team key)
    #[command(
        after_help = "Examples:\n  huddle team policy\n  huddle team policy --json > policy.json     # edit, then:\n  huddle team policy --set policy.json        # on the device holding the team key\n  huddle team policy --set default\n\nFor urgent and for STAT: who must acknowledge (any, all, or a member), how often and how\nmany times to re-notify, and the escalation ladder (after so long with no acknowledgement,\nan entry goes into the role's channel)."
    )]
    Policy {
        /// A policy file as `huddle team policy --json` prints it, or `default`
        #[arg(long, value_name = "FILE")]
        set: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum OncallCmd {
    /// Who is on call now for each role
    #[command(after_help = "Example:\n  huddle oncall show")]
    Show,
    /// Put members on call for a role (you hold the role, or this device holds the team key)
    #[command(
        after_help = "Examples:\n  huddle oncall set charge-nurse \"Ana Silva\" --from 19:00 --to 07:00\n  huddle oncall set on-call-doctor \"Ben Okafor\" --for 12h          # from now\n\nTimes are local: HH:MM (the next such time; --to after --from), YYYY-MM-DDTHH:MM, or `now`.\nIt replaces the assignments for the role that overlap that time."
    )]
    Set(OncallSetArgs),
}

#[derive(Debug, Args)]
pub struct OncallSetArgs {
    /// The role, e.g. charge-nurse
    pub role: String,
    /// Who is on call (name, member id or unique prefix; up to 8)
    #[arg(required = true)]
    pub members: Vec<String>,
    /// When the shift starts [default: now]
    #[arg(long, value_name = "TIME")]
    pub from: Option<String>,
    /// When it ends
    #[arg(long, value_name = "TIME", conflicts_with = "for_")]
    pub to: Option<String>,
    /// How long it lasts (e.g. 12h)
    #[arg(long = "for", value_name = "DURATION")]
    pub for_: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum RemindCmd {
    /// Set a reminder in a conversation; it fires on its members' devices even with no network
    #[command(
        after_help = "Examples:\n  huddle remind set \"Ward 7\" \"Check the drain in bed 2\" --at 14:00\n  huddle remind set \"Ben Okafor\" \"Antibiotics for bed 4\" --in 8h --every 8h --times 15 --for \"Ben Okafor\""
    )]
    Set(RemindSetArgs),
    /// Mark a reminder done (for everyone it is for)
    #[command(after_help = "Example:\n  huddle remind done 9c1b")]
    Done(RemindActArgs),
    /// Have a reminder fire again later
    #[command(after_help = "Example:\n  huddle remind snooze 9c1b --for 15m")]
    Snooze(RemindSnoozeArgs),
}

#[derive(Debug, Args)]
pub struct RemindSetArgs {
    /// The conversation (title, id or unique prefix)
    pub conversation: String,
    /// What to remind of
    pub text: String,
    /// When (local HH:MM, YYYY-MM-DDTHH:MM or `now`)
    #[arg(
        long,
        value_name = "TIME",
        conflicts_with = "in_",
        required_unless_present = "in_"
    )]
    pub at: Option<String>,
    /// In how long (e.g. 30m, 2h)
    #[arg(long = "in", value_name = "DURATION")]
    pub in_: Option<String>,
    /// Whom it is for (repeatable) [default: you]
    #[arg(long = "for", value_name = "MEMBER")]
    pub for_: Vec<String>,
    /// Repeat every so long (e.g. 8h; at least 1m)
    #[arg(long, value_name = "DURATION", requires = "times")]
    pub every: Option<String>,
    /// How many times in all (with --every; at most 1000)
    #[arg(long, value_name = "N", requires = "every")]
    pub times: Option<u16>,
}

#[derive(Debug, Args)]
pub struct RemindActArgs {
    /// The reminder's message id or a unique prefix
    pub message: String,
    /// Which occurrence (1 is the first) [default: the one due now]
    #[arg(long, value_name = "N")]
    pub occurrence: Option<u16>,
}

#[derive(Debug, Args)]
pub struct RemindSnoozeArgs {
    #[command(flatten)]
    pub which: RemindActArgs,
    /// For how long (e.g. 15m)
    #[arg(long = "for", value_name = "DURATION", default_value = "15m")]
    pub for_: String,
}

#[derive(Debug, Args)]
pub struct AdmitArgs {
    /// The device id to admit (its owner sees it with `huddle whoami`)
    pub device: String,
    /// The member's name as colleagues will see it
    #[arg(long)]
    pub name: String,
    /// A role the member holds (repeatable)
    #[arg(long = "role", value_name = "ROLE")]
    pub roles: Vec<String>,
    /// The member id, to add another device of an existing member
    /// [default: the id the device's owner chose, if you pass it, else a new one]
    #[arg(long)]
    pub member: Option<String>,
    /// How long the membership lasts (e.g. 12h, 90d, 52w, 1y; at most 2y)
    #[arg(long, default_value = "365d")]
    pub expires: String,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Address to listen on (repeatable)
    #[arg(long, value_name = "MULTIADDR", default_value = "/ip4/0.0.0.0/tcp/0")]
    pub listen: Vec<String>,
    /// Address of a peer to dial, e.g. /ip4/10.1.2.3/tcp/4001 (repeatable)
    #[arg(long = "peer", value_name = "MULTIADDR")]
    pub peers: Vec<String>,
    /// Do not discover peers on the local network with mDNS
    #[arg(long)]
    pub no_mdns: bool,
    /// Where the local API and the screen listen (loopback only)
    /// [default: 127.0.0.1:4835, or a free port when that one is taken]
    #[arg(long, value_name = "ADDR")]
    pub api: Option<SocketAddr>,
    /// Lock the screen after this long without anyone using it (e.g. 30s,
    /// 5m, 1h)
    #[arg(long, value_name = "DURATION", default_value = "5m")]
    pub lock_after: String,
    /// Wrong passphrases or PINs in a row at the locked screen before each
    /// further try waits (30 s, doubling up to 15 min)
    #[arg(long, value_name = "N", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub unlock_attempts: u32,
}

#[derive(Debug, Args)]
pub struct OpenArgs {
    /// Print a one-time sign-in URL instead of starting a browser
    #[arg(long)]
    pub print: bool,
}

#[derive(Debug, Subcommand)]
pub enum ChatCmd {
    /// Start a conversation
    #[command(
        after_help = "Examples:\n  huddle chat new --with \"Ben Okafor\"\n  huddle chat new --group \"Sepsis review\" --with \"Ben Okafor\" --with \"Chloe Martin\"\n  huddle chat new --role charge-nurse"
    )]
    New(ChatNewArgs),
}

#[derive(Debug, Args)]
pub struct ChatNewArgs {
    /// A member (name, member id or unique id prefix); repeat for a group
    #[arg(long = "with", value_name = "MEMBER")]
    pub with: Vec<String>,
    /// Make a named group
    #[arg(long, value_name = "TITLE", conflicts_with = "role")]
    pub group: Option<String>,
    /// Open the channel of everyone holding this role
    #[arg(long, conflicts_with = "with")]
    pub role: Option<String>,
}

#[derive(Debug, Args)]
pub struct ConversationArg {
    /// The conversation: its title (a role channel's with or without '#'),
    /// its id, or a unique id prefix
    pub conversation: String,
}

#[derive(Debug, Args)]
pub struct SendArgs {
    /// The conversation: its title (a role channel's with or without '#'),
    /// its id, or a unique id prefix
    pub conversation: String,
    /// The message text, at most 16 KiB (16384 bytes of UTF-8); `-` reads it
    /// from standard input (may be left out when attaching files)
    #[arg(required_unless_present = "attach")]
    pub text: Option<String>,
    /// Mark the message urgent: everyone is asked to acknowledge it
    #[arg(long, conflicts_with = "stat")]
    pub urgent: bool,
    /// Mark the message STAT (most urgent): everyone is asked to acknowledge it
    #[arg(long)]
    pub stat: bool,
    /// The message this one answers (id or unique prefix)
    #[arg(long, value_name = "MESSAGE")]
    pub reply_to: Option<String>,
    /// Who must acknowledge: any, all, or a member (name or id) [default:
    /// the team policy's]
    #[arg(long, value_name = "WHO")]
    pub ack_by: Option<String>,
    /// Attach files (up to 4; photos lose their location and camera data)
    #[arg(long, value_name = "FILE", num_args = 1..)]
    pub attach: Vec<std::path::PathBuf>,
}

#[derive(Debug, Args)]
pub struct FetchArgs {
    /// The message id or a unique prefix (see `huddle history`)
    pub message: String,
    /// Where to write the attachments (created if need be)
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub out: std::path::PathBuf,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// The conversation: its title (a role channel's with or without '#'),
    /// its id, or a unique id prefix
    pub conversation: String,
    /// Show only the newest N messages (1 or more)
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Keep printing new messages as they arrive (needs `huddle run`)
    #[arg(long, short)]
    pub follow: bool,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The conversation: its title, its id, or a unique id prefix
    pub conversation: String,
    /// Write an HL7 FHIR R4 Bundle (else huddle's own JSON)
    #[arg(long)]
    pub fhir: bool,
    /// Only messages sent at or after this time: a date (2026-12-01), a
    /// date and time (2026-12-01T08:00:00Z), or how long ago (12h, 7d)
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// Write to this new file instead of stdout (an existing file is kept)
    #[arg(long, value_name = "FILE")]
    pub out: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
pub struct AckArgs {
    /// The message id or a unique prefix (see `huddle history`)
    pub message: String,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Tell the story, then stop instead of keeping the ward running
    /// (the default when stdout is not a terminal)
    #[arg(long)]
    pub exit: bool,
    /// How many nodes the ward has (3 to 5)
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(3..=5))]
    pub nodes: u8,
    /// Discover the demo nodes with mDNS on this machine's network instead
    /// of wiring them by loopback address (off by default)
    #[arg(long)]
    pub mdns: bool,
}
