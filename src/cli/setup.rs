//! Identity and team commands: `init`, `whoami`, `team create | admit |
//! join | revoke | show`.
//!
//! Invariants: secrets are created here and nowhere else, from the OS
//! generator; a token is installed only if it decodes, is for this device,
//! verifies and is in date.

use rand_core::OsRng;
use serde_json::json;

use super::args::{AdmitArgs, InitArgs, TeamCmd};
use super::backend::{Backend, STORED_LOCALLY};
use super::{check_name, now_ms, render, resolve, CliError, Ctx, Result};
use crate::crypto::{AuthorityKey, DeviceKey};
use crate::datadir::{Identity, Profile};
use crate::ids::{DeviceId, MemberId, Millis};
use crate::membership::{Certificate, CertificateRequest, RevocationTarget, ISSUE_SKEW_MS};

pub(super) fn date(ms: Millis) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .to_offset(super::local_offset());
    t.format(time::macros::format_description!("[year]-[month]-[day]"))
        .unwrap_or_default()
}

/// The command an administrator runs to admit this device.
fn admit_hint(id: &Identity) -> String {
    let mut s = format!(
        "huddle team admit {} --name \"{}\"",
        id.device_id(),
        id.profile.name
    );
    for r in &id.profile.roles {
        s.push_str(&format!(" --role {r}"));
    }
    s.push_str(&format!(" --member {}", id.profile.member));
    s
}

fn restart_note(ctx: &Ctx) {
    if super::lock::running_node(ctx).is_some() {
        ctx.out
            .note("A node is running on this data directory: restart `huddle run` so that it uses the new membership.");
    }
}

pub fn init(ctx: &Ctx, a: InitArgs) -> Result<()> {
    let name = check_name(&a.name)?;
    let roles = super::admin::roles(&a.roles)?;
    let key = DeviceKey::generate(&mut OsRng);
    let profile = Profile {
        member: MemberId::random(&mut OsRng),
        name,
        roles,
    };
    if ctx.dir.has_identity() {
        // The sentence that names the identity already there.
        ctx.dir.create_identity(&key, &profile)?;
    }
    // A directory encrypted by an `init` cut short is unlocked instead.
    if !a.unencrypted && !ctx.dir.is_encrypted() {
        ctx.dir.encrypt()?;
    }
    ctx.dir.create_identity(&key, &profile)?;
    let id = Identity { key, profile };
    if ctx.out.json {
        ctx.out.print_json(&json!({
            "device": id.device_id(),
            "member": id.profile.member,
            "name": id.profile.name,
            "roles": id.profile.roles,
            "data_dir": ctx.dir.path(),
        }));
    } else {
        outln!(
            "Created the identity of {} in {}",
            id.profile.name,
            ctx.dir.path().display()
        );
        outln!("device id: {}", id.device_id());
        outln!("member id: {}", id.profile.member);
    }
    ctx.out.note(format!(
        "Next: start a team with `huddle team create \"Ward name\"`, or ask your team's administrator to run:\n  {}",
        admit_hint(&id)
    ));
    Ok(())
}

