//! Scenarios as data: the TOML schema of `sim/scenarios/*.toml`, durations
//! and device sets as they are written there, and the built-in scenarios.
//!
//! Invariant: a scenario is validated completely before anything runs
//! ([`Scenario::parse`]), so a typo is one clear sentence, never a panic
//! halfway through a sweep.

use std::collections::BTreeMap;

use serde::Deserialize;

pub use crate::dur::Dur;

/// The scenarios compiled into the binary, by name.
pub const BUILTIN: &[(&str, &str)] = &[
    ("ward-outage", include_str!("../scenarios/ward-outage.toml")),
    (
        "remote-clinic",
        include_str!("../scenarios/remote-clinic.toml"),
    ),
    ("field-team", include_str!("../scenarios/field-team.toml")),
    ("churn-200", include_str!("../scenarios/churn-200.toml")),
    ("urgent-ward", include_str!("../scenarios/urgent-ward.toml")),
    (
        "hospital-sites",
        include_str!("../scenarios/hospital-sites.toml"),
    ),
    (
        "field-carrier",
        include_str!("../scenarios/field-carrier.toml"),
    ),
    ("thin-link", include_str!("../scenarios/thin-link.toml")),
];

/// A set of devices: `"all"`, `"site:ward"`, or indices and ranges `"0-9,12"`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct DeviceSet(pub String);

