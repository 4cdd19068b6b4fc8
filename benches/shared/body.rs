//! The message bodies every benchmark sends (core and end to end), so their
//! figures compare.

/// Every benchmark message body is exactly this many bytes (ASCII).
pub const BODY_LEN: usize = 60;

/// A deterministic, varied, 60-byte clinical-sounding body (varied so the
/// deflate inside Automerge's snapshot does not get an unrealistically easy time).
pub fn body(i: usize) -> String {
    const WORDS: &[&str] = &[
        "bed", "12", "bp", "90/60", "hr", "118", "started", "fluids", "please", "review", "asap",
        "labs", "back", "k+", "5.9", "repeat", "ecg", "pain", "score", "7", "gave", "morphine",
        "2mg", "iv", "sats", "94%", "on", "2l", "family", "asking", "for", "update", "obs",
        "stable", "wound", "dressing", "changed", "npo", "after", "midnight", "theatre", "at", "9",
        "bay", "4", "falls", "risk", "high", "ok", "thanks", "will", "do", "now",
    ];
    let mut x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let mut s = String::with_capacity(BODY_LEN + 12);
    while s.len() < BODY_LEN {
        x ^= x >> 33;
        x = x.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
        x ^= x >> 29;
        if !s.is_empty() {
            s.push(' ');
        }
        s.push_str(WORDS[(x % WORDS.len() as u64) as usize]);
    }
    s.truncate(BODY_LEN);
    if s.ends_with(' ') {
        s.pop();
        s.push('.');
    }
    debug_assert_eq!(s.len(), BODY_LEN);
    s
}
