//! How the blob store's files hold their bytes: plain, or, in an encrypted
//! data directory (storage.md §8.3), sealed with the data key's blob key.
//!
//! Sealed, a `.data` file keeps the plain layout's shape at a wider stride:
//! chunk `i` is sealed alone at offset `i × (CHUNK_LEN + OVERHEAD)`, so a
//! chunk is still written and read in place, in any order, and a range read
//! opens only the chunks it covers. A chunk is sealed with the blob's hash
//! and its index as its place (a chunk moved to another index or blob does
//! not open); a chunk never written reads as zeros, which do not open, so
//! it counts as missing exactly as an unverified plain chunk does. The
//! `.outline` and `.meta` files are sealed whole.
//!
//! Invariant: plain or sealed, a chunk reads back as the bytes written or
//! not at all; the blob's hash is checked above this, as before.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::atrest::{Sealer, OVERHEAD};
use crate::blobs::tree::{chunk_count, chunk_len, CHUNK_LEN};

/// Plain or sealed file I/O for one blob store.
pub(super) struct Disk(Option<Sealer>);

impl Disk {
    pub(super) fn new(sealer: Option<Sealer>) -> Disk {
        Disk(sealer)
    }

    pub(super) fn is_sealed(&self) -> bool {
        self.0.is_some()
    }

    fn stride(&self) -> u64 {
        CHUNK_LEN + if self.is_sealed() { OVERHEAD as u64 } else { 0 }
    }

    /// The length of a `.data` file that holds a blob of `size` bytes.
    pub(super) fn data_len(&self, size: u64) -> u64 {
        match self.0 {
            None => size,
            Some(_) => size + chunk_count(size) * OVERHEAD as u64,
        }
    }

    /// The blob size a `.data` file of `len` bytes holds (the inverse of
    /// [`Disk::data_len`]).
    pub(super) fn size_of(&self, len: u64) -> u64 {
        match self.0 {
            None => len,
            Some(_) => len.saturating_sub(len.div_ceil(self.stride()) * OVERHEAD as u64),
        }
    }

    fn place(hash: &[u8; 32], index: u64) -> [u8; 40] {
        let mut place = [0u8; 40];
        place[..32].copy_from_slice(hash);
        place[32..].copy_from_slice(&index.to_be_bytes());
        place
    }

    /// Writes chunk `index` of the blob `hash`.
    pub(super) fn write_chunk(
        &self,
        f: &File,
        hash: &[u8; 32],
        index: u64,
        bytes: &[u8],
    ) -> io::Result<()> {
        let at = index * self.stride();
        match &self.0 {
            None => f.write_all_at(bytes, at),
            Some(s) => f.write_all_at(&s.seal(&Self::place(hash, index), bytes), at),
        }
    }

    /// Chunk `index` of a blob of `size` bytes, or `None` if it is not
    /// there (short file, or a sealed chunk that does not open).
    pub(super) fn read_chunk(
        &self,
        f: &File,
        hash: &[u8; 32],
        size: u64,
        index: u64,
    ) -> io::Result<Option<Vec<u8>>> {
        let len = chunk_len(size, index) as usize;
        let at = index * self.stride();
        match &self.0 {
            None => {
                let mut buf = vec![0u8; len];
                Ok(f.read_exact_at(&mut buf, at).ok().map(|()| buf))
            }
            Some(s) => {
                let mut buf = vec![0u8; len + OVERHEAD];
                if f.read_exact_at(&mut buf, at).is_err() {
                    return Ok(None);
                }
                Ok(s.open(&Self::place(hash, index), &buf).ok())
            }
        }
    }

    /// Writes a whole blob of `bytes` (an upload).
    pub(super) fn write_all(&self, f: &File, hash: &[u8; 32], bytes: &[u8]) -> io::Result<()> {
        for (i, chunk) in bytes.chunks(CHUNK_LEN as usize).enumerate() {
            self.write_chunk(f, hash, i as u64, chunk)?;
        }
        Ok(())
    }