pub fn whoami(ctx: &Ctx) -> Result<()> {
    ctx.dir.identity_exists()?;
    let admin = ctx.dir.has_authority();
    let node = super::lock::running_node(ctx);
    // A running node says who it is: the encrypted files need not be
    // opened (nor a passphrase asked for) to show it.
    let status = node.as_ref().and_then(|c| c.status().ok());
    let (who, id) = match status.as_ref().and_then(Who::of_status) {
        Some(who) => (who, None),
        None => {
            let id = ctx.dir.identity()?;
            (Who::of_files(&id, ctx.dir.certificate()?), Some(id))
        }
    };
    if ctx.out.json {
        ctx.out.print_json(&json!({
            "device": who.device,
            "member": who.member,
            "name": who.name,
            "roles": who.roles,
            "team": who.team.as_ref().map(|t| t.0),
            "team_name": who.team.as_ref().map(|t| t.1.clone()),
            "fingerprint": who.team.as_ref().map(|t| t.0.fingerprint()),
            "expires": who.team.as_ref().map(|t| t.2),
            "administrator": admin,
            "node_running": node.is_some(),
            "api_url": node.as_ref().map(|c| c.url().to_owned()),
            "data_dir": ctx.dir.path(),
            "carrying": status.as_ref().map(|s| json!({
                "envelopes": s.resources.mailbox_envelopes,
                "bytes": s.resources.mailbox_bytes,
            })),
        }));
        return Ok(());
    }
    let roles = if who.roles.is_empty() {
        "no roles".into()
    } else {
        who.roles.join(", ")
    };
    outln!("{} ({roles})", who.name);
    outln!("device id: {}", who.device);
    outln!("member id: {}", who.member);
    outln!("data dir:  {}", ctx.dir.path().display());
    if let Some(r) = status.as_ref().map(|s| &s.resources) {
        if r.mailbox_envelopes > 0 {
            // Sealed for other devices (protocol/sealed.md): this device
            // cannot read them; it hands them on when it meets them.
            outln!(
                "carrying:  {} sealed message batch(es) for other devices ({} kB)",
                r.mailbox_envelopes,
                r.mailbox_bytes.div_ceil(1024)
            );
        }
    }
    match (&who.team, &id) {
        (Some((team, team_name, expires)), _) => outln!(
            "team:      {} (fingerprint {}), member until {}{}",
            team_name,
            team.fingerprint(),
            date(*expires),
            if admin {
                "; this device holds the team key"
            } else {
                ""
            }
        ),
        (None, id) => {
            outln!("team:      none yet");
            if let Some(id) = id {
                ctx.out.note(format!(
                    "To join a team, ask its administrator to run:\n  {}\nthen run `huddle team join <token>` here.",
                    admit_hint(id)
                ));
            }
        }
    }
    match node {
        Some(c) => outln!("node:      running (API {})", c.url()),
        None => outln!("node:      not running (start it with `huddle run`)"),
    }
    Ok(())
}

/// What `whoami` shows: from the running node's status, or from the files.
struct Who {
    device: DeviceId,
    member: MemberId,
    name: String,
    roles: Vec<String>,
    /// Team, its name, and when this membership ends.
    team: Option<(crate::ids::TeamId, String, u64)>,
}

impl Who {
    fn of_status(s: &crate::api::types::Status) -> Option<Who> {
        Some(Who {
            device: s.device,
            member: s.member?,
            name: s.name.clone()?,
            roles: s.roles.clone(),
            team: Some((s.team?, s.team_name.clone()?, s.expires?)),
        })
    }

    fn of_files(id: &Identity, cert: Option<Certificate>) -> Who {
        Who {
            device: id.device_id(),
            member: id.profile.member,
            name: id.profile.name.clone(),
            roles: id.profile.roles.clone(),
            team: cert.map(|c| (c.team, c.team_name, c.expires)),
        }
    }
}

pub fn team(ctx: &Ctx, cmd: TeamCmd) -> Result<()> {
    match cmd {
        TeamCmd::Create { name, expires } => create(ctx, &name, &expires),
        TeamCmd::Admit(a) => admit(ctx, a),
        TeamCmd::Join { token } => join(ctx, &token),
        TeamCmd::Revoke { target } => revoke(ctx, &target),
        TeamCmd::Show => show(ctx),
        TeamCmd::Policy { set } => super::clinical::policy(ctx, set),
    }
}

fn create(ctx: &Ctx, name: &str, expires: &str) -> Result<()> {
    let id = ctx.dir.identity()?;
    let name = check_name(name)?;
    let valid_for = super::membership_length(expires)?;
    if let Some(c) = ctx.dir.certificate()? {
        return Err(CliError::new(format!(
            "this device already belongs to the team \"{}\": use another --data-dir to create a second team",
            c.team_name
        )));
    }
    let authority = AuthorityKey::generate(&mut OsRng);
    let now = now_ms();
    let cert = CertificateRequest {
        team_name: name,
        member: id.profile.member,
        display_name: id.profile.name.clone(),
        roles: id.profile.roles.clone(),
        device: id.device_id(),
        issued: now,
        expires: now.saturating_add(valid_for),
    }
    .sign(&authority)?;
    ctx.dir.save_authority(&authority)?;
    ctx.dir.save_certificate(&cert)?;
    if ctx.out.json {
        ctx.out.print_json(&json!({
            "team": cert.team,
            "team_name": cert.team_name,
            "fingerprint": cert.team.fingerprint(),
            "expires": cert.expires,
        }));
    } else {
        outln!(
            "Created the team \"{}\" (id {}); this device holds its key and is a member until {}.",
            cert.team_name,
            cert.team.fingerprint(),
            date(cert.expires)
        );
    }
    ctx.out.note(
        "Keep this data directory safe: its team.key admits and revokes members.\nAdmit a colleague's device with:\n  huddle team admit <their device id> --name \"Their Name\" --role their-role",
    );
    restart_note(ctx);
    Ok(())
}

