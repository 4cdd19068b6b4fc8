//! Crash durability against the real sled store (issue 2): a child process
//! writes messages and is killed with SIGKILL many times over; after every
//! kill the store must open cleanly and hold every message whose "sent" the
//! child emitted, in any round so far.
//!
//! The writer is this very test binary, re-executed with `--exact
//! crash_writer_child` and the data directory in `HUDDLE_CRASH_CHILD`; without
//! that variable `crash_writer_child` returns at once, so it is a no-op in an
//! ordinary `cargo test` run.
//!
//! Why a SENT line is a valid durability claim: the child carries out the
//! node's outputs in order, and the node orders `Persist…, Flush` before
//! `Emit(Sent)`. The child writes `SENT <conversation> <message>` to its
//! stdout (and flushes it) only when it reaches that `Emit`, i.e. after
//! `SledStore::flush` (an fsync) returned for the batch holding the message.
//! So every SENT line the parent ever reads from the pipe, whether before the
//! kill or drained from the pipe after it, was written after the flush that
//! made the message durable. The reverse need not hold: a message can be
//! flushed and the child killed before it prints SENT, so the store may hold
//! more messages than SENT lines.
//!
//! The run is driven by a seeded RNG (kill points, the child's randomness);
//! the seed is printed, and `HUDDLE_CRASH_SEED=<n>` replays its choices
//! (process timing is, of course, not replayed).
#![cfg(all(unix, feature = "store-sled"))]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use huddle::crypto::{AuthorityKey, DeviceKey};
use huddle::membership::{Certificate, CertificateRequest};
use huddle::node::{Command, Event, Input, Node, NodeConfig, Output, Reply};
use huddle::store::{SledStore, Store};
use huddle::{ConversationId, ConversationKind, MemberId, MessageId, Priority};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The data directory; its presence makes `crash_writer_child` a writer.
const CHILD_ENV: &str = "HUDDLE_CRASH_CHILD";
/// The device's secret key, hex.
const KEY_ENV: &str = "HUDDLE_CRASH_KEY";
/// The device's certificate, as a join token.
const CERT_ENV: &str = "HUDDLE_CRASH_CERT";
/// Seed for the child's RNG (actor id, conversation id).
const RNG_ENV: &str = "HUDDLE_CRASH_RNG";
/// The round, for message bodies.
const ROUND_ENV: &str = "HUDDLE_CRASH_ROUND";
/// Replays a run's choices.
const SEED_ENV: &str = "HUDDLE_CRASH_SEED";

const CHILD_TEST: &str = "crash_writer_child";
const ROUNDS: usize = 60;
/// Upper bound on the SENT lines read before a kill.
const MAX_SENT_BEFORE_KILL: u64 = 40;
/// Upper bound on the jitter between reading the last awaited line and the
/// kill, in microseconds (see [`KillAt::Sent`]).
const MAX_JITTER_US: u64 = 3_000;
/// How long one round may wait for its child's next line.
const ROUND_DEADLINE: Duration = Duration::from_secs(30);
const DAY_MS: u64 = 24 * 3600 * 1000;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_millis() as u64
}

// ---------------------------------------------------------------- the child

/// The writer. A no-op unless re-executed by `sent_messages_survive_sigkill`.
#[test]
fn crash_writer_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    // Anything going wrong is reported on stderr (which the parent keeps)
    // and ends the process with a non-signal status the parent notices.
    let err = run_writer(Path::new(&dir));
    eprintln!("crash writer: {err}");
    std::process::exit(2);
}

/// Marks the writer's protocol lines on stdout. libtest shares that stdout
/// (it prints `test crash_writer_child ... ` without a newline before the
/// test runs), so the parent looks for the marker anywhere in a line.
const MARK: &str = "#huddle-crash ";

/// Writes one protocol line to stdout and flushes it. If the parent is gone
/// (the pipe is closed) there is no one to write for: exit.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{MARK}{line}")
        .and_then(|()| out.flush())
        .is_err()
    {
        std::process::exit(3);
    }
}

fn env(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|e| format!("{name}: {e}"))
}

