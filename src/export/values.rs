//! FHIR R4 primitive values made from huddle's: instants, `urn:uuid:`
//! identifiers, strings and codes.
//!
//! Invariant: every function here returns a value that matches its FHIR
//! type's regular expression (as the R4 JSON schema states it), or `None`
//! when there is none to give; none panics.

use crate::crypto;

/// The last millisecond FHIR's four-digit years can state:
/// 9999-12-31T23:59:59.999Z.
const MAX_INSTANT_MS: u64 = 253_402_300_799_999;

/// `ms` since the epoch as a FHIR `instant` (and `dateTime`), in UTC with
/// milliseconds; `None` past the year 9999.
pub fn instant(ms: u64) -> Option<String> {
    if ms > MAX_INSTANT_MS {
        return None;
    }
    let (days, in_day) = (ms / 86_400_000, ms % 86_400_000);
    let (y, m, d) = civil(days);
    let (h, min, s, milli) = (
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000,
    );
    Some(format!(
        "{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}.{milli:03}Z"
    ))
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, for non-negative days).
fn civil(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// A stable UUID for `what` (a resource type, say) of `id`: the first 16
/// bytes of SHA-256 over a domain tag, `what` and `id`, marked as a
/// version-8 (custom) UUID of RFC 9562, in FHIR's `uuid` form
/// (`urn:uuid:` and lowercase hex).
pub fn uuid(what: &str, id: &[u8]) -> String {
    let h = crypto::sha256(&[b"huddle/fhir-export/v1\0", what.as_bytes(), b"\0", id]);
    let mut b = [0u8; 16];
    b.copy_from_slice(&h[..16]);
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    let x = data_encoding::HEXLOWER.encode(&b);
    format!(
        "urn:uuid:{}-{}-{}-{}-{}",
        &x[..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..]
    )
}

/// `s` as a FHIR `string`; `None` when empty. FHIR strings hold no control
/// characters but tab, carriage return and line feed: any other becomes
/// U+FFFD. The R4 schema's pattern (`[ \r\n\t\S]+`) also refuses other
/// white space (no-break and typographic spaces, U+FEFF): each becomes a
/// plain space. Nothing else changes; the plain export keeps the text as
/// it was signed.
pub fn fhir_string(s: &str) -> Option<String> {
    if s.is_empty() {
        return None;
    }
    Some(
        s.chars()
            .map(|c| match c {
                ' ' | '\t' | '\r' | '\n' => c,
                c if c.is_whitespace() || c == '\u{feff}' => ' ',
                c if c.is_control() => char::REPLACEMENT_CHARACTER,
                c => c,
            })
            .collect(),
    )
}

/// `s` as a FHIR `code` (no leading, trailing or repeated white space, no
/// white space but single spaces), else `None`.
pub fn code(s: &str) -> Option<&str> {
    let ok = !s.is_empty()
        && s.split(' ').all(|t| {
            !t.is_empty()
                && !t
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == '\u{feff}')
        });
    ok.then_some(s)
}

/// Bytes as a FHIR `base64Binary`.
pub fn base64(bytes: &[u8]) -> String {
    data_encoding::BASE64.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_in_utc_with_milliseconds() {
        assert_eq!(instant(0).unwrap(), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            instant(1_700_000_000_123).unwrap(),
            "2023-11-14T22:13:20.123Z"
        );
        // A leap day, and the turn of a century that is a leap year.
        assert_eq!(
            instant(951_782_400_000).unwrap(),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(instant(MAX_INSTANT_MS).unwrap(), "9999-12-31T23:59:59.999Z");
        assert_eq!(instant(MAX_INSTANT_MS + 1), None);
        assert_eq!(instant(u64::MAX), None);
    }

    #[test]
    fn uuids_are_stable_version_8() {
        let a = uuid("Communication", &[1; 16]);
        assert_eq!(a, uuid("Communication", &[1; 16]));
        assert_ne!(a, uuid("Provenance", &[1; 16]));
        assert_eq!(a.len(), 45);
        assert_eq!(&a[23..24], "8", "{a}");
        assert!("89ab".contains(&a[28..29]), "{a}");
    }

    #[test]
    fn strings_and_codes() {
        assert_eq!(fhir_string(""), None);
        assert_eq!(
            fhir_string("BP 80/40\r\n\tnow").unwrap(),
            "BP 80/40\r\n\tnow"
        );
        assert_eq!(
            fhir_string("a\u{0}b\u{b}c\u{a0}d\u{feff}").unwrap(),
            "a\u{fffd}b c d "
        );
        assert_eq!(code("image/jpeg"), Some("image/jpeg"));
        assert_eq!(code("a b"), Some("a b"));
        for bad in ["", " a", "a ", "a  b", "a\tb", "a\u{a0}b"] {
            assert_eq!(code(bad), None, "{bad:?}");
        }
    }
}