/// The authority key, with the team's own certificate (for its name).
fn authority(ctx: &Ctx) -> Result<(AuthorityKey, Certificate)> {
    super::admin::authority(&ctx.dir, installed_certificate(ctx)?)
}

/// The installed certificate; on the administrator's own device, one from
/// an older huddle is renewed first.
fn installed_certificate(ctx: &Ctx) -> Result<Option<Certificate>> {
    use crate::datadir::DataDirError::OutdatedCertificate;
    match ctx.dir.certificate() {
        Err(OutdatedCertificate(path)) => {
            let renewed = match ctx.dir.authority()? {
                Some(key) => renew_outdated(ctx, &key, &path)?,
                None => None,
            };
            renewed
                .map(Some)
                .ok_or_else(|| OutdatedCertificate(path).into())
        }
        r => Ok(r?),
    }
}

/// The administrator's own certificate from an older huddle, signed again
/// as the current version with the same fields (no one else can give the
/// holder of the team key a new token).
fn renew_outdated(
    ctx: &Ctx,
    key: &AuthorityKey,
    path: &std::path::Path,
) -> Result<Option<Certificate>> {
    let text = ctx
        .dir
        .certificate_token()?
        .ok_or_else(|| CliError::new(format!("{} is missing", path.display())))?;
    let Some((team, request)) = crate::membership::outdated_request(&text) else {
        return Ok(None);
    };
    if team != key.team_id() {
        return Ok(None);
    }
    let cert = request.sign(key)?;
    ctx.dir.save_certificate(&cert)?;
    ctx.out.note(format!(
        "Renewed this device's certificate from an older huddle (\"{}\", until {}).",
        cert.team_name,
        date(cert.expires)
    ));
    Ok(Some(cert))
}

fn admit(ctx: &Ctx, a: AdmitArgs) -> Result<()> {
    ctx.dir.identity()?;
    let (key, own) = authority(ctx)?;
    let cert = super::admin::admit(
        &key,
        &own,
        &super::admin::Admission {
            device: &a.device,
            member: a.member.as_deref(),
            name: &a.name,
            roles: &a.roles,
            expires: &a.expires,
        },
    )?;
    super::backend::Backend::open(ctx)?.record(crate::api::audit::AuditRecord::Admitted {
        member: cert.member,
        device: cert.device,
    })?;
    let token = cert.to_token();
    if ctx.out.json {
        ctx.out.print_json(&json!({
            "token": token,
            "device": cert.device,
            "member": cert.member,
            "name": cert.display_name,
            "roles": cert.roles,
            "expires": cert.expires,
        }));
    } else {
        outln!("{token}");
    }
    ctx.out.note(format!(
        "This admits {} (device …{}) to \"{}\" until {}. On that device run:\n  huddle team join <the token above>",
        cert.display_name,
        cert.device.short(),
        cert.team_name,
        date(cert.expires)
    ));
    Ok(())
}

fn join(ctx: &Ctx, token: &str) -> Result<()> {
    let id = ctx.dir.identity()?;
    let cert = Certificate::from_token(token)?;
    if cert.device != id.device_id() {
        return Err(CliError::new(format!(
            "this token is for device {}, not this device ({}): ask your administrator for a token for this device",
            cert.device,
            id.device_id()
        )));
    }
    if !cert.is_signed_by(&cert.team) {
        return Err(CliError::new(
            "the token's signature does not verify (it was altered or damaged): ask your administrator for a new one",
        ));
    }
    let now = now_ms();
    if now >= cert.expires {
        return Err(CliError::new(format!(
            "this token expired on {}: ask your administrator for a new one",
            date(cert.expires)
        )));
    }
    if cert.issued > now.saturating_add(ISSUE_SKEW_MS) {
        return Err(CliError::new(
            "this token is not valid yet: check this device's clock and time zone",
        ));
    }
    // A certificate from an older huddle is what this new token replaces.
    let old = match ctx.dir.certificate() {
        Err(crate::datadir::DataDirError::OutdatedCertificate(_)) => None,
        r => r?,
    };
    if let Some(old) = old {
        if old.team != cert.team {
            return Err(CliError::new(format!(
                "this device already belongs to the team \"{}\": use another --data-dir to join a second team",
                old.team_name
            )));
        }
    }
    ctx.dir.save_certificate(&cert)?;
    ctx.dir.save_profile(&Profile {
        member: cert.member,
        name: cert.display_name.clone(),
        roles: cert.roles.clone(),
    })?;
    if ctx.out.json {
        ctx.out.print_json(&json!({
            "team": cert.team,
            "team_name": cert.team_name,
            "member": cert.member,
            "name": cert.display_name,
            "roles": cert.roles,
            "expires": cert.expires,
        }));
    } else {
        outln!(
            "Joined \"{}\" as {} ({}) until {}.",
            cert.team_name,
            cert.display_name,
            if cert.roles.is_empty() {
                "no roles".into()
            } else {
                cert.roles.join(", ")
            },
            date(cert.expires)
        );
    }
    ctx.out.note(
        "Start talking: `huddle run` (leave it running), then `huddle chats` in another terminal.",
    );
    restart_note(ctx);
    Ok(())
}

