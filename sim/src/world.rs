//! The simulated world and its event loop: devices, network, queue, the
//! dispatch of every event, deliveries, boots and crashes. Carrying out a
//! node's outputs is in [`crate::carry`].
//!
//! Invariant: single-threaded and clock-free: the only time is
//! `World::now`, the only randomness the seeded ChaCha generators, every
//! map a `BTreeMap`.

use std::collections::BTreeMap;

use huddle::crypto::AuthorityKey;
use huddle::node::{Input, NodeConfig, Output, Timer};
use huddle::wire::Frame;
use huddle::{Command, DeviceId, MemberId};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::acct::{Accounting, SyncPart};
use crate::check::{self, Invariant, Ledger, Violation};
use crate::device::{Device, Identity, Kind};
use crate::metrics::Counters;
use crate::net::{Dev, Net};
use crate::queue::{Ev, Queue};
use crate::scenario::{OutsiderKind, Scenario};
use crate::topo::{self, PairState};
use crate::trace::{self, Trace};
use crate::watch::Watch;

/// A deliberately broken node wrapper, for tests of the checkers. It sees
/// (and may alter) every step's outputs before they are carried out.
pub trait Tamper {
    fn outputs(&mut self, device: usize, outputs: &mut Vec<Output>);
}

/// How a run is set up beyond its scenario and seed.
pub struct Options {
    pub tamper: Option<Box<dyn Tamper>>,
    /// Check the output contract (nothing carried out after an unflushed
    /// `Persist`) as each step's outputs are carried out.
    pub contract_check: bool,
    /// Bound on frames queued in one direction of one connection.
    pub max_queue: usize,
    /// Trace lines shown with a failure, and whether sync frames are among them.
    pub trace_lines: usize,
    pub trace_sync: bool,
    /// Show the trace of these devices instead of the violation's.
    pub trace_devices: Option<Vec<usize>>,
    /// Nodes refuse changes that break the documents' append-only rules
    /// (`NodeConfig::append_only`); off only to show the checker catches
    /// what they stop.
    pub append_only: bool,
    /// A clinical rule broken on purpose (`NodeConfig::clinical_fault`), to
    /// show the clinical checkers catch it.
    pub clinical_fault: huddle::node::ClinicalFault,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            tamper: None,
            contract_check: true,
            max_queue: 10_000,
            trace_lines: 30,
            trace_sync: true,
            trace_devices: None,
            append_only: true,
            clinical_fault: huddle::node::ClinicalFault::None,
        }
    }
}

pub struct World {
    pub sc: Scenario,
    pub now: u64,
    pub q: Queue,
    pub devs: Vec<Device>,
    pub by_id: BTreeMap<DeviceId, Dev>,
    pub net: Net,
    /// Network and fault randomness.
    pub rng: ChaCha8Rng,
    /// Workload randomness (who says what when).
    pub wrng: ChaCha8Rng,
    pub authority: AuthorityKey,
    pub ledger: Ledger,
    pub acct: Accounting,
    pub trace: Trace,
    pub pairs: BTreeMap<(Dev, Dev), PairState>,
    pub violation: Option<Violation>,
    pub opts: Options,
    pub counters: Counters,
    pub final_heal: bool,
    pub watch: Watch,
    pub(crate) next_token: u64,
    pub restart_delay: BTreeMap<Dev, u64>,
    /// What the clinical checkers follow (`clinical.rs`).
    pub clin: crate::clinical::Clin,
}

