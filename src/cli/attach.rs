//! Attachments on the command line: `send --attach FILE…` and `fetch
//! MESSAGE --out DIR` (protocol/blobs.md §6).

use std::path::{Path, PathBuf};

use super::backend::Backend;
use super::{resolve, CliError, Ctx, Result};
use crate::api::guess_media_type;
use crate::api::types::AttachmentRequest;
use crate::blobs::meta::clean_name;
use crate::blobs::{MAX_ATTACHMENTS, MAX_BLOB_LEN};

/// Stores each file as this device's own blob (photo metadata stripped),
/// ready to attach.
pub fn prepare(b: &mut Backend, paths: &[PathBuf]) -> Result<Vec<AttachmentRequest>> {
    if paths.len() > MAX_ATTACHMENTS {
        return Err(CliError::usage(format!(
            "a message carries at most {MAX_ATTACHMENTS} attachments"
        )));
    }
    let mut out = Vec::with_capacity(paths.len());
    for p in paths {
        let cannot = |e: std::io::Error| CliError::new(format!("cannot read {}: {e}", p.display()));
        let len = std::fs::metadata(p).map_err(cannot)?.len();
        if len > MAX_BLOB_LEN {
            return Err(CliError::usage(format!(
                "{} is {len} bytes; an attachment is at most {MAX_BLOB_LEN}",
                p.display()
            )));
        }
        let bytes = std::fs::read(p).map_err(cannot)?;
        let name = clean_name(&p.file_name().unwrap_or_default().to_string_lossy());
        let media_type = guess_media_type(&name);
        let up = b.upload(&bytes, &name, media_type)?;
        out.push(AttachmentRequest {
            hash: up.hash,
            name: up.name,
            media_type: up.media_type,
            thumbnail: None,
        });
    }
    Ok(out)
}

/// A path in `dir` for `name` that does not exist yet.
fn free_path(dir: &Path, name: &str) -> PathBuf {
    let first = dir.join(name);
    if !first.exists() {
        return first;
    }
    let (stem, ext) = match name.rsplit_once('.') {
        Some((s, e)) if !s.is_empty() => (s, format!(".{e}")),
        _ => (name, String::new()),
    };
    (1..)
        .map(|k| dir.join(format!("{stem} ({k}){ext}")))
        .find(|p| !p.exists())
        .expect("some name is free")
}

pub fn fetch(ctx: &Ctx, message: &str, out: &Path) -> Result<()> {
    let b = Backend::open(ctx)?;
    let prefix = resolve::message_prefix(message)?;
    let found = b.find_messages(&prefix)?;
    let r = resolve::message(&found, message)?.clone();
    let all = b.attachments(&r)?;
    if all.is_empty() {
        return Err(CliError::usage(format!(
            "message {}… has no attachments",
            &r.message.to_hex()[..8]
        )));
    }
    // Everything is fetched before anything is written: a failed fetch
    // leaves no half-saved set behind.
    for a in &all {
        if !a.held {
            match &b {
                Backend::Api(c) => {
                    ctx.out.note(format!(
                        "Fetching {} ({} bytes) from the team's devices…",
                        a.name, a.size
                    ));
                    c.fetch_attachment(&r.conversation, &r.message, a.index)?;
                }
                Backend::Offline(_) => {
                    return Err(CliError::new(format!(
                        "{} is not on this device yet; start `huddle run` so that it can be fetched from the team's devices",
                        a.name
                    )))
                }
            }
        }
    }
    std::fs::create_dir_all(out)
        .map_err(|e| CliError::new(format!("cannot create {}: {e}", out.display())))?;
    let mut written = Vec::new();
    for a in &all {
        let bytes = b.download(&r, a.index)?;
        let path = free_path(out, &clean_name(&a.name));
        std::fs::write(&path, &bytes)
            .map_err(|e| CliError::new(format!("cannot write {}: {e}", path.display())))?;
        written.push((a, path));
    }
    if ctx.out.json {
        ctx.out.print_json(
            &written
                .iter()
                .map(|(a, p)| {
                    serde_json::json!({
                        "name": a.name,
                        "hash": a.hash,
                        "size": a.size,
                        "media_type": a.media_type,
                        "path": p,
                    })
                })
                .collect::<Vec<_>>(),
        );
    } else {
        for (_, p) in &written {
            outln!("{}", p.display());
        }
    }
    Ok(())
}
