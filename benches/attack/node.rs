//! The node under attack: a real `huddle run` child process (release
//! binary, data directory in a tempdir, loopback only, mDNS off), read
//! through its own API (`GET /v1/status`'s `resources`) and `/proc`.
//!
//! Invariant: the child is killed on every way out of the bench (the
//! [`Node`] guard's drop, also on a panic's unwind), and every wait on it
//! has a deadline.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use huddle::api::client::ApiClient;
use huddle::api::types::{NewConversation, SendRequest, Status};
use huddle::crypto::AuthorityKey;
use huddle::datadir::DataDir;
use huddle::net::Resources;
use huddle::ConversationId;

use crate::child::{api_info_of, cli, Guard, Run};

/// A running `huddle run`, killed when dropped.
pub(crate) struct Node {
    child: Guard,
    pub(crate) pid: u32,
    pub(crate) dir: PathBuf,
    /// Where peers dial it (`/ip4/127.0.0.1/tcp/…`).
    pub(crate) addr: String,
    pub(crate) authority: AuthorityKey,
    pub(crate) status: Status,
    /// A conversation of the node's member alone: the honest use that must
    /// keep working through every attack.
    chat: ConversationId,
    sent: usize,
}

impl Node {
    /// `huddle init`, `huddle team create`, then `huddle run` on `dir`.
    pub(crate) fn start(dir: &Path) -> Result<Node, String> {
        cli(dir, &["init", "--name", "Ana Lima", "--role", "nurse"])?;
        cli(dir, &["team", "create", "St Mary Ward 7"])?;
        let authority = DataDir::with_passphrase(
            dir,
            huddle::datadir::Passphrase::File(super::child::passphrase_file(dir)),
        )
        .authority()
        .map_err(|e| format!("authority: {e}"))?
        .ok_or("team create left no authority key")?;
        let run = Run::spawn(dir, &[], &dir.with_extension("log"))?;
        let addr = run.listen_addr(Duration::from_secs(60))?;
        let (child, pid) = (run.child, run.pid);
        let api = api_of(dir, pid, Duration::from_secs(60))?;
        let status = api.status().map_err(|e| e.to_string())?;
        let me = status.member.ok_or("the node has no member id")?;
        let chat = api
            .create(&NewConversation::Group {
                title: "handover".into(),
                members: vec![me],
            })
            .map_err(|e| format!("create a conversation: {e}"))?;
        Ok(Node {
            child,
            pid,
            dir: dir.to_owned(),
            addr,
            authority,
            status,
            chat,
            sent: 0,
        })
    }

    /// A client of the node's API.
    pub(crate) fn api(&self, within: Duration) -> Result<ApiClient, String> {
        api_of(&self.dir, self.pid, within)
    }

    /// Whether the process is still running.
    pub(crate) fn alive(&mut self) -> bool {
        matches!(self.child.0.try_wait(), Ok(None))
    }
    /// Honest use: sends one message through the API and sees it stored.
    pub(crate) fn serve_honest(&mut self, api: &ApiClient) -> Result<(), String> {
        let req = SendRequest {
            body: format!("obs round {}: BP 120/80", self.sent + 1),
            priority: huddle::Priority::Routine,
            reply_to: None,
            ack_by: None,
            reminder: None,
            attachments: Vec::new(),
        };
        api.send(&self.chat, &req)
            .map_err(|e| format!("send through the API: {e}"))?;
        self.sent += 1;
        let stored = api
            .chats()
            .map_err(|e| e.to_string())?
            .iter()
            .find(|c| c.id == self.chat)
            .map_or(0, |c| c.messages);
        if stored != self.sent {
            return Err(format!("{stored} messages stored, {} sent", self.sent));
        }
        Ok(())
    }
}

/// Waits for the API of the process `pid` serving `dir`, and connects.
fn api_of(dir: &Path, pid: u32, within: Duration) -> Result<ApiClient, String> {
    api_info_of(dir, pid, within).map(ApiClient::new)
}

/// One reading: the node's counters and its memory.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Sample {
    pub(crate) rss_kb: u64,
    pub(crate) hwm_kb: u64,
    pub(crate) r: Resources,
}

fn proc_status(pid: u32, field: &str) -> u64 {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return 0;
    };
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

pub(crate) fn sample(api: &ApiClient, pid: u32) -> Result<Sample, String> {
    let r = api.status().map_err(|e| format!("status: {e}"))?.resources;
    Ok(Sample {
        rss_kb: proc_status(pid, "VmRSS:"),
        hwm_kb: proc_status(pid, "VmHWM:"),
        r,
    })
}