impl World {
    pub fn new(sc: &Scenario, seed: u64, opts: Options) -> World {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let authority = AuthorityKey::generate(&mut rng);
        let other = AuthorityKey::generate(&mut rng);
        let n = sc.team_devices();
        let starts = sc.site_starts();
        let mut homes = Vec::new();
        for (i, s) in sc.site.iter().enumerate() {
            homes.extend(std::iter::repeat_n(i, s.devices));
        }
        let member_of: BTreeMap<usize, usize> =
            sc.same_member.iter().map(|[e, of]| (*e, *of)).collect();
        let members: Vec<MemberId> = (0..n).map(|_| MemberId::random(&mut rng)).collect();
        let mut devs: Vec<Device> = Vec::new();
        for d in 0..homes.len() {
            // Roles may be declared in any site's table; they apply by device.
            let roles = sc
                .site
                .iter()
                .flat_map(|s| s.roles.iter())
                .filter(|(_, set)| sc.resolve(set).is_ok_and(|v| v.contains(&d)))
                .map(|(r, _)| r.clone())
                .collect();
            let m = *member_of.get(&d).unwrap_or(&d);
            let ident = Identity {
                kind: Kind::Member,
                member: Some(members[m]),
                display_name: format!("member {m}"),
                roles,
            };
            devs.push(Device::new(&mut rng, ident, &authority, &other, None));
        }
        for o in &sc.outsider {
            let site = sc.site_index(&o.site).expect("validated");
            homes.push(site);
            let stolen = (o.kind == OutsiderKind::Stolen).then(|| {
                devs[starts[site]]
                    .cert
                    .clone()
                    .expect("members have certificates")
            });
            let ident = Identity {
                kind: Kind::Outsider(o.kind.clone()),
                member: None,
                display_name: "outsider".into(),
                roles: vec![],
            };
            devs.push(Device::new(&mut rng, ident, &authority, &other, stolen));
        }
        let skew = sc.faults.skew.0 / 1000;
        for d in &mut devs {
            d.append_only = opts.append_only;
            d.clinical_fault = opts.clinical_fault;
            if skew > 0 {
                d.skew_ms = rng.gen_range(-skew..=skew);
            }
        }
        let by_id = devs.iter().enumerate().map(|(i, d)| (d.id, i)).collect();
        let net = Net::new(sc, &homes);
        let wrng = ChaCha8Rng::seed_from_u64(rng.gen());
        World {
            sc: sc.clone(),
            now: 0,
            q: Queue::default(),
            devs,
            by_id,
            net,
            rng,
            wrng,
            authority,
            ledger: Ledger {
                convs: vec![None; sc.conversation.len()],
                ..Ledger::default()
            },
            acct: Accounting::default(),
            trace: Trace::default(),
            pairs: BTreeMap::new(),
            violation: None,
            opts,
            counters: Counters::default(),
            final_heal: false,
            watch: Watch::default(),
            next_token: 0,
            restart_delay: BTreeMap::new(),
            clin: crate::clinical::Clin::default(),
        }
    }

    /// Runs until quiet after the final heal, a violation, or the deadline,
    /// then checks the invariants.
    pub fn run(&mut self) {
        crate::actions::schedule_all(self);
        while self.step_event() {}
        self.finish();
    }

    /// Handles the next event; false once the run is over.
    pub fn step_event(&mut self) -> bool {
        let deadline = self.sc.duration.us() + self.sc.settle.us();
        let Some((t, ev)) = self.q.pop() else {
            return false;
        };
        if t > deadline {
            self.now = deadline;
            self.fail(
                Invariant::Quiescence,
                vec![],
                format!(
                    "the network was still busy {} after the final heal ({} events queued)",
                    trace::fmt_time(self.sc.settle.us()),
                    self.q.len() + 1
                ),
            );
            return false;
        }
        self.now = t;
        self.dispatch(ev);
        if self.violation.is_some() {
            return false;
        }
        if self.final_heal && self.quiet() {
            self.counters.quiet_at = Some(self.now);
            return false;
        }
        true
    }

    /// The final checks, once the run is over (unless it already failed).
    pub fn finish(&mut self) {
        if self.violation.is_some() {
            return;
        }
        if let Err(v) = crate::leak::check_stores(&self.devs, &self.ledger.bodies, self.now)
            .and_then(|()| check::check_final(&self.devs, &self.ledger, self.now))
            .and_then(|()| crate::clinical::check_final(self, self.now))
        {
            self.violation = Some(v);
        }
    }

