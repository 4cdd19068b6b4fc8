//! The team's clinical policy: for urgent and for STAT messages, who must
//! acknowledge, how often to re-notify, and the escalation ladder. Signed by
//! the team authority and carried in the team document's `policy` map
//! (sync.md §7.6).
//!
//! Invariant: a policy is taken only if the team authority signed it; of
//! several, the one issued last wins (ties: the greater signature), so every
//! device that holds the same team document follows the same policy.

use crate::codec::{DecodeError, Reader, Writer};
use crate::crypto::{self, domain, AuthorityKey, SIGNATURE_LEN};
use crate::ids::{Millis, TeamId};
use crate::membership::valid_role;
use crate::message::{AckBy, Priority, MAX_LEVELS};

/// Version 1: the two rules; version 2: the same, then the attachment
/// limits. A policy with the default limits is written as version 1, so
/// each policy has one encoding.
const POLICY_VERSION: u8 = 1;
const POLICY_VERSION_ATTACHMENTS: u8 = 2;
/// The smallest attachment limit a team can set.
pub const MIN_ATTACHMENT_LIMIT: u64 = 64 * 1024;
/// The key the policy lives under in the team document's `policy` map.
pub const POLICY_KEY: &str = "clinical";
/// Re-notification intervals and escalation delays are at least this long
/// (a second: tests shorten the policy to seconds) and at most a day.
pub const MIN_INTERVAL_MS: Millis = 1_000;
pub const MAX_INTERVAL_MS: Millis = 86_400_000;
/// Most re-notifications of one message.
pub const MAX_TIMES: u16 = 100;

const MINUTE: Millis = 60_000;

/// One step of an escalation ladder: `after_ms` from when a device first
/// held the message with its acknowledgement still owed, escalate to `role`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Step {
    pub after_ms: Millis,
    pub role: String,
}

/// What happens to a message of one priority.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Rule {
    pub ack_by: AckBy,
    /// Re-notify every `every_ms`, `times` times (0: never).
    pub every_ms: Millis,
    pub times: u16,
    /// At most [`MAX_LEVELS`] steps, `after_ms` strictly increasing.
    pub ladder: Vec<Step>,
}

impl Rule {
    /// After this long from first holding a message, nothing more is due
    /// for it under this rule.
    pub fn horizon_ms(&self) -> Millis {
        let renotify = self.every_ms.saturating_mul(u64::from(self.times));
        let ladder = self.ladder.last().map_or(0, |s| s.after_ms);
        renotify.max(ladder)
    }

    fn check(&self) -> Result<(), DecodeError> {
        let interval = |ms: Millis| (MIN_INTERVAL_MS..=MAX_INTERVAL_MS).contains(&ms);
        if self.times > MAX_TIMES || (self.times > 0 && !interval(self.every_ms)) {
            return Err(DecodeError::Invalid(
                "a re-notification interval out of bounds",
            ));
        }
        if self.times == 0 && self.every_ms != 0 {
            return Err(DecodeError::Invalid("an interval for no re-notification"));
        }
        if self.ladder.len() > usize::from(MAX_LEVELS) {
            return Err(DecodeError::TooLong("escalation ladder", MAX_LEVELS.into()));
        }
        if !self
            .ladder
            .iter()
            .all(|s| interval(s.after_ms) && valid_role(&s.role))
        {
            return Err(DecodeError::Invalid("an escalation step out of bounds"));
        }
        if self
            .ladder
            .windows(2)
            .any(|p| p[0].after_ms >= p[1].after_ms)
        {
            return Err(DecodeError::Invalid(
                "escalation steps not in increasing time",
            ));
        }
        Ok(())
    }

    fn write(&self, w: &mut Writer) {
        self.ack_by.write(w);
        w.u64_be(self.every_ms)
            .raw(&self.times.to_be_bytes())
            .varint(self.ladder.len() as u64);
        for s in &self.ladder {
            w.u64_be(s.after_ms).str(&s.role);
        }
    }

    fn read(r: &mut Reader) -> Result<Rule, DecodeError> {
        let ack_by = AckBy::read(r)?;
        let every_ms = r.u64_be("re-notification interval")?;
        let times = u16::from_be_bytes(r.array("re-notifications")?);
        let n = r.count(MAX_LEVELS.into(), 9, "escalation ladder")?;
        let mut ladder = Vec::with_capacity(n);
        for _ in 0..n {
            let after_ms = r.u64_be("escalation delay")?;
            let role = r.str(crate::membership::MAX_ROLE_LEN, "escalation role")?;
            ladder.push(Step {
                after_ms,
                role: role.to_owned(),
            });
        }
        let rule = Rule {
            ack_by,
            every_ms,
            times,
            ladder,
        };
        rule.check()?;
        Ok(rule)
    }
}

/// The team's attachment limits (protocol/blobs.md §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct AttachmentRule {
    /// The largest attachment sent, fetched or served, in bytes.
    pub limit: u64,
    /// Attachments up to this size are fetched as soon as their message
    /// arrives; larger ones when someone opens them.
    pub auto_fetch: u64,
}

impl Default for AttachmentRule {
    fn default() -> Self {
        AttachmentRule {
            limit: crate::blobs::DEFAULT_LIMIT,
            auto_fetch: crate::blobs::DEFAULT_AUTO_FETCH,
        }
    }
}

