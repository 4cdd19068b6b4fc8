//! `huddle audit show | verify | export`: the audit trails this device
//! holds (its own; on the device with the team key, every member's too),
//! through the running node or, when none runs, from the store.
//!
//! Invariant: `verify` checks the bytes as stored, entry by entry
//! (`trail::verify_chain`), so a trail altered, cut in the middle or
//! reordered is named at its first bad entry; what administrators' copies
//! hold beyond a device's own trail comes from the findings its node
//! recorded while syncing. It exits 1 when anything does not verify.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::args::AuditCmd;
use super::backend::Backend;
use super::{render, CliError, Ctx, Result};
use crate::api::audit::AuditDump;
use crate::ids::{ConversationId, DeviceId};
use crate::trail::{verify_chain, Entry, Finding};

pub fn run(ctx: &Ctx, cmd: AuditCmd) -> Result<()> {
    let b = Backend::open(ctx)?;
    let dump = b.audit()?;
    let names = Names::new(&b)?;
    match cmd {
        AuditCmd::Show { device, last } => show(ctx, &dump, &names, device.as_deref(), last),
        AuditCmd::Verify => verify(ctx, &dump, &names),
        AuditCmd::Export { out } => {
            let text = serde_json::to_string_pretty(&export(&dump, &names)?)
                .expect("JSON serializes")
                + "\n";
            match out {
                None => super::output::bytes(text.as_bytes()),
                Some(path) => {
                    super::export::write_new(&path, text.as_bytes())?;
                    ctx.out
                        .note(format!("Wrote the audit trails to {}.", path.display()));
                }
            }
            Ok(())
        }
    }
}

/// Devices' and conversations' names, as this device knows them.
struct Names {
    devices: BTreeMap<DeviceId, String>,
    chats: BTreeMap<ConversationId, String>,
}

impl Names {
    fn new(b: &Backend) -> Result<Names> {
        let mut devices = BTreeMap::new();
        for m in b.directory()? {
            for d in &m.devices {
                devices.insert(*d, m.name.clone());
            }
        }
        let chats = b.chats()?.into_iter().map(|c| (c.id, c.title)).collect();
        Ok(Names { devices, chats })
    }

    fn device(&self, d: &DeviceId) -> String {
        match self.devices.get(d) {
            Some(n) => format!("{n} (device …{})", d.short()),
            None => format!("device …{}", d.short()),
        }
    }

    fn chat(&self, c: &ConversationId) -> String {
        match self.chats.get(c) {
            Some(t) => format!("\"{t}\""),
            None => format!("conversation {}", &c.to_hex()[..8]),
        }
    }
}

/// Each trail's stored entries: (place, bytes).
type Trails = Vec<(DeviceId, Vec<(u64, Vec<u8>)>)>;

fn decoded(dump: &AuditDump) -> Result<Trails> {
    let unhex = |h: &str| {
        data_encoding::HEXLOWER
            .decode(h.as_bytes())
            .map_err(|_| CliError::new("the node answered an audit entry that is not hex"))
    };
    dump.trails
        .iter()
        .map(|t| {
            let entries = t
                .entries
                .iter()
                .map(|(p, h)| Ok((*p, unhex(h)?)))
                .collect::<Result<Vec<_>>>()?;
            Ok((t.device, entries))
        })
        .collect()
}

fn findings(dump: &AuditDump) -> Vec<Finding> {
    dump.findings
        .iter()
        .filter_map(|h| data_encoding::HEXLOWER.decode(h.as_bytes()).ok())
        .filter_map(|b| Finding::decode(&b).ok())
        .collect()
}

fn show(
    ctx: &Ctx,
    dump: &AuditDump,
    names: &Names,
    device: Option<&str>,
    last: Option<usize>,
) -> Result<()> {
    let device = device.map(str::trim);
    let mut trails = decoded(dump)?;
    if let Some(d) = device {
        trails.retain(|(id, _)| id.to_string().starts_with(d));
        if trails.is_empty() {
            return Err(CliError::usage(format!(
                "no audit trail of a device whose id starts with \"{d}\" is held here"
            )));
        }
    }
    if ctx.out.json {
        let v = export(dump, names)?;
        ctx.out.print_json(&v["trails"]);
        return Ok(());
    }
    if trails.is_empty() {
        outln!("No audit entries yet.");
    }
    for (id, entries) in &trails {
        outln!("{}: {} entries", names.device(id), entries.len());
        let skip = last.map_or(0, |n| entries.len().saturating_sub(n));
        for (place, bytes) in entries.iter().skip(skip) {
            match Entry::decode(bytes) {
                Ok(e) => outln!(
                    "  {:>5}  {:<16}  {}",
                    place,
                    render::time(e.at),
                    e.action.describe(&|c| names.chat(c))
                ),
                Err(_) => outln!("  {:>5}  (does not decode: `huddle audit verify`)", place),
            }
        }
    }
    Ok(())
}

fn verify(ctx: &Ctx, dump: &AuditDump, names: &Names) -> Result<()> {
    let mut problems = Vec::new();
    let mut lines = Vec::new();
    for (id, entries) in decoded(dump)? {
        let r = verify_chain(id, &entries);
        match &r.problem {
            None => lines.push(format!(
                "ok    {}: {} entries, each signed by its device and chained to the one before",
                names.device(&id),
                r.good
            )),
            Some(p) => {
                let said = format!("{}: {p}", names.device(&id));
                lines.push(format!("FAIL  {said}"));
                problems.push(said);
            }
        }
    }
    for f in findings(dump) {
        let said = f.describe(&|d| names.device(d));
        lines.push(format!("FAIL  {said}"));
        problems.push(said);
    }
    if ctx.out.json {
        ctx.out.print_json(&json!({
            "verified": problems.is_empty(),
            "problems": problems,
        }));
    } else {
        if lines.is_empty() {
            lines.push("No audit entries yet.".into());
        }
        for l in &lines {
            outln!("{l}");
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(CliError::new(format!(
            "the audit trail does not verify: {}",
            problems.join("; ")
        )))
    }
}

fn export(dump: &AuditDump, names: &Names) -> Result<Value> {
    let hex = |b: &[u8]| data_encoding::HEXLOWER.encode(b);
    let mut trails = Vec::new();
    for (id, entries) in decoded(dump)? {
        let list: Vec<Value> = entries
            .iter()
            .map(|(place, bytes)| match Entry::decode(bytes) {
                Ok(e) => json!({
                    "place": place,
                    "seq": e.seq,
                    "at": e.at,
                    "action": e.action.kind(),
                    "conversation": e.action.conversation(),
                    "description": e.action.describe(&|c| names.chat(c)),
                    "prev": hex(&e.prev),
                    "hash": hex(&e.hash()),
                    "signature_verifies": e.verify(),
                    "bytes": hex(bytes),
                }),
                Err(_) => json!({ "place": place, "bytes": hex(bytes), "decodes": false }),
            })
            .collect();
        trails.push(json!({
            "device": id,
            "name": names.devices.get(&id),
            "entries": list,
        }));
    }
    Ok(json!({
        "format": "huddle-audit/1",
        "device": dump.device,
        "administrator": dump.admin,
        "exported_at": super::now_ms(),
        "trails": trails,
        "findings": findings(dump).iter().map(|f| json!({
            "device": f.device,
            "holder": f.holder,
            "shown": f.shown,
            "held": f.held,
            "diverged": f.diverged,
            "at": f.at,
            "description": f.describe(&|d| names.device(d)),
        })).collect::<Vec<_>>(),
    }))
}