    /// No frame in flight, no connection event pending, no timer but
    /// maintenance and the clinical schedule's due (re-notifications and
    /// reminders go on for as long as a message stays unacknowledged; what
    /// they write, escalations, is checked as it happens).
    pub fn quiet(&self) -> bool {
        !self.q.busy()
            && self.devs.iter().all(|d| {
                d.timers
                    .keys()
                    .all(|t| matches!(t, Timer::Maintenance | Timer::Clinical))
            })
    }

    pub fn fail(&mut self, inv: Invariant, devices: Vec<Dev>, detail: String) {
        if self.violation.is_none() {
            self.violation = Some(Violation::new(inv, self.now, devices, detail));
        }
    }

    fn dispatch(&mut self, ev: Ev) {
        match ev {
            Ev::Deliver {
                session,
                dir,
                seq,
                from,
                to,
                frame,
            } => self.deliver(session, dir, seq, from, to, frame),
            Ev::PipeFree { key } => self.pipe_free(key),
            Ev::Ghost { session, from, to } => {
                if self.net.ghost_is_stale(session, from, to) {
                    self.counters.stale_blocked += 1;
                    let why = trace::DROP_GHOST_STALE;
                    self.trace
                        .log(self.now, trace::Kind::Drop, Some(from), Some(to), why, 0);
                } else {
                    self.counters.dup_suppressed += 1;
                }
            }
            Ev::Dial { a, b, .. } => topo::dial(self, a, b),
            Ev::Notify {
                session,
                dev,
                peer,
                inc,
            } => {
                self.net.notified(session);
                if self.devs[dev].inc == inc && self.devs[dev].up() {
                    let id = self.devs[peer].id;
                    self.step(dev, Input::PeerDisconnected { peer: id });
                }
            }
            Ev::Timer {
                dev,
                inc,
                timer,
                token,
            } => {
                let d = &mut self.devs[dev];
                if d.inc == inc && d.timers.get(&timer) == Some(&token) {
                    d.timers.remove(&timer);
                    self.step(dev, Input::Timer(timer));
                }
            }
            Ev::Boot { dev } => self.boot(dev),
            Ev::Create { conv, dev } => crate::actions::create(self, conv, dev),
            Ev::Traffic => crate::actions::traffic(self),
            Ev::User { dev, inc, cmd } => crate::actions::user(self, dev, inc, cmd),
            Ev::Script(i) => crate::actions::script(self, i),
            Ev::LinkFlip(l) => topo::link_flip(self, l),
            Ev::Fault(k) => crate::actions::fault(self, k),
            Ev::Unsplit { devices } => topo::unsplit(self, devices),
            Ev::FinalHeal => topo::final_heal(self),
            Ev::Policy => crate::clinical_work::policy(self),
            Ev::AlertDue {
                dev,
                inc,
                conv,
                msg,
                n,
            } => crate::clinical::alert_due(self, dev, inc, conv, msg, n),
            Ev::ReminderDue {
                dev,
                inc,
                msg,
                k,
                sim_ms,
            } => crate::clinical::reminder_due(self, dev, inc, msg, k, sim_ms),
        }
    }