impl Sample {
    /// Each field's largest value of the two (a phase's peak is taken
    /// field by field: the fields need not peak at the same instant).
    pub(crate) fn max(self, o: Sample) -> Sample {
        let (a, b) = (self.r, o.r);
        Sample {
            rss_kb: self.rss_kb.max(o.rss_kb),
            hwm_kb: self.hwm_kb.max(o.hwm_kb),
            r: Resources {
                sessions: a.sessions.max(b.sessions),
                reader_tasks: a.reader_tasks.max(b.reader_tasks),
                writer_tasks: a.writer_tasks.max(b.writer_tasks),
                frame_buffer_bytes: a.frame_buffer_bytes.max(b.frame_buffer_bytes),
                pending_incoming: a.pending_incoming.max(b.pending_incoming),
                suppressed_log_lines: a.suppressed_log_lines.max(b.suppressed_log_lines),
                slowed_reads: a.slowed_reads.max(b.slowed_reads),
                reassembly_bytes: a.reassembly_bytes.max(b.reassembly_bytes),
                contained_panics: a.contained_panics.max(b.contained_panics),
                mailbox_envelopes: a.mailbox_envelopes.max(b.mailbox_envelopes),
                mailbox_bytes: a.mailbox_bytes.max(b.mailbox_bytes),
                mailbox_dropped: [0, 1, 2, 3]
                    .map(|i| a.mailbox_dropped[i].max(b.mailbox_dropped[i])),
                envelopes_refused: a.envelopes_refused.max(b.envelopes_refused),
            },
        }
    }

    /// Nothing held for any remote device (no honest peer is connected
    /// to this node: its honest use is through the API).
    pub(crate) fn holds_nothing(&self) -> bool {
        let r = &self.r;
        r.sessions == 0
            && r.reader_tasks == 0
            && r.writer_tasks == 0
            && r.frame_buffer_bytes == 0
            && r.reassembly_bytes == 0
            && r.pending_incoming == 0
    }
}

/// Samples the node every 50 ms on a thread of its own (the API client
/// blocks) and keeps each field's peak, until stopped.
pub(crate) struct Sampler {
    stop: Arc<AtomicBool>,
    peak: Arc<Mutex<(Sample, usize)>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    pub(crate) fn start(api: ApiClient, pid: u32) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(Mutex::new((Sample::default(), 0)));
        let (s, p) = (stop.clone(), peak.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                if let Ok(x) = sample(&api, pid) {
                    let mut g = p.lock().expect("sampler lock");
                    g.0 = g.0.max(x);
                    g.1 += 1;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Sampler {
            stop,
            peak,
            thread: Some(thread),
        }
    }

    /// The peak of every field, and how many samples it was taken over.
    pub(crate) fn finish(mut self) -> (Sample, usize) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        *self.peak.lock().expect("sampler lock")
    }
}

/// Waits until the node holds nothing for any remote device; the sample
/// that showed it, or the last one when `within` ran out.
pub(crate) fn settle(api: &ApiClient, pid: u32, within: Duration) -> (Sample, bool, Duration) {
    let t = Instant::now();
    let mut last = Sample::default();
    while t.elapsed() < within {
        if let Ok(s) = sample(api, pid) {
            last = s;
            if s.holds_nothing() {
                return (s, true, t.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    (last, false, t.elapsed())
}

/// Readings taken at chosen moments of an attack, from async code (on the
/// blocking pool: the API client blocks). A member's attack is over in
/// milliseconds, quicker than the [`Sampler`] looks; this catches the
/// node holding its session and its partial message.
#[derive(Clone)]
pub(crate) struct Probe {
    api: Arc<ApiClient>,
    pid: u32,
}

impl Probe {
    pub(crate) fn new(api: ApiClient, pid: u32) -> Probe {
        Probe {
            api: Arc::new(api),
            pid,
        }
    }

    /// Samples until `shows` holds or `within` runs out; the last sample
    /// and whether it held.
    pub(crate) async fn until(
        &self,
        within: Duration,
        shows: impl Fn(&Sample) -> bool + Send + 'static,
    ) -> (Sample, bool) {
        let (api, pid) = (self.api.clone(), self.pid);
        tokio::task::spawn_blocking(move || {
            let t = Instant::now();
            let mut last = Sample::default();
            while t.elapsed() < within {
                if let Ok(s) = sample(&api, pid) {
                    last = s;
                    if shows(&s) {
                        return (s, true);
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            (last, false)
        })
        .await
        .unwrap_or_default()
    }
}
