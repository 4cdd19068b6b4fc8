//! Carrying out a node's outputs under the core's output contract:
//! `Persist` to the store, `Flush` to make it durable, `Emit` to the ledger
//! and the users, `Send` through the no-leak check to the network,
//! `Disconnect` and `SetTimer` to the topology and the queue.
//!
//! Invariant: outputs are carried out in order, and in a step that flushes,
//! nothing after a `Persist` is carried out before the `Flush` covers it
//! (checked). A step without a `Flush` (a peer's changes taken in, which
//! claim nothing) leaves its writes to the next flush, and must not say
//! "sent" (checked). A crash armed for this device strikes between two
//! outputs.

use std::collections::BTreeSet;

use huddle::node::{Event, Output, Timer};
use huddle::sendq::Prio;
use huddle::store::{keys, Store};
use huddle::team::TEAM_DOC_ID;
use huddle::wire::{Frame, MAX_FRAME_LEN};
use huddle::{DeviceId, Priority};
use rand::Rng;

use crate::check::{self, Invariant};
use crate::net::{Dev, Held, PipeKey, SendError};
use crate::queue::{Ev, UserCmd};
use crate::topo;
use crate::trace;
use crate::world::World;

impl World {
    /// Carries out a step's outputs, in order.
    pub fn carry(&mut self, dev: Dev, mut outs: Vec<Output>) {
        if let Some(t) = self.opts.tamper.as_mut() {
            t.outputs(dev, &mut outs);
        }
        let n = outs.len();
        let flushes = outs.iter().any(|o| matches!(o, Output::Flush));
        let crash_at = self.devs[dev]
            .crash_mid_step
            .then(|| self.rng.gen_range(0..=n));
        let mut dirty = false;
        let mut changed: BTreeSet<[u8; 16]> = BTreeSet::new();
        for (i, o) in outs.into_iter().enumerate() {
            if crash_at == Some(i) {
                self.crash(dev, Some(i));
                return;
            }
            // In a step that flushes, everything after its writes waits for
            // the flush; in one that does not, nothing may claim them.
            let waits = match &o {
                Output::Persist(_) | Output::Flush => false,
                Output::Emit(Event::Sent { .. }) => true,
                _ => flushes,
            };
            if dirty && self.opts.contract_check && waits {
                self.fail(
                    Invariant::NoLoss,
                    vec![dev],
                    format!("output contract: d{dev} carried out {o:?} before the Flush covering its earlier Persist"),
                );
                return;
            }
            match o {
                Output::Persist(ops) => {
                    for op in &ops {
                        if let huddle::store::StoreOp::Put { key, .. } = op {
                            changed.insert(doc_of_key(key));
                        }
                    }
                    dirty = true;
                    self.devs[dev].store.apply(&ops).expect("memory store");
                }
                Output::Flush => {
                    self.devs[dev].store.flush().expect("memory store");
                    dirty = false;
                }
                Output::Emit(e) => self.on_event(dev, e),
                Output::Send { peer, frame, prio } => self.send_frame(dev, peer, frame, prio),
                Output::Disconnect { peer, reason } => topo::disconnect(self, dev, peer, reason),
                Output::SetTimer { timer, at } => self.set_timer(dev, timer, at),
                Output::Reload { doc } => {
                    // The store holds every earlier write of this step.
                    let stored = huddle::store::DocLoader::load_doc(&self.devs[dev].store, &doc)
                        .map_err(|e| e.to_string());
                    self.step(dev, huddle::node::Input::Reloaded { doc, stored });
                }
            }
            if self.violation.is_some() {
                return;
            }
        }
        if crash_at == Some(n) {
            self.crash(dev, Some(n));
            return;
        }
        if !changed.is_empty() {
            self.watch.device_changed(&self.devs, dev, Some(&changed));
            self.watch.check(&self.devs, &self.ledger, self.now);
        }
    }

    fn set_timer(&mut self, dev: Dev, timer: Timer, at: u64) {
        self.next_token += 1;
        let token = self.next_token;
        let d = &mut self.devs[dev];
        d.timers.insert(timer, token);
        let delay_ms = at.saturating_sub(d.now_ms(self.now));
        let inc = d.inc;
        self.q.push(
            self.now + delay_ms * 1000,
            Ev::Timer {
                dev,
                inc,
                timer,
                token,
            },
        );
    }

