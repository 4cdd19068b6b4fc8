//! Byte-level reading and writing shared by every encoding huddle defines
//! (certificates, messages, receipts, wire frames).
//!
//! Invariant: a [`Reader`] never panics and never allocates more than the
//! bytes it was given; every length is checked against what remains before
//! it is used, so hostile input can only produce a [`DecodeError`].

use thiserror::Error;

/// Why some bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    #[error("input ended early while reading {0}")]
    Truncated(&'static str),
    #[error("{0} is longer than the limit of {1} bytes")]
    TooLong(&'static str, usize),
    #[error("unknown {0} value {1}")]
    Unknown(&'static str, u64),
    #[error("{0} is not valid UTF-8")]
    Utf8(&'static str),
    #[error("{0} trailing bytes after the end")]
    Trailing(usize),
    #[error("varint is too long or overflows")]
    Varint,
    #[error("{0}")]
    Invalid(&'static str),
}

/// Appends primitive values to a byte buffer.
#[derive(Default, Debug)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_capacity(n: usize) -> Self {
        Writer {
            buf: Vec::with_capacity(n),
        }
    }

    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }

    pub fn u64_be(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// Unsigned LEB128.
    pub fn varint(&mut self, mut v: u64) -> &mut Self {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                self.buf.push(byte);
                return self;
            }
            self.buf.push(byte | 0x80);
        }
    }

    pub fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(bytes);
        self
    }

    /// A varint length followed by the bytes.
    pub fn bytes(&mut self, bytes: &[u8]) -> &mut Self {
        self.varint(bytes.len() as u64);
        self.raw(bytes)
    }

    pub fn str(&mut self, s: &str) -> &mut Self {
        self.bytes(s.as_bytes())
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.buf
    }

    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// Reads primitive values from a byte slice, checking every bound.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The bytes read so far (used to compute what a signature covers).
    pub fn consumed(&self) -> &'a [u8] {
        &self.buf[..self.pos]
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        let b = *self.buf.get(self.pos).ok_or(DecodeError::Truncated(what))?;
        self.pos += 1;
        Ok(b)
    }

    pub fn u64_be(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let a: [u8; 8] = self.array(what)?;
        Ok(u64::from_be_bytes(a))
    }

    pub fn varint(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = self.u8(what)?;
            let part = u64::from(b & 0x7f);
            if i == 9 && part > 1 {
                return Err(DecodeError::Varint);
            }
            v |= part << (7 * i);
            if b & 0x80 == 0 {
                // Reject non-minimal encodings so that every value has one encoding.
                if i > 0 && b == 0 {
                    return Err(DecodeError::Varint);
                }
                return Ok(v);
            }
        }
        Err(DecodeError::Varint)
    }

    pub fn raw(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Truncated(what));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let s = self.raw(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    /// A varint length (at most `max`) followed by that many bytes.
    pub fn bytes(&mut self, max: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let n = self.varint(what)?;
        if n > max as u64 {
            return Err(DecodeError::TooLong(what, max));
        }
        self.raw(n as usize, what)
    }

    pub fn str(&mut self, max: usize, what: &'static str) -> Result<&'a str, DecodeError> {
        let b = self.bytes(max, what)?;
        std::str::from_utf8(b).map_err(|_| DecodeError::Utf8(what))
    }

    /// A varint count, checked against `max` and against the bytes left
    /// (each item takes at least `min_item_len` bytes), so a hostile count
    /// can never trigger a large allocation.
    pub fn count(
        &mut self,
        max: usize,
        min_item_len: usize,
        what: &'static str,
    ) -> Result<usize, DecodeError> {
        let n = self.varint(what)?;
        if n > max as u64 {
            return Err(DecodeError::TooLong(what, max));
        }
        let n = n as usize;
        if n.saturating_mul(min_item_len.max(1)) > self.remaining() {
            return Err(DecodeError::Truncated(what));
        }
        Ok(n)
    }

    pub fn finish(self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(DecodeError::Trailing(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_round_trips_and_rejects_overlong() {
        for v in [0u64, 1, 127, 128, 300, u32::MAX as u64, u64::MAX] {
            let mut w = Writer::new();
            w.varint(v);
            let bytes = w.finish();
            let mut r = Reader::new(&bytes);
            assert_eq!(r.varint("v").unwrap(), v);
            r.finish().unwrap();
        }
        // 0x80 0x00 is a non-minimal encoding of zero.
        assert_eq!(
            Reader::new(&[0x80, 0x00]).varint("v"),
            Err(DecodeError::Varint)
        );
        assert_eq!(
            Reader::new(&[0xff; 11]).varint("v"),
            Err(DecodeError::Varint)
        );
    }

    #[test]
    fn hostile_lengths_do_not_allocate() {
        let mut w = Writer::new();
        w.varint(u64::MAX >> 1);
        let bytes = w.finish();
        assert!(Reader::new(&bytes).bytes(1 << 20, "b").is_err());
        assert!(Reader::new(&bytes).count(usize::MAX, 1, "c").is_err());
    }
}