fn revoke(ctx: &Ctx, target: &str) -> Result<()> {
    ctx.dir.identity()?;
    let (key, own) = authority(ctx)?;
    let mut backend = Backend::open(ctx)?;
    let (target, who) = if let Ok(d) = target.trim().parse::<DeviceId>() {
        (
            RevocationTarget::Device(d),
            format!("device …{}", d.short()),
        )
    } else if let Ok(m) = target.trim().parse::<MemberId>() {
        (
            RevocationTarget::Member(m),
            format!("member {}", render::short(&m.to_hex())),
        )
    } else {
        let dir = backend.directory()?;
        let m = resolve::member(&dir, target)?;
        (
            RevocationTarget::Member(m.member),
            format!("{} (every device)", m.name),
        )
    };
    let rev = super::admin::revoke(&key, &own, target)?;
    backend.revoke(rev)?;
    if ctx.out.json {
        ctx.out
            .print_json(&json!({ "revoked": who, "offline": backend.is_offline() }));
    } else {
        outln!("Revoked {who}.");
    }
    if backend.is_offline() {
        ctx.out.note(format!("The revocation is {STORED_LOCALLY}."));
    } else {
        ctx.out.note("The revocation spreads to every device as they sync; revoked devices are disconnected.");
    }
    Ok(())
}

/// What `team show` says of this device's own membership.
struct Own {
    team: crate::ids::TeamId,
    team_name: String,
    member: MemberId,
    display_name: String,
    expires: u64,
}

fn show(ctx: &Ctx) -> Result<()> {
    ctx.dir.identity_exists()?;
    let admin = ctx.dir.has_authority();
    // Without a node, the certificate is read (and an administrator's from
    // an older huddle renewed) before the store is opened.
    let installed = match super::lock::running_node(ctx) {
        Some(_) => None,
        None => Some(installed_certificate(ctx)?),
    };
    let backend = Backend::open(ctx)?;
    let status = backend.status()?;
    // A running node knows its certificate: the encrypted files need not
    // be opened (nor a passphrase asked for) to show it.
    let running = match (
        &status.team,
        &status.team_name,
        status.member,
        &status.name,
        status.expires,
    ) {
        (Some(team), Some(team_name), Some(member), Some(name), Some(expires))
            if !backend.is_offline() =>
        {
            Some(Own {
                team: *team,
                team_name: team_name.clone(),
                member,
                display_name: name.clone(),
                expires,
            })
        }
        _ => None,
    };
    let cert = match running {
        Some(own) => own,
        None => {
            let c = match installed {
                Some(c) => c,
                None => installed_certificate(ctx)?,
            }
            .ok_or(crate::node::CommandError::NoMembership)?;
            Own {
                team: c.team,
                team_name: c.team_name,
                member: c.member,
                display_name: c.display_name,
                expires: c.expires,
            }
        }
    };
    let members = backend.directory()?;
    let revoked = status.revoked;
    if ctx.out.json {
        ctx.out.print_json(&json!({
            "revoked": revoked,
            "team": cert.team,
            "team_name": cert.team_name,
            "fingerprint": cert.team.fingerprint(),
            "administrator": admin,
            "member": cert.member,
            "expires": cert.expires,
            "members": members,
        }));
        return Ok(());
    }
    outln!(
        "{} (team fingerprint {})",
        cert.team_name,
        cert.team.fingerprint()
    );
    outln!(
        "You are {}, member until {}{}.",
        cert.display_name,
        date(cert.expires),
        if admin {
            "; this device holds the team key"
        } else {
            ""
        }
    );
    if revoked {
        outln!("This device's membership was REVOKED: the team accepts nothing more from it (an administrator can admit it again).");
    }
    outln!("Members this device knows ({}):", members.len());
    out!("{}", render::directory(&members));
    Ok(())
}