    fn on_event(&mut self, dev: Dev, e: Event) {
        match &e {
            Event::MessageAdded {
                conversation,
                message,
                priority,
                ..
            } => {
                if priority.wants_ack() {
                    crate::clinical::shown(self, dev, *conversation, *message, *priority);
                }
                crate::clinical::got(self, dev, *message);
            }
            Event::Alert {
                conversation,
                message,
                priority,
                n,
                of,
                ..
            } => crate::clinical::alert(self, dev, *conversation, *message, *priority, *n, *of),
            Event::Escalated {
                conversation,
                message,
                level,
                channel,
                ..
            } => crate::clinical::escalated(self, dev, *conversation, *message, *level, *channel),
            Event::Reminder {
                message,
                occurrence,
                ..
            } => crate::clinical::fired(self, dev, *message, *occurrence),
            _ => {}
        }
        // What a device shows of others' (its own are held by no-loss).
        if let Event::MessageAdded {
            conversation,
            message,
            local: false,
            ..
        } = &e
        {
            if !self.ledger.forged.contains(message) {
                self.ledger
                    .shown
                    .entry(dev)
                    .or_default()
                    .insert((*conversation, *message));
            }
        }
        match e {
            Event::MessageAdded {
                message,
                priority,
                local: true,
                ..
            } => {
                self.ledger.priority.insert(message, priority);
            }
            Event::Sent {
                conversation,
                message,
            } => {
                let short = u64::from_be_bytes(message.0[..8].try_into().expect("8 bytes"));
                self.trace
                    .log(self.now, trace::Kind::Confirmed, Some(dev), None, 0, short);
                self.ledger.confirmed.insert(
                    message,
                    check::Confirmed {
                        conv: conversation,
                        author: dev,
                        at: self.now,
                    },
                );
            }
            Event::MessageAdded {
                conversation,
                message,
                priority,
                local: false,
                ..
            } => {
                if self.ledger.forged.contains(&message) {
                    self.fail(
                        Invariant::Authenticity,
                        vec![dev],
                        format!("d{dev} accepted forged message {message}"),
                    );
                    return;
                }
                let first = self.acct.deliveries.insert((dev, message.0));
                if let Some(c) = self.ledger.confirmed.get(&message).filter(|_| first) {
                    let took = self.now.saturating_sub(c.at);
                    let site = |d: Dev| self.net.site_of_segment(self.net.segment[d]);
                    let across = site(dev) != site(c.author);
                    self.counters.latencies.push((took, across));
                }
                if priority != Priority::Routine {
                    if let Some(c) = self.ledger.confirmed.get(&message) {
                        let p = &mut self.counters.pressing;
                        p.0 += 1;
                        p.1 = p.1.max(self.now.saturating_sub(c.at));
                    }
                }
                if self.final_heal || !self.devs[dev].is_member() {
                    return;
                }
                let t = &self.sc.traffic;
                let inc = self.devs[dev].inc;
                if t.read > 0.0 && self.wrng.gen_bool(t.read.min(1.0)) {
                    let at = self.now + self.wrng.gen_range(5_000_000..300_000_000);
                    let cmd = UserCmd::MarkRead(conversation);
                    self.q.push(at, Ev::User { dev, inc, cmd });
                }
                if priority != Priority::Routine
                    && t.ack > 0.0
                    && self.wrng.gen_bool(t.ack.min(1.0))
                {
                    let at = self.now + self.wrng.gen_range(5_000_000..120_000_000);
                    let cmd = UserCmd::Ack(conversation, message);
                    self.q.push(at, Ev::User { dev, inc, cmd });
                }
            }
            Event::ConversationAdded { conversation, .. } => {
                self.ledger.live.insert(conversation);
                // A role channel a node made itself, to escalate into.
                if !self.ledger.headers.contains_key(&conversation) {
                    let own = self.devs[dev]
                        .node
                        .as_ref()
                        .and_then(|n| n.conversation(&conversation))
                        .filter(|c| c.header.creator == self.devs[dev].id)
                        .map(|c| c.header.clone());
                    if let Some(h) = own {
                        self.ledger.headers.insert(conversation, h);
                    }
                }
                let d = &self.devs[dev];
                let ok = d.is_member()
                    && self
                        .ledger
                        .headers
                        .get(&conversation)
                        .is_some_and(|h| d.cert.as_ref().is_some_and(|c| h.admits(c)));
                if !ok {
                    self.fail(
                        Invariant::NoLeak,
                        vec![dev],
                        format!("d{dev} now holds conversation {conversation}, which it is not a member of"),
                    );
                }
            }
            Event::Rejected { count, .. } => self.counters.rejected += count as u64,
            Event::PeerRefused {
                peer,
                reason,
                by_us,
            } => {
                if let Some(&p) = self.by_id.get(&peer) {
                    self.trace.log(
                        self.now,
                        trace::Kind::Refused,
                        Some(dev),
                        Some(p),
                        u64::from(by_us),
                        u64::from(reason.code()),
                    );
                    if topo::is_membership_refusal(reason) {
                        self.pairs
                            .entry(crate::net::pair(dev, p))
                            .or_default()
                            .refused = true;
                    }
                }
            }
            Event::PeerJoined { peer, .. } => {
                if let Some(&p) = self.by_id.get(&peer) {
                    self.pairs
                        .entry(crate::net::pair(dev, p))
                        .or_default()
                        .refused = false;
                }
            }
            _ => {}
        }
    }

