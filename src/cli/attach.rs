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

/// A file name another member chose, made safe to write here: no leading
/// dot (no `.bashrc` or `.envrc` appears in the directory), no invisible
/// or direction-changing characters, short enough for a " (9)" suffix.
pub fn local_name(name: &str) -> String {
    let invisible = |c: char| matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{061C}' | '\u{FEFF}');
    let mut s: String = clean_name(name)
        .chars()
        .filter(|c| !invisible(*c))
        .collect();
    if s.starts_with('.') {
        s.replace_range(..1, "_");
    }
    while s.len() > 200 {
        s.pop();
    }
    if s.is_empty() {
        "attachment".into()
    } else {
        s
    }
}

/// Writes `bytes` to a new file in `dir` named `name`, or `name (k)`; never
/// over an existing file or through a link.
fn write_new(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<PathBuf> {
    use std::io::Write;
    let (stem, ext) = match name.rsplit_once('.') {
        Some((s, e)) if !s.is_empty() => (s, format!(".{e}")),
        _ => (name, String::new()),
    };
    for k in 0..1000 {
        let path = if k == 0 {
            dir.join(name)
        } else {
            dir.join(format!("{stem} ({k}){ext}"))
        };
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(mut f) => {
                f.write_all(bytes)?;
                return Ok(path);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other(
        "a thousand files of that name are there already",
    ))
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
        let name = local_name(&a.name);
        let path = write_new(out, &name, &bytes)
            .map_err(|e| CliError::new(format!("cannot write {name} in {}: {e}", out.display())))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_others_cannot_plant_dotfiles_or_hide_their_extension() {
        assert_eq!(local_name(".bash_aliases"), "_bash_aliases");
        assert_eq!(local_name("scan\u{202E}gpj.exe"), "scangpj.exe");
        assert_eq!(local_name("../../x"), "x");
        assert!(local_name(&"a".repeat(255)).len() <= 200);
        let dir = std::env::temp_dir().join(format!("huddle-attach-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = write_new(&dir, "x.pdf", b"1").unwrap();
        let b = write_new(&dir, "x.pdf", b"2").unwrap();
        assert_eq!(b.file_name().unwrap(), "x (1).pdf");
        assert_eq!(std::fs::read(&a).unwrap(), b"1");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
