//! The soak's writers and the ledger of what the APIs confirmed.
//!
//! Two threads post to V's API (the victim) and two to P1's and P2's, all
//! into the current group of the three, so that V is both answering sends
//! and taking in its peers' changes when it is killed.
//!
//! Invariants:
//! - a message enters the ledger only when an API answered `200 {"id"}`
//!   for it: V's `POST …/messages` answers once the message is durable
//!   (`net/commit.rs` holds the reply until the store flush), so every id
//!   in `v_confirmed` must survive any later SIGKILL of V;
//! - V's writers start a request only while V is published
//!   ([`State::v`]), and [`Shared::unpublish`] waits until none is under
//!   way, so a check after a kill sees every confirmation of V's last life.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use huddle::api::client::ApiClient;
use huddle::api::types::SendRequest;
use huddle::datadir::ApiInfo;
use huddle::{ConversationId, MessageId, Priority};

use crate::body::body;

/// Message ids confirmed, by conversation, in the order confirmed.
pub type Ledger = BTreeMap<ConversationId, Vec<MessageId>>;

#[derive(Default)]
pub struct State {
    /// Bumped whenever V is published or withdrawn.
    pub epoch: u64,
    /// V's API while V is up and published to its writers.
    pub v: Option<ApiInfo>,
    /// Where every writer writes.
    pub conv: Option<ConversationId>,
    /// V's writers' requests under way.
    in_flight: usize,
    stop: bool,
    pub v_confirmed: Ledger,
    /// Conversations V confirmed a message in since the last check.
    pub v_dirty: BTreeSet<ConversationId>,
    pub p_confirmed: Ledger,
    /// Sends V's API did not confirm (mostly the requests a kill cut).
    pub v_failed: u64,
    /// Sends P1's or P2's API did not confirm.
    pub p_failed: u64,
    pub last_p_error: Option<String>,
}

#[derive(Default)]
pub struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("the soak's state lock")
    }

    /// Lets V's writers at V (and every writer at `conv`).
    pub fn publish(&self, v: ApiInfo, conv: ConversationId) {
        let mut s = self.lock();
        s.epoch += 1;
        s.v = Some(v);
        s.conv = Some(conv);
        self.changed.notify_all();
    }

    /// Withdraws V (after its kill) and waits until none of V's writers
    /// has a request under way; false if that took longer than `within`.
    pub fn unpublish(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let mut s = self.lock();
        s.epoch += 1;
        s.v = None;
        while s.in_flight > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            s = self.changed.wait_timeout(s, left).expect("lock").0;
        }
        true
    }

    pub fn stop(&self) {
        self.lock().stop = true;
        self.changed.notify_all();
    }
}

fn request(i: usize) -> SendRequest {
    SendRequest {
        body: body(i),
        priority: Priority::Routine,
        reply_to: None,
        ack_by: None,
        reminder: None,
        attachments: Vec::new(),
    }
}

/// One of V's writers: sends as fast as V answers; after a failure, waits
/// for V's next life.
pub fn v_writer(shared: Arc<Shared>, writer: usize) {
    let mut failed_in: Option<u64> = None;
    let mut client: Option<(u64, ApiClient)> = None;
    for n in 0.. {
        let (epoch, conv, info) = {
            let mut s = shared.lock();
            loop {
                if s.stop {
                    return;
                }
                match (&s.v, s.conv) {
                    (Some(info), Some(conv)) if failed_in != Some(s.epoch) => {
                        let info = info.clone();
                        s.in_flight += 1;
                        break (s.epoch, conv, info);
                    }
                    _ => s = shared.changed.wait(s).expect("lock"),
                }
            }
        };
        if client.as_ref().is_none_or(|(e, _)| *e != epoch) {
            client = Some((epoch, ApiClient::new(info)));
        }
        let api = &client.as_ref().expect("set above").1;
        let sent = api.send(&conv, &request(writer * 1_000_000_000 + n));
        let mut s = shared.lock();
        s.in_flight -= 1;
        match sent {
            Ok(id) => {
                s.v_confirmed.entry(conv).or_default().push(id);
                s.v_dirty.insert(conv);
            }
            Err(_) => {
                s.v_failed += 1;
                failed_in = Some(epoch);
            }
        }
        shared.changed.notify_all();
    }
}

/// One peer's writer: one message every `every` (pacing, so the peers
/// feed V a steady stream rather than a flood) to the current group, or,
/// until this peer has learnt of a new group, to the last one it took.
pub fn p_writer(shared: Arc<Shared>, api: ApiInfo, writer: usize, every: Duration) {
    let api = ApiClient::new(api);
    let mut last_good: Option<ConversationId> = None;
    for n in 0.. {
        let conv = {
            let s = shared.lock();
            if s.stop {
                return;
            }
            s.conv
        };
        let Some(conv) = conv else { return };
        let req = request(writer * 1_000_000_000 + n);
        let mut sent = api.send(&conv, &req).map(|id| (conv, id));
        if let (Err(_), Some(old)) = (&sent, last_good) {
            if old != conv {
                sent = api.send(&old, &req).map(|id| (old, id));
            }
        }
        {
            let mut s = shared.lock();
            match sent {
                Ok((c, id)) => {
                    s.p_confirmed.entry(c).or_default().push(id);
                    last_good = Some(c);
                }
                Err(e) => {
                    s.p_failed += 1;
                    s.last_p_error = Some(e.to_string());
                }
            }
        }
        std::thread::sleep(every);
    }
}