/// Latency: uniform in `[min, max]`; with probability `tail` a further
/// uniform extra in `[0, 10 × max]` (a queue somewhere, a Wi-Fi retry).
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Latency {
    pub min: Dur,
    pub max: Dur,
    #[serde(default)]
    pub tail: f64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Site {
    pub name: String,
    pub devices: usize,
    pub latency: Latency,
    pub bandwidth_mbps: f64,
    /// Probability that a frame's segment is lost once (and retransmitted).
    #[serde(default)]
    pub loss: f64,
    /// How long mDNS takes to find a peer, `[min, max]`.
    pub discovery: [Dur; 2],
    /// Roles in certificates: role → devices holding it.
    #[serde(default)]
    pub roles: BTreeMap<String, DeviceSet>,
}

/// When an inter-site link is up.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum LinkUp {
    /// `"always"` or `"never"` (until the final heal).
    Fixed(String),
    /// Up `fraction` of the time, in up-periods averaging `mean_up`.
    Intermittent { fraction: f64, mean_up: Dur },
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Link {
    pub name: String,
    /// Device pairs that reach each other over the link (a configured
    /// `--peer` address); empty means every device of site `a` with every
    /// device of site `b`.
    #[serde(default)]
    pub pairs: Vec<[usize; 2]>,
    pub a: String,
    pub b: String,
    pub latency: Latency,
    pub bandwidth_kbps: f64,
    #[serde(default)]
    pub loss: f64,
    pub up: LinkUp,
    /// Redial delay once the link is up, `[min, max]`.
    #[serde(default = "default_redial")]
    pub redial: [Dur; 2],
}

fn default_redial() -> [Dur; 2] {
    [Dur(1_000_000), Dur(5_000_000)]
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ConvKind {
    Group,
    Role,
    Direct,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConvSpec {
    pub kind: ConvKind,
    #[serde(default)]
    pub title: String,
    /// Group and direct: the members (devices stand for their members).
    #[serde(default)]
    pub members: Option<DeviceSet>,
    #[serde(default)]
    pub role: String,
    pub creator: usize,
    #[serde(default)]
    pub at: Dur,
    /// Direct only: both members create it, at the same moment.
    #[serde(default)]
    pub both: bool,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Traffic {
    pub rate_per_min: f64,
    pub start: Dur,
    pub stop: Dur,
    #[serde(default = "default_body")]
    pub body: [usize; 2],
    /// Fraction of urgent messages.
    #[serde(default)]
    pub urgent: f64,
    /// Chance a received message makes its reader mark the thread read.
    #[serde(default)]
    pub read: f64,
    /// Chance a received urgent message is acknowledged.
    #[serde(default)]
    pub ack: f64,
    /// Of the urgent messages, the fraction that are STAT.
    #[serde(default)]
    pub stat: f64,
    /// Fraction of messages that are reminders for one or two members of
    /// the conversation, due `remind_in` later (every `remind_every`,
    /// `remind_times` times when set).
    #[serde(default)]
    pub remind: f64,
    #[serde(default = "default_remind_in")]
    pub remind_in: [Dur; 2],
    #[serde(default)]
    pub remind_every: Option<Dur>,
    #[serde(default)]
    pub remind_times: Option<u16>,
    /// Devices whose users write (default: every team device).
    #[serde(default)]
    pub senders: Option<DeviceSet>,
}

fn default_remind_in() -> [Dur; 2] {
    [Dur(30_000_000), Dur(300_000_000)]
}

fn default_body() -> [usize; 2] {
    [20, 300]
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    #[serde(default)]
    pub crashes_per_hour: f64,
    #[serde(default)]
    pub restart_after: [Dur; 2],
    /// Fraction of crashes that strike in the middle of a step, between
    /// two of its outputs (e.g. after `Persist` but before `Flush`).
    #[serde(default)]
    pub mid_step: f64,
    /// Initial clock skew, uniform in ±this.
    #[serde(default)]
    pub skew: Dur,
    #[serde(default)]
    pub jumps_per_hour: f64,
    /// Clock jumps are uniform in ±this.
    #[serde(default)]
    pub jump: Dur,
    /// Connections broken by loss beyond the retransmit threshold.
    #[serde(default)]
    pub breaks_per_hour: f64,
    /// Fraction of frames with a late ghost copy (a duplicate that
    /// surfaces 1 s to 5 min later, typically after its connection died).
    #[serde(default)]
    pub stale_dup: f64,
    /// Random faults stop here (default: the end of the run).
    #[serde(default)]
    pub stop: Option<Dur>,
}

/// Devices joining and leaving, and random partitions.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Churn {
    /// Devices enrolled only later, at a uniform time in `[0, join_by]`.
    #[serde(default)]
    pub late: Option<DeviceSet>,
    #[serde(default)]
    pub join_by: Dur,
    #[serde(default)]
    pub leaves_per_hour: f64,
    #[serde(default)]
    pub away: [Dur; 2],
    #[serde(default)]
    pub partitions_per_hour: f64,
    #[serde(default)]
    pub partition_for: [Dur; 2],
    #[serde(default)]
    pub stop: Option<Dur>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Action {
    /// Each set becomes its own segment (a switch fails).
    Partition { groups: Vec<DeviceSet> },
    /// Every device returns to its home site; links keep their schedule.
    Heal,
    /// A device moves to another site's network.
    Move { device: usize, to: String },
    Crash {
        device: usize,
        #[serde(default)]
        restart_after: Option<Dur>,
        #[serde(default)]
        mid_step: bool,
    },
    /// Shift a device's clock by `by` (may be negative).
    Jump { device: usize, by: Dur },
    /// The authority revokes `device` (or its member); `by` installs it.
    Revoke {
        device: usize,
        by: usize,
        #[serde(default)]
        member: bool,
    },
    /// A member device turns malicious: forged entries appear in its copy
    /// of conversation number `conversation`, and it syncs them.
    Forge { device: usize, conversation: usize },
    /// Inter-site link `link` goes down now (`up = false`: a site is cut
    /// off) or comes back up (a heal). An intermittent link's next
    /// scheduled flip still comes; the final heal brings every link up.
    Link { link: String, up: bool },
    /// Every message confirmed before `before` (and not before `since`)
    /// by a device whose home is site `from`, of `priority` or above, is,
    /// by now, on every member device whose home is `to` (the devices that
    /// carried it need not be members of anything).
    CheckCarried {
        from: String,
        to: String,
        before: Dur,
        #[serde(default)]
        since: Dur,
        #[serde(default)]
        priority: Option<huddle::Priority>,
    },
    /// `device`'s user writes a message of `bytes` bytes and `priority` to
    /// conversation number `conversation` (tried again later while the
    /// device is down or lacks the conversation).
    Send {
        device: usize,
        conversation: usize,
        priority: huddle::Priority,
        bytes: usize,
    },
}

#[derive(Clone, Debug, Deserialize)]
pub struct ScriptEvent {
    pub at: Dur,
    #[serde(flatten)]
    pub action: Action,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum OutsiderKind {
    /// No certificate at all.
    NoCert,
    /// A valid certificate of another team.
    OtherTeam,
    /// A certificate of this team that has expired.
    Expired,
    /// Someone else's valid certificate, presented with its own device key.
    Stolen,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outsider {
    pub kind: OutsiderKind,
    pub site: String,
    #[serde(default)]
    pub at: Dur,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    pub duration: Dur,
    /// After the final heal, the network must be quiet within this.
    #[serde(default = "default_settle")]
    pub settle: Dur,
    pub site: Vec<Site>,
    #[serde(default)]
    pub link: Vec<Link>,
    #[serde(default)]
    pub conversation: Vec<ConvSpec>,
    pub traffic: Traffic,
    #[serde(default)]
    pub faults: Faults,
    #[serde(default)]
    pub churn: Churn,
    #[serde(default)]
    pub event: Vec<ScriptEvent>,
    #[serde(default)]
    pub outsider: Vec<Outsider>,
    /// Devices that belong to the same member as another: `[[extra, of]]`.
    #[serde(default)]
    pub same_member: Vec<[usize; 2]>,
    /// The team's clinical policy, if not the default.
    #[serde(default)]
    pub policy: Option<crate::clinical_work::PolicySpec>,
}

fn default_settle() -> Dur {
    Dur(30 * 60 * 1_000_000)
}

impl Scenario {
    /// Parses and validates a scenario.
    pub fn parse(text: &str) -> Result<Scenario, String> {
        let s: Scenario = toml::from_str(text).map_err(|e| e.to_string())?;
        s.validate()?;
        Ok(s)
    }

    /// A built-in scenario by name, or a scenario file by path.
    pub fn load(name_or_path: &str) -> Result<Scenario, String> {
        if let Some((_, text)) = BUILTIN.iter().find(|(n, _)| *n == name_or_path) {
            return Scenario::parse(text).map_err(|e| format!("{name_or_path}: {e}"));
        }
        let text = std::fs::read_to_string(name_or_path).map_err(|e| {
            let names: Vec<&str> = BUILTIN.iter().map(|(n, _)| *n).collect();
            format!(
                "no scenario \"{name_or_path}\" (built in: {}) and no such file ({e})",
                names.join(", ")
            )
        })?;
        Scenario::parse(&text).map_err(|e| format!("{name_or_path}: {e}"))
    }

    /// Team devices (outsiders come after them).
    pub fn team_devices(&self) -> usize {
        self.site.iter().map(|s| s.devices).sum()
    }

    pub fn site_index(&self, name: &str) -> Result<usize, String> {
        self.site
            .iter()
            .position(|s| s.name == name)
            .ok_or_else(|| format!("no site named \"{name}\""))
    }

    /// The first device index of each site.
    pub fn site_starts(&self) -> Vec<usize> {
        let mut at = 0;
        self.site
            .iter()
            .map(|s| {
                let start = at;
                at += s.devices;
                start
            })
            .collect()
    }

    /// Resolves a device set to sorted team-device indices: a comma-separated
    /// list of `all`, `site:NAME`, indices and ranges `a-b`.
    pub fn resolve(&self, set: &DeviceSet) -> Result<Vec<usize>, String> {
        let n = self.team_devices();
        let s = set.0.trim();
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if part == "all" {
                out.extend(0..n);
                continue;
            }
            if let Some(site) = part.strip_prefix("site:") {
                let i = self.site_index(site)?;
                let start = self.site_starts()[i];
                out.extend(start..start + self.site[i].devices);
                continue;
            }
            let bad = || {
                format!(
                    "\"{part}\" in device set \"{s}\" is not all, site:NAME, an index or a range"
                )
            };
            let (lo, hi) = match part.split_once('-') {
                Some((a, b)) => (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?),
                None => {
                    let v: usize = part.parse().map_err(|_| bad())?;
                    (v, v)
                }
            };
            if lo > hi || hi >= n {
                return Err(format!(
                    "device set \"{s}\" names devices outside 0-{}",
                    n - 1
                ));
            }
            out.extend(lo..=hi);
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    fn validate(&self) -> Result<(), String> {
        let n = self.team_devices();
        if n < 2 {
            return Err("a scenario needs at least two team devices".into());
        }
        let dev = |d: usize, what: &str| {
            if d < n {
                Ok(())
            } else {
                Err(format!("{what} names device {d}, but there are {n}"))
            }
        };
        for s in &self.site {
            for set in s.roles.values() {
                self.resolve(set)?;
            }
            if s.latency.min > s.latency.max || s.bandwidth_mbps <= 0.0 {
                return Err(format!("site {}: bad latency or bandwidth", s.name));
            }
        }
        for l in &self.link {
            self.site_index(&l.a)?;
            self.site_index(&l.b)?;
            for [a, b] in &l.pairs {
                dev(*a, &l.name)?;
                dev(*b, &l.name)?;
            }
            if let LinkUp::Fixed(f) = &l.up {
                if f != "always" && f != "never" {
                    return Err(format!(
                        "link {}: up is \"always\", \"never\" or {{ fraction, mean_up }}",
                        l.name
                    ));
                }
            }
        }
        for (i, c) in self.conversation.iter().enumerate() {
            dev(c.creator, &format!("conversation {i}"))?;
            match c.kind {
                ConvKind::Group | ConvKind::Direct => {
                    let m = c
                        .members
                        .as_ref()
                        .ok_or_else(|| format!("conversation {i} needs members"))?;
                    let m = self.resolve(m)?;
                    if c.kind == ConvKind::Direct && m.len() != 2 {
                        return Err(format!("direct conversation {i} needs two members"));
                    }
                }
                ConvKind::Role => {
                    if c.role.is_empty() {
                        return Err(format!("role conversation {i} needs a role"));
                    }
                }
            }
        }
        for e in &self.event {
            match &e.action {
                Action::Partition { groups } => {
                    for g in groups {
                        self.resolve(g)?;
                    }
                }
                Action::Move { device, to } => {
                    dev(*device, "move")?;
                    self.site_index(to)?;
                }
                Action::Crash { device, .. } | Action::Jump { device, .. } => {
                    dev(*device, "event")?
                }
                Action::Revoke { device, by, .. } => {
                    dev(*device, "revoke")?;
                    dev(*by, "revoke")?;
                }
                Action::Forge {
                    device,
                    conversation,
                }
                | Action::Send {
                    device,
                    conversation,
                    ..
                } => {
                    dev(*device, "forge or send")?;
                    if *conversation >= self.conversation.len() {
                        return Err(format!("an event names conversation {conversation}"));
                    }
                }
                Action::CheckCarried { from, to, .. } => {
                    self.site_index(from)?;
                    self.site_index(to)?;
                }
                Action::Link { link, .. } => {
                    if !self.link.iter().any(|l| &l.name == link) {
                        return Err(format!("no link named \"{link}\""));
                    }
                }
                Action::Heal => {}
            }
        }
        for o in &self.outsider {
            self.site_index(&o.site)?;
        }
        for [extra, of] in &self.same_member {
            dev(*extra, "same_member")?;
            dev(*of, "same_member")?;
        }
        if let Some(late) = &self.churn.late {
            self.resolve(late)?;
        }
        if let Some(senders) = &self.traffic.senders {
            self.resolve(senders)?;
        }
        let end = self.duration;
        if let Some(e) = self.event.iter().find(|e| e.at > end) {
            return Err(format!(
                "an event at {:?} us comes after the end of the run",
                e.at.0
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_parse() {
        for (name, text) in BUILTIN {
            let s = Scenario::parse(text).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(&s.name, name);
        }
    }
}