/// Runs until killed; returns only with an error.
fn run_writer(dir: &Path) -> String {
    let key_hex = match env(KEY_ENV) {
        Ok(v) => v,
        Err(e) => return e,
    };
    let secret: [u8; 32] = match data_encoding::HEXLOWER
        .decode(key_hex.as_bytes())
        .ok()
        .and_then(|v| v.try_into().ok())
    {
        Some(s) => s,
        None => return format!("{KEY_ENV} is not 32 bytes of hex"),
    };
    let key = DeviceKey::from_secret(secret);
    let cert = match env(CERT_ENV).map(|t| Certificate::from_token(&t)) {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return format!("{CERT_ENV}: {e}"),
        Err(e) => return e,
    };
    let mut rng = match env(RNG_ENV).map(|s| s.parse::<u64>()) {
        Ok(Ok(s)) => ChaCha8Rng::seed_from_u64(s),
        _ => return format!("{RNG_ENV} must be a u64"),
    };
    let round = env(ROUND_ENV).unwrap_or_default();

    say("OPENING");
    let mut store = match SledStore::open(dir) {
        Ok(s) => s,
        Err(e) => return format!("opening the store: {e}"),
    };
    // As `huddle run` starts: the index now, each conversation on first use.
    let stored = match huddle::store::load_lazy(&store, store.loader()) {
        Ok(s) => s,
        Err(e) => return format!("loading the store: {e}"),
    };
    let member = cert.member;
    let mut node = match Node::new(key, Some(cert), stored, NodeConfig::default(), &mut rng) {
        Ok(n) => n,
        Err(e) => return format!("building the node: {e}"),
    };

    // Carries out outputs in the order given, as the contract requires.
    let carry_out = |store: &mut SledStore, outputs: Vec<Output>| -> Result<(), String> {
        for o in outputs {
            match o {
                Output::Persist(ops) => store.apply(&ops).map_err(|e| format!("apply: {e}"))?,
                Output::Flush => store.flush().map_err(|e| format!("flush: {e}"))?,
                Output::Emit(Event::Sent {
                    conversation,
                    message,
                }) => say(&format!("SENT {conversation} {message}")),
                _ => {}
            }
        }
        Ok(())
    };

    let out = node.handle(now_ms(), Input::Start);
    if let Err(e) = carry_out(&mut store, out) {
        return e;
    }

    // Reuse the conversation an earlier round made durable, if any.
    let existing = node.conversation_ids().next().copied();
    let conv = match existing {
        Some(c) => c,
        None => {
            let kind = ConversationKind::Group {
                title: "crash durability".into(),
                members: BTreeSet::from([member]),
            };
            let (reply, out) =
                node.command(now_ms(), &mut rng, Command::CreateConversation { kind });
            if let Err(e) = carry_out(&mut store, out) {
                return e;
            }
            match reply {
                Ok(Reply::Conversation(c)) => c,
                other => return format!("creating the conversation: {other:?}"),
            }
        }
    };
    say(&format!("READY {conv}"));

    let mut i = 0u64;
    loop {
        let (reply, out) = node.command(
            now_ms(),
            &mut rng,
            Command::Send {
                conversation: conv,
                body: format!("round {round} message {i}: obs stable, next check 2h"),
                priority: Priority::Routine,
                reply_to: None,
                fields: Default::default(),
            },
        );
        if let Err(e) = reply {
            return format!("send {i}: {e}");
        }
        if let Err(e) = carry_out(&mut store, out) {
            return e;
        }
        i += 1;
    }
}

// --------------------------------------------------------------- the parent

/// When, in its life, a round's child is killed.
#[derive(Clone, Copy, Debug)]
enum KillAt {
    /// Right after spawning it: before, or in the middle of, its start.
    Spawn,
    /// Once it says it is about to open the store: in the middle of the open.
    Opening,
    /// Once it has a conversation and is about to send.
    Ready,
    /// After this many SENT lines, and then this many microseconds. The
    /// delay is fault injection, not synchronisation: it moves the kill to a
    /// different point of the writer's apply / flush / print cycle (a flush
    /// takes a few milliseconds), and nothing waits on it.
    Sent(u64, u64),
}

/// Kills the child if a round fails before killing it, so no writer is left
/// behind.
struct Reaper(Option<Child>);