    fn send_frame(&mut self, from: Dev, peer: DeviceId, frame: Vec<u8>, prio: Prio) {
        let Some(&to) = self.by_id.get(&peer) else {
            self.counters.unknown_peer += 1;
            return;
        };
        if frame.len() > MAX_FRAME_LEN {
            let len = frame.len();
            self.fail(
                Invariant::Bounded,
                vec![from, to],
                format!("d{from} sent a {len}-byte frame (limit {MAX_FRAME_LEN})"),
            );
            return;
        }
        let decoded = match Frame::decode(&frame) {
            Ok(f) => f,
            Err(e) => {
                self.fail(
                    Invariant::Bounded,
                    vec![from, to],
                    format!("d{from} sent a frame that does not decode: {e}"),
                );
                return;
            }
        };
        if let Err(v) = check::check_send(
            &self.devs,
            &self.ledger,
            from,
            to,
            (&decoded, &frame),
            self.now,
        ) {
            self.violation = Some(v);
            return;
        }
        let tag = u64::from(frame[0]);
        let len = frame.len();
        self.trace.log(
            self.now,
            trace::Kind::Send,
            Some(from),
            Some(to),
            tag,
            len as u64,
        );
        match self.net.pipe_for(from, to) {
            Ok((session, key)) if self.net.must_hold(key, self.now) => {
                let h = Held {
                    session,
                    from,
                    to,
                    frame,
                };
                if self.net.hold(key, prio, h) {
                    let at = self.net.free_at(key).max(self.now);
                    self.q.push(at, Ev::PipeFree { key });
                }
                let s = &self.net.sessions[&session];
                let d = &s.dirs[s.dir_from(from)];
                self.check_queue(from, to, d.in_flight + d.held);
            }
            _ => self.transmit(from, to, frame),
        }
    }

    /// A pipe may take frames again: sends what it held, in order, until it
    /// is busy again or holds nothing.
    pub(crate) fn pipe_free(&mut self, key: PipeKey) {
        loop {
            let free = self.net.free_at(key);
            if free > self.now {
                self.q.push(free, Ev::PipeFree { key });
                return;
            }
            let Some(h) = self.net.release(key) else {
                return;
            };
            match self.net.pipe_for(h.from, h.to) {
                Ok((session, _)) if session == h.session => self.transmit(h.from, h.to, h.frame),
                _ => {
                    let why = trace::DROP_NOT_CONNECTED;
                    self.trace.log(
                        self.now,
                        trace::Kind::Drop,
                        Some(h.from),
                        Some(h.to),
                        why,
                        0,
                    );
                }
            }
        }
    }

    /// Sends at once what session `id` held: a graceful close drains its
    /// queue first.
    pub(crate) fn flush_held(&mut self, id: u64) {
        for h in self.net.release_session(id) {
            self.transmit(h.from, h.to, h.frame);
        }
    }

    fn check_queue(&mut self, from: Dev, to: Dev, q: usize) {
        self.counters.peak_queue = self.counters.peak_queue.max(q);
        if q > self.opts.max_queue {
            self.fail(
                Invariant::Bounded,
                vec![from, to],
                format!(
                    "{q} frames queued from d{from} to d{to} (limit {})",
                    self.opts.max_queue
                ),
            );
        }
    }

    /// Puts a frame on the wire of its session.
    fn transmit(&mut self, from: Dev, to: Dev, frame: Vec<u8>) {
        let len = frame.len();
        match self.net.send(&mut self.rng, self.now, from, to, len) {
            Ok(s) => {
                if let crate::net::Route::Link { .. } = self.net.sessions[&s.session].route {
                    self.counters.link_bytes += len as u64;
                }
                // A `Sync` frame (decoded when it was sent): tag 5, doc [16],
                // more u8 (wire.md §9).
                let sync = (frame[0] == 5 && frame.len() >= 18).then(|| {
                    let doc: [u8; 16] = frame[1..17].try_into().expect("16 bytes");
                    (s.session, doc, frame[17] != 0)
                });
                self.acct.on_send(frame[0], len, sync);
                let d = &self.net.sessions[&s.session].dirs[s.dir];
                let q = d.in_flight + d.held;
                self.check_queue(from, to, q);
                if q > self.opts.max_queue {
                    return;
                }
                if let Some(g) = s.ghost {
                    self.q.push(
                        g,
                        Ev::Ghost {
                            session: s.session,
                            from,
                            to,
                        },
                    );
                }
                self.q.push(
                    s.arrival,
                    Ev::Deliver {
                        session: s.session,
                        dir: s.dir,
                        seq: s.seq,
                        from,
                        to,
                        frame,
                    },
                );
            }
            Err(SendError::NotConnected) => {
                let why = trace::DROP_NOT_CONNECTED;
                self.trace
                    .log(self.now, trace::Kind::Drop, Some(from), Some(to), why, 0);
            }
            Err(SendError::Broken(id)) => topo::break_session(self, id),
        }
    }
}

/// The document a store key belongs to (the team document for revocations).
fn doc_of_key(key: &[u8]) -> [u8; 16] {
    key.strip_prefix(keys::DOC_PREFIX)
        .or_else(|| key.strip_prefix(keys::INDEX_PREFIX))
        .and_then(|r| r.get(..16))
        .and_then(|r| r.try_into().ok())
        .unwrap_or(TEAM_DOC_ID)
}