impl AttachmentRule {
    fn check(&self) -> Result<(), DecodeError> {
        if !(MIN_ATTACHMENT_LIMIT..=crate::blobs::MAX_BLOB_LEN).contains(&self.limit)
            || self.auto_fetch > self.limit
        {
            return Err(DecodeError::Invalid(
                "an attachment limit out of bounds (64 KiB to 256 MiB, automatic fetches at most the limit)",
            ));
        }
        Ok(())
    }
}

/// The whole policy.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ClinicalPolicy {
    pub urgent: Rule,
    pub stat: Rule,
    #[serde(default)]
    pub attachments: AttachmentRule,
}

impl Default for ClinicalPolicy {
    /// In the spirit of the clinical messengers' defaults: urgent repeats
    /// every 2 minutes (10 times) and escalates to the charge nurse after
    /// 10 minutes; STAT repeats every minute (20 times), escalates to the
    /// charge nurse after 3 minutes and to the on-call doctor after 10.
    fn default() -> Self {
        let step = |min: u64, role: &str| Step {
            after_ms: min * MINUTE,
            role: role.to_owned(),
        };
        ClinicalPolicy {
            urgent: Rule {
                ack_by: AckBy::Any,
                every_ms: 2 * MINUTE,
                times: 10,
                ladder: vec![step(10, "charge-nurse")],
            },
            stat: Rule {
                ack_by: AckBy::Any,
                every_ms: MINUTE,
                times: 20,
                ladder: vec![step(3, "charge-nurse"), step(10, "on-call-doctor")],
            },
            attachments: AttachmentRule::default(),
        }
    }
}

impl ClinicalPolicy {
    /// The rule for `priority` (routine messages have none).
    pub fn rule(&self, priority: Priority) -> Option<&Rule> {
        match priority {
            Priority::Routine => None,
            Priority::Urgent => Some(&self.urgent),
            Priority::Stat => Some(&self.stat),
        }
    }

    pub fn check(&self) -> Result<(), DecodeError> {
        self.urgent.check()?;
        self.stat.check()?;
        self.attachments.check()
    }
}

/// A policy as the team authority signed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedPolicy {
    pub team: TeamId,
    pub issued: Millis,
    pub policy: ClinicalPolicy,
    pub signature: [u8; SIGNATURE_LEN],
}

impl SignedPolicy {
    pub fn sign(
        authority: &AuthorityKey,
        policy: ClinicalPolicy,
        issued: Millis,
    ) -> Result<SignedPolicy, DecodeError> {
        policy.check()?;
        let mut p = SignedPolicy {
            team: authority.team_id(),
            issued,
            policy,
            signature: [0; SIGNATURE_LEN],
        };
        p.signature = authority.sign(domain::POLICY, &p.signed_bytes());
        Ok(p)
    }

    fn signed_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(160);
        let a = self.policy.attachments;
        let version = if a == AttachmentRule::default() {
            POLICY_VERSION
        } else {
            POLICY_VERSION_ATTACHMENTS
        };
        w.u8(version).raw(&self.team.0).u64_be(self.issued);
        self.policy.urgent.write(&mut w);
        self.policy.stat.write(&mut w);
        if version == POLICY_VERSION_ATTACHMENTS {
            w.u64_be(a.limit).u64_be(a.auto_fetch);
        }
        w.finish()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = self.signed_bytes();
        b.extend_from_slice(&self.signature);
        b
    }

    pub fn decode(bytes: &[u8]) -> Result<SignedPolicy, DecodeError> {
        let mut r = Reader::new(bytes);
        let version = r.u8("policy version")?;
        if version != POLICY_VERSION && version != POLICY_VERSION_ATTACHMENTS {
            return Err(DecodeError::Unknown("policy version", version.into()));
        }
        let team = TeamId(r.array("team id")?);
        let issued = r.u64_be("policy issued")?;
        let urgent = Rule::read(&mut r)?;
        let stat = Rule::read(&mut r)?;
        let attachments = if version == POLICY_VERSION_ATTACHMENTS {
            let a = AttachmentRule {
                limit: r.u64_be("attachment limit")?,
                auto_fetch: r.u64_be("automatic fetch limit")?,
            };
            a.check()?;
            if a == AttachmentRule::default() {
                return Err(DecodeError::Invalid(
                    "a version-2 policy with the default attachment limits (it is written as version 1)",
                ));
            }
            a
        } else {
            AttachmentRule::default()
        };
        let signature = r.array("policy signature")?;
        r.finish()?;
        Ok(SignedPolicy {
            team,
            issued,
            policy: ClinicalPolicy {
                urgent,
                stat,
                attachments,
            },
            signature,
        })
    }

    /// Signed by the authority of `team`?
    pub fn verify(&self, team: &TeamId) -> bool {
        self.team == *team
            && crypto::verify(
                &team.0,
                domain::POLICY,
                &self.signed_bytes(),
                &self.signature,
            )
    }

    /// The order in which policies supersede each other.
    pub fn rank(&self) -> (Millis, [u8; SIGNATURE_LEN]) {
        (self.issued, self.signature)
    }
}