impl Drop for Reaper {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

struct Fixture {
    key: DeviceKey,
    cert: Certificate,
}

/// What one round observed.
struct RoundLog {
    /// Every SENT line: (conversation, message).
    sent: Vec<(ConversationId, MessageId)>,
    /// Conversations the child said it was writing to.
    ready: Vec<ConversationId>,
}

fn spawn_child(dir: &Path, fx: &Fixture, child_seed: u64, round: usize, stderr: &Path) -> Child {
    let exe = std::env::current_exe().expect("the test binary's path");
    let err_file = std::fs::File::create(stderr).expect("the child's stderr file");
    std::process::Command::new(exe)
        .args(["--exact", CHILD_TEST, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir)
        .env(KEY_ENV, data_encoding::HEXLOWER.encode(&fx.key.secret()))
        .env(CERT_ENV, fx.cert.to_token())
        .env(RNG_ENV, child_seed.to_string())
        .env(ROUND_ENV, round.to_string())
        .env_remove(SEED_ENV)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(err_file))
        .spawn()
        .expect("spawning the writer child")
}

fn parse_sent(line: &str) -> Option<(ConversationId, MessageId)> {
    let mut it = line.strip_prefix("SENT ")?.split(' ');
    let conv = it.next()?.parse().ok()?;
    let msg = it.next()?.parse().ok()?;
    Some((conv, msg))
}

/// Runs one child until `kill_at`, kills it with SIGKILL, and returns every
/// line it wrote (including those still in the pipe at the kill).
fn run_round(
    dir: &Path,
    fx: &Fixture,
    child_seed: u64,
    round: usize,
    kill_at: KillAt,
    ctx: &str,
) -> RoundLog {
    let stderr_path = dir.with_extension(format!("stderr-{round}"));
    let mut child = spawn_child(dir, fx, child_seed, round, &stderr_path);
    let stdout = child.stdout.take().expect("piped stdout");
    let mut reaper = Reaper(Some(child));
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // Keep only the writer's protocol lines, without the marker.
            let Some(at) = line.find(MARK) else { continue };
            if tx.send(line[at + MARK.len()..].to_owned()).is_err() {
                break;
            }
        }
    });

    let stderr_of = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    let mut lines = Vec::new();
    let wait_for =
        |lines: &mut Vec<String>, rx: &Receiver<String>, done: &dyn Fn(&[String]) -> bool| {
            let deadline = Instant::now() + ROUND_DEADLINE;
            while !done(lines) {
                let left = deadline.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok(l) => lines.push(l),
                    Err(RecvTimeoutError::Timeout) => panic!(
                        "{ctx}: the writer did not reach {kill_at:?} within {ROUND_DEADLINE:?}; \
                     its stderr: {}",
                        stderr_of(&stderr_path)
                    ),
                    Err(RecvTimeoutError::Disconnected) => panic!(
                        "{ctx}: the writer closed its stdout before {kill_at:?}; its stderr: {}",
                        stderr_of(&stderr_path)
                    ),
                }
            }
        };
    match kill_at {
        KillAt::Spawn => {}
        KillAt::Opening => wait_for(&mut lines, &rx, &|l| l.iter().any(|l| l == "OPENING")),
        KillAt::Ready => wait_for(&mut lines, &rx, &|l| {
            l.iter().any(|l| l.starts_with("READY "))
        }),
        KillAt::Sent(n, _) => wait_for(&mut lines, &rx, &|l| {
            l.iter().filter(|l| l.starts_with("SENT ")).count() as u64 >= n
        }),
    }

    if let KillAt::Sent(_, jitter_us) = kill_at {
        std::thread::sleep(Duration::from_micros(jitter_us));
    }
    let mut child = reaper.0.take().expect("the child is still ours");
    child.kill().expect("SIGKILL the writer");
    let status = child.wait().expect("reaping the writer");
    // The writer never exits by itself; any status other than death by
    // SIGKILL means it failed (it says why on stderr).
    assert_eq!(
        status.signal(),
        Some(9),
        "{ctx}: the writer ended with {status} instead of being killed; its stderr: {}",
        stderr_of(&stderr_path)
    );
    // The child is dead, so its end of the pipe is closed: drain what it
    // wrote before dying (lines written after its flush returned, too).
    let drain_deadline = Instant::now() + ROUND_DEADLINE;
    loop {
        let left = drain_deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => lines.push(l),
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {
                panic!("{ctx}: the pipe did not close after the kill")
            }
        }
    }
    reader.join().expect("the reader thread");
    let _ = std::fs::remove_file(&stderr_path);

    let mut log = RoundLog {
        sent: Vec::new(),
        ready: Vec::new(),
    };
    for l in &lines {
        if l.starts_with("SENT ") {
            let s = parse_sent(l).unwrap_or_else(|| panic!("{ctx}: a malformed SENT line {l:?}"));
            log.sent.push(s);
        } else if let Some(c) = l.strip_prefix("READY ") {
            log.ready.push(
                c.parse()
                    .unwrap_or_else(|_| panic!("{ctx}: a malformed READY line {l:?}")),
            );
        }
    }
    log
}

/// Reopens the store in this process and checks that it opens cleanly and
/// holds every message in `sent`, read as `huddle run` reads it: through the
/// index, each conversation on first use (a conversation that does not reach
/// the heads its index recorded would be missing). Returns how many
/// messages it holds.
fn verify(
    dir: &Path,
    fx: &Fixture,
    sent: &BTreeMap<MessageId, (ConversationId, usize)>,
    rng: &mut ChaCha8Rng,
    ctx: &str,
) -> usize {
    let store = SledStore::open(dir)
        .unwrap_or_else(|e| panic!("{ctx}: the store must open cleanly after a SIGKILL: {e}"));
    let stored = huddle::store::load_lazy(&store, store.loader())
        .unwrap_or_else(|e| panic!("{ctx}: loading the store after a SIGKILL: {e}"));
    let node = Node::new(
        fx.key.clone(),
        Some(fx.cert.clone()),
        stored,
        NodeConfig::default(),
        rng,
    )
    .unwrap_or_else(|e| panic!("{ctx}: building the node from the store after a SIGKILL: {e}"));

    for (msg, (conv, round)) in sent {
        let c = node.conversation(conv).unwrap_or_else(|| {
            panic!(
                "{ctx}: conversation {conv} (of message {msg}, SENT in round {round}) is missing"
            )
        });
        assert!(
            c.get(msg).is_some(),
            "{ctx}: message {msg} was SENT in round {round} but is missing after the kill"
        );
    }
    let present: usize = node
        .conversation_ids()
        .map(|c| node.conversation(c).expect("listed").len())
        .sum();
    assert!(
        present >= sent.len(),
        "{ctx}: the store holds {present} messages but {} were SENT",
        sent.len()
    );
    present
    // The node and the store drop here; the next child waits for sled's own
    // lock to be let go (SledStore::open does).
}

