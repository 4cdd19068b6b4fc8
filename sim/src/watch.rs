//! Convergence watch: after a heal, the first moment at which every up
//! member device holds every document it should, with equal heads. This
//! is the "time to converge after the last heal" metric.
//!
//! Invariant: the watch only ever reads heads digests, and only for the
//! device whose documents just changed, so it costs little per step.

use std::collections::{BTreeMap, BTreeSet};

use huddle::team::TEAM_DOC_ID;
use huddle::ConversationId;

use crate::check::{member_devices, Ledger};
use crate::device::Device;
use crate::net::Dev;

#[derive(Default)]
pub struct Watch {
    active: bool,
    pub since: u64,
    pub done_at: Option<u64>,
    digests: BTreeMap<[u8; 16], BTreeMap<Dev, [u8; 16]>>,
}

fn digest_of(d: &Device, doc: &[u8; 16]) -> Option<[u8; 16]> {
    let n = d.node.as_ref()?;
    if *doc == TEAM_DOC_ID {
        n.team_heads()
    } else {
        n.conversation(&ConversationId(*doc))
            .map(|c| c.replica().heads_digest())
    }
}

impl Watch {
    /// Starts (or restarts) watching at a heal.
    pub fn start(&mut self, devs: &[Device], ledger: &Ledger, now: u64) {
        self.active = true;
        self.since = now;
        self.done_at = None;
        self.digests.clear();
        for dev in 0..devs.len() {
            self.device_changed(devs, dev, None);
        }
        self.check(devs, ledger, now);
    }

    /// Refreshes the digests of `dev` (of `docs`, or of everything).
    pub fn device_changed(&mut self, devs: &[Device], dev: Dev, docs: Option<&BTreeSet<[u8; 16]>>) {
        if !self.active || self.done_at.is_some() {
            return;
        }
        let d = &devs[dev];
        let all: Vec<[u8; 16]>;
        let docs: &mut dyn Iterator<Item = &[u8; 16]> = match docs {
            Some(set) => &mut set.iter(),
            None => {
                all = match &d.node {
                    Some(n) => std::iter::once(TEAM_DOC_ID)
                        .chain(n.conversation_ids().map(|c| c.0))
                        .collect(),
                    None => Vec::new(),
                };
                for m in self.digests.values_mut() {
                    m.remove(&dev);
                }
                &mut all.iter()
            }
        };
        for doc in docs {
            match digest_of(d, doc) {
                Some(h) => self.digests.entry(*doc).or_default().insert(dev, h),
                None => self.digests.entry(*doc).or_default().remove(&dev),
            };
        }
    }

    /// Records the moment everything is level, if it is now.
    pub fn check(&mut self, devs: &[Device], ledger: &Ledger, now: u64) {
        if !self.active || self.done_at.is_some() {
            return;
        }
        let level = |doc: &[u8; 16], members: &mut dyn Iterator<Item = Dev>| {
            let m = self.digests.get(doc);
            let mut first = None;
            for d in members {
                let Some(h) = m.and_then(|m| m.get(&d)) else {
                    return false;
                };
                match first {
                    None => first = Some(h),
                    Some(f) if f != h => return false,
                    _ => {}
                }
            }
            true
        };
        let up = |d: &Dev| devs[*d].up();
        for (id, h) in ledger.live_headers() {
            if !level(&id.0, &mut member_devices(devs, h).into_iter().filter(up)) {
                return;
            }
        }
        let mut team = (0..devs.len())
            .filter(|d| devs[*d].is_member() && devs[*d].enrolled && !devs[*d].revoked)
            .filter(up);
        if !level(&TEAM_DOC_ID, &mut team) {
            return;
        }
        self.done_at = Some(now);
    }
}