    /// Bytes `start..end` of a blob of `size` bytes whose chunks are held.
    pub(super) fn read_range(
        &self,
        f: &File,
        hash: &[u8; 32],
        size: u64,
        start: u64,
        end: u64,
    ) -> io::Result<Vec<u8>> {
        if self.0.is_none() {
            let mut buf = vec![0u8; (end - start) as usize];
            f.read_exact_at(&mut buf, start)?;
            return Ok(buf);
        }
        let mut out = Vec::with_capacity((end - start) as usize);
        if start == end {
            return Ok(out);
        }
        for i in start / CHUNK_LEN..=(end - 1) / CHUNK_LEN {
            let chunk = self.read_chunk(f, hash, size, i)?.ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    "an attachment chunk does not open",
                )
            })?;
            let from = start.saturating_sub(i * CHUNK_LEN) as usize;
            let to = (end - i * CHUNK_LEN).min(chunk.len() as u64) as usize;
            out.extend_from_slice(&chunk[from..to]);
        }
        Ok(out)
    }

    /// Writes a small file whole (through a temporary file and a rename;
    /// `sync` fsyncs it first), sealed under `place` if sealing.
    pub(super) fn write_small(
        &self,
        path: &Path,
        place: &[u8],
        bytes: &[u8],
        sync: bool,
    ) -> io::Result<()> {
        let body = match &self.0 {
            None => bytes.to_vec(),
            Some(s) => s.seal(place, bytes),
        };
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = std::path::PathBuf::from(tmp);
        fs::write(&tmp, &body)?;
        if sync {
            File::open(&tmp)?.sync_all()?;
        }
        fs::rename(&tmp, path)
    }

    /// A small file's bytes (at most `max` of them once opened): refused as
    /// `InvalidData` if longer, or if sealed and it does not open.
    pub(super) fn read_small(&self, path: &Path, place: &[u8], max: u64) -> io::Result<Vec<u8>> {
        let extra = if self.is_sealed() { OVERHEAD as u64 } else { 0 };
        let b = read_at_most(path, max + extra)?;
        match &self.0 {
            None => Ok(b),
            Some(s) => s.open(place, &b).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    "a sealed attachment file does not open",
                )
            }),
        }
    }
}

/// A plain store's key of file names (`blobs/key`), made on first use.
pub(super) fn plain_name_key(dir: &Path, file: &str) -> io::Result<zeroize::Zeroizing<[u8; 32]>> {
    let key_path = dir.join(file);
    let key: [u8; 32] = match fs::read(&key_path) {
        Ok(k) if k.len() == 32 => k.try_into().expect("32 bytes"),
        Ok(_) => return Err(io::Error::other("blobs/key is damaged")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let mut k = [0u8; 32];
            rand_core::RngCore::try_fill_bytes(&mut rand_core::OsRng, &mut k)
                .map_err(|e| io::Error::other(e.to_string()))?;
            let tmp = dir.join("key.tmp");
            let mut f = File::create(&tmp)?;
            std::io::Write::write_all(&mut f, &k)?;
            f.sync_all()?;
            fs::rename(&tmp, &key_path)?;
            File::open(dir)?.sync_all()?;
            k
        }
        Err(e) => return Err(e),
    };
    Ok(zeroize::Zeroizing::new(key))
}

/// A file's bytes, refused (as `InvalidData`) if it is longer than `max`.
pub(super) fn read_at_most(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let f = File::open(path)?;
    if f.metadata()?.len() > max {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "too long"));
    }
    let mut b = Vec::new();
    f.take(max + 1).read_to_end(&mut b)?;
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::atrest::DataKey;

    #[test]
    fn sealed_chunks_read_back_in_place_and_ranges_cross_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.data");
        let disk = Disk::new(Some(DataKey::generate().keys().blobs));
        let size = 2 * CHUNK_LEN + 100;
        let bytes: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let f = fs::OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        f.set_len(disk.data_len(size)).unwrap();
        assert_eq!(disk.size_of(disk.data_len(size)), size);
        assert_eq!(disk.size_of(disk.data_len(CHUNK_LEN)), CHUNK_LEN);
        let hash = [9u8; 32];
        // Only chunk 1 at first: 0 and 2 read as missing.
        disk.write_chunk(
            &f,
            &hash,
            1,
            &bytes[CHUNK_LEN as usize..2 * CHUNK_LEN as usize],
        )
        .unwrap();
        assert_eq!(disk.read_chunk(&f, &hash, size, 0).unwrap(), None);
        assert_eq!(
            disk.read_chunk(&f, &hash, size, 1).unwrap().unwrap(),
            &bytes[CHUNK_LEN as usize..2 * CHUNK_LEN as usize]
        );
        assert_eq!(
            disk.read_chunk(&f, &[8u8; 32], size, 1).unwrap(),
            None,
            "another blob's place"
        );
        disk.write_all(&f, &hash, &bytes).unwrap();
        for (start, end) in [
            (0, 1),
            (5, CHUNK_LEN + 7),
            (CHUNK_LEN - 1, 2 * CHUNK_LEN + 100),
            (0, size),
            (size, size),
        ] {
            assert_eq!(
                disk.read_range(&f, &hash, size, start, end).unwrap(),
                &bytes[start as usize..end as usize],
                "{start}..{end}"
            );
        }
        // No plaintext on disk.
        let raw = fs::read(&path).unwrap();
        assert!(!raw.windows(64).any(|w| w == &bytes[1000..1064]));
    }
}