#[test]
fn sent_messages_survive_sigkill() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return; // we are a writer child; only crash_writer_child runs there
    }
    let seed: u64 = match std::env::var(SEED_ENV) {
        Ok(s) => s.parse().expect("HUDDLE_CRASH_SEED must be a u64"),
        Err(_) => now_ms() ^ (u64::from(std::process::id()) << 32),
    };
    println!("crash durability seed: {seed} (replay the choices with {SEED_ENV}={seed})");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);

    let authority = AuthorityKey::generate(&mut rng);
    let key = DeviceKey::generate(&mut rng);
    let now = now_ms();
    let cert = CertificateRequest {
        team_name: "St Mary Ward 7".into(),
        member: MemberId::random(&mut rng),
        display_name: "Night nurse".into(),
        roles: vec!["nurse".into()],
        device: key.device_id(),
        issued: now - DAY_MS,
        expires: now + 365 * DAY_MS,
    }
    .sign(&authority)
    .expect("a valid certificate request");
    let fx = Fixture { key, cert };

    let root = tempfile::TempDir::new().expect("tempdir");
    let dir: PathBuf = root.path().join("data");

    // Round 0 kills the very first start (possibly while sled creates its
    // files), round 1 kills the first open of an existing store; the rest
    // are drawn, with at least one more early kill among them.
    let early = 2 + (rng.next_u64() as usize) % (ROUNDS - 2);
    let plans: Vec<KillAt> = (0..ROUNDS)
        .map(|r| match r {
            0 => KillAt::Spawn,
            1 => KillAt::Opening,
            r if r == early => KillAt::Spawn,
            _ => match rng.next_u64() % 10 {
                0 => KillAt::Spawn,
                1 => KillAt::Opening,
                2 => KillAt::Ready,
                _ => KillAt::Sent(
                    1 + rng.next_u64() % MAX_SENT_BEFORE_KILL,
                    rng.next_u64() % (MAX_JITTER_US + 1),
                ),
            },
        })
        .collect();

    let started = Instant::now();
    let mut sent: BTreeMap<MessageId, (ConversationId, usize)> = BTreeMap::new();
    let mut sent_lines = 0usize;
    let mut convs: BTreeSet<ConversationId> = BTreeSet::new();
    let mut present = 0;
    for (round, &kill_at) in plans.iter().enumerate() {
        let ctx = format!("seed {seed}, round {round} (killed at {kill_at:?})");
        let log = run_round(&dir, &fx, rng.next_u64(), round, kill_at, &ctx);
        if let KillAt::Sent(n, _) = kill_at {
            assert!(
                log.sent.len() as u64 >= n,
                "{ctx}: fewer SENT lines than waited for"
            );
        }
        for (conv, msg) in &log.sent {
            assert!(
                log.ready.contains(conv),
                "{ctx}: SENT {msg} names conversation {conv}, which the writer did not announce"
            );
            let first = sent.insert(*msg, (*conv, round));
            assert!(first.is_none(), "{ctx}: message {msg} was SENT twice");
        }
        sent_lines += log.sent.len();
        convs.extend(log.ready.iter().copied());
        let held = verify(&dir, &fx, &sent, &mut rng, &ctx);
        assert!(
            held >= present,
            "{ctx}: the store held {present} messages after the previous round and {held} now"
        );
        present = held;
        println!(
            "round {round:2}: killed at {kill_at:?}, {} SENT this round, {} in all, {held} held",
            log.sent.len(),
            sent.len()
        );
    }
    assert_eq!(
        sent.len(),
        sent_lines,
        "seed {seed}: every SENT line names a distinct message"
    );
    assert!(
        present >= sent_lines,
        "seed {seed}: {present} messages held in the end, fewer than the {sent_lines} SENT"
    );
    println!(
        "crash durability: {ROUNDS} SIGKILLs, {sent_lines} SENT, {present} held, {} conversation(s), {:?}",
        convs.len(),
        started.elapsed()
    );
}
