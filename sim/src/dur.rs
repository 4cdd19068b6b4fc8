//! Durations as scenarios write them: `"1h30m"`, `"250ms"`, `"0.5ms"`,
//! `"-10m"`, held in microseconds.
//!
//! Invariant: parsing is exact to the microsecond and never panics; a bad
//! duration is one sentence naming it.

use serde::Deserialize;

/// A duration in microseconds, written `"1h30m"`, `"250ms"`, `"0.5ms"`, `"-10m"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub i64);

impl Dur {
    pub fn us(self) -> u64 {
        self.0.max(0) as u64
    }
}

fn parse_dur(s: &str) -> Result<Dur, String> {
    let t = s.trim();
    let (neg, mut rest) = match t.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, t),
    };
    if rest.is_empty() {
        return Err(format!(
            "\"{s}\" is not a duration (try \"90s\" or \"1h30m\")"
        ));
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num: f64 = rest[..num_len]
            .parse()
            .map_err(|_| format!("\"{s}\" is not a duration (try \"90s\" or \"1h30m\")"))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3_600e6,
            "m" | "min" => 60e6,
            "s" => 1e6,
            "ms" => 1e3,
            "us" => 1.0,
            u => return Err(format!("unknown unit \"{u}\" in duration \"{s}\"")),
        };
        rest = &rest[unit_len..];
        total += num * scale;
    }
    let us = total.round() as i64;
    Ok(Dur(if neg { -us } else { us }))
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_dur(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_dur("1h30m"), Ok(Dur(5_400_000_000)));
        assert_eq!(parse_dur("0.5ms"), Ok(Dur(500)));
        assert_eq!(parse_dur("-10m"), Ok(Dur(-600_000_000)));
        assert!(parse_dur("ten").is_err());
        assert!(parse_dur("3d").is_err());
    }
}