    fn deliver(&mut self, session: u64, dir: usize, seq: u64, from: Dev, to: Dev, frame: Vec<u8>) {
        if !self.net.arrive(session, dir, seq) {
            let why = trace::DROP_STALE_SESSION;
            self.trace
                .log(self.now, trace::Kind::Drop, Some(from), Some(to), why, 0);
            return;
        }
        if !self.devs[to].up() {
            let why = trace::DROP_DEAD;
            self.trace
                .log(self.now, trace::Kind::Drop, Some(from), Some(to), why, 0);
            return;
        }
        self.counters.last_delivery = self.now;
        let tag = u64::from(frame.first().copied().unwrap_or(0));
        self.trace
            .log(self.now, trace::Kind::Deliver, Some(from), Some(to), tag, 0);
        self.trace.mix(&frame);
        let mut settle = None;
        if let Ok(Frame::Sync { doc, more, data }) = Frame::decode(&frame) {
            let part = SyncPart {
                session,
                dir,
                from,
                to,
                doc,
                more,
            };
            let buffered = self.acct.on_sync_delivered(part, &data);
            let limit = NodeConfig::default().max_reassembly_bytes;
            if buffered > limit {
                self.fail(
                    Invariant::Bounded,
                    vec![from, to],
                    format!("d{to} buffers {buffered} bytes of one sync message from d{from} (limit {limit})"),
                );
                return;
            }
            if !more {
                settle = Some(doc);
            }
        }
        let peer = self.devs[from].id;
        self.step(to, Input::Frame { peer, bytes: frame });
        if let Some(doc) = settle {
            self.acct.settle_episode(session, doc);
        }
    }

    /// Boots a device from its store (first start, join, restart, return).
    pub fn boot(&mut self, dev: Dev) {
        if self.devs[dev].up() {
            return;
        }
        if let Err(e) = self.devs[dev].boot() {
            self.fail(
                Invariant::Restart,
                vec![dev],
                format!("d{dev} cannot restart from what its store holds: {e}"),
            );
            return;
        }
        let inc = u64::from(self.devs[dev].inc);
        self.trace
            .log(self.now, trace::Kind::Boot, Some(dev), None, inc, 0);
        self.step(dev, Input::Start);
        self.watch.device_changed(&self.devs, dev, None);
        topo::rewire_dev(self, dev);
    }

    /// Power cut on `dev`. `after` is how many outputs of the interrupted
    /// step were carried out (None: between steps).
    pub fn crash(&mut self, dev: Dev, after: Option<usize>) {
        if !self.devs[dev].up() {
            return;
        }
        let x = after.map_or(u64::MAX, |a| a as u64);
        self.trace
            .log(self.now, trace::Kind::Crash, Some(dev), None, x, 0);
        self.counters.crashes += 1;
        self.devs[dev].crash();
        // What survived the power cut, byte for byte (no leak by holding).
        if let Err(v) = crate::leak::check_store(&self.devs, &self.ledger.bodies, dev, self.now) {
            self.fail(v.invariant, v.devices, v.detail);
        }
        for id in self.net.sessions_of(dev) {
            topo::break_session(self, id);
        }
        if let Some(delay) = self.restart_delay.remove(&dev) {
            self.q.push(self.now + delay, Ev::Boot { dev });
        }
        self.watch.device_changed(&self.devs, dev, None);
    }

    /// Hands one input to a device's node and carries out its outputs.
    pub fn step(&mut self, dev: Dev, input: Input) {
        let now_ms = self.devs[dev].now_ms(self.now);
        let Some(node) = self.devs[dev].node.as_mut() else {
            return;
        };
        let outs = node.handle(now_ms, input);
        self.carry(dev, outs);
    }

    /// Runs a user command on a device; None if it is down.
    pub fn command(
        &mut self,
        dev: Dev,
        cmd: Command,
    ) -> Option<Result<huddle::Reply, huddle::node::CommandError>> {
        let now_ms = self.devs[dev].now_ms(self.now);
        let d = &mut self.devs[dev];
        let node = d.node.as_mut()?;
        let (r, outs) = node.command(now_ms, &mut d.rng, cmd);
        if let Ok(huddle::Reply::Conversation(id)) = &r {
            if let Some(c) = node.conversation(id) {
                self.ledger.headers.entry(*id).or_insert(c.header.clone());
            }
        }
        self.carry(dev, outs);
        Some(r)
    }

    /// The site a device calls home.
    pub fn home_site(&self, d: Dev) -> usize {
        self.net.home[d] as usize
    }
}
