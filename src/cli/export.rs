//! `huddle export CONVERSATION [--fhir] [--since WHEN] [--out FILE]`: a
//! conversation for the patient record, as an HL7 FHIR R4 Bundle or as
//! huddle's own JSON (`crate::export`), through the running node or, when
//! none runs, from the store.
//!
//! Invariant: `--out` never writes over a file (it is created new,
//! owner-only, and written whole or removed).

use std::io::Write;

use super::args::ExportArgs;
use super::backend::Backend;
use super::{local_offset, now_ms, parse_duration, CliError, Ctx, Result};

pub fn run(ctx: &Ctx, a: ExportArgs) -> Result<()> {
    let since = a.since.as_deref().map(parse_since).transpose()?;
    let mut b = Backend::open(ctx)?;
    let chat = super::talk::find_chat(&b, &a.conversation)?;
    let input = b.export_input(&chat.id, since, a.fhir)?;
    let value = if a.fhir {
        crate::export::fhir_bundle(&input)
    } else {
        serde_json::to_value(crate::export::plain(&input)).expect("an export serializes")
    };
    let text = serde_json::to_string_pretty(&value).expect("JSON serializes") + "\n";
    let form = if a.fhir {
        "an HL7 FHIR R4 Bundle"
    } else {
        "huddle's JSON"
    };
    match a.out {
        None => super::output::bytes(text.as_bytes()),
        Some(path) => {
            write_new(&path, text.as_bytes())?;
            ctx.out.note(format!(
                "Wrote {} messages of \"{}\" as {form} to {}.",
                input.messages.len(),
                chat.title,
                path.display()
            ));
        }
    }
    Ok(())
}

/// `WHEN` as ms since the epoch: how long ago (`12h`), a date (local
/// midnight), or an RFC 3339 date and time.
fn parse_since(s: &str) -> Result<u64> {
    let s = s.trim();
    if s.ends_with(|c: char| c.is_ascii_alphabetic()) && !s.contains('-') {
        return Ok(now_ms().saturating_sub(parse_duration(s)?));
    }
    let at = if let Ok(t) =
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
    {
        t
    } else {
        let format = time::macros::format_description!("[year]-[month]-[day]");
        let day = time::Date::parse(s, format).map_err(|_| {
            CliError::usage(format!(
                "\"{s}\" is not a time: write a date (2026-12-01), a date and time (2026-12-01T08:00:00Z), or how long ago (12h, 7d)"
            ))
        })?;
        day.midnight().assume_offset(local_offset())
    };
    u64::try_from(at.unix_timestamp_nanos() / 1_000_000)
        .map_err(|_| CliError::usage(format!("\"{s}\" is before 1970")))
}

/// Writes `bytes` to a new owner-only file, whole or not at all.
pub(super) fn write_new(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    let fail = |e: std::io::Error| CliError::new(format!("cannot write {}: {e}", path.display()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            CliError::new(format!(
                "{} exists already: give --out a new file name (nothing was written)",
                path.display()
            ))
        } else {
            fail(e)
        }
    })?;
    if let Err(e) = f.write_all(bytes).and_then(|()| f.sync_all()) {
        let _ = std::fs::remove_file(path);
        return Err(fail(e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_a_duration_a_date_or_a_time() {
        let now = now_ms();
        let ago = parse_since("12h").unwrap();
        assert!(now - ago >= 12 * 3_600_000 && now - ago < 12 * 3_600_000 + 60_000);
        assert_eq!(
            parse_since("2026-12-01T08:00:00Z").unwrap(),
            1_796_112_000_000
        );
        assert!(parse_since("2026-12-01").is_ok());
        assert!(parse_since("yesterday").is_err());
        assert!(parse_since("2026-13-01").is_err());
    }
}
