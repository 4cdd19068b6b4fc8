//! Photo metadata stripped before a photo is attached (issue: privacy):
//! EXIF (GPS position, time, camera serial), XMP and IPTC blocks and
//! textual chunks are removed from JPEG, PNG and WebP files; the pixels are
//! left as they are, so nothing is re-encoded. Other files pass unchanged.
//!
//! Invariant: a file we cannot parse is refused rather than attached with
//! its metadata, if it claims (by its magic bytes) to be one of these
//! formats; img-parts runs under `catch_unwind`, so a hostile file costs a
//! refusal, never the node.

use img_parts::{jpeg::Jpeg, png::Png, webp::WebP, Bytes, ImageEXIF};

use super::meta::image_kind;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "the photo could not be read to remove its location and camera data ({0}); it was not attached"
)]
pub struct StripError(pub String);

/// `bytes` without their photo metadata, and whether anything was removed.
pub fn strip(bytes: &[u8]) -> Result<(Vec<u8>, bool), StripError> {
    let Some(kind) = image_kind(bytes) else {
        return Ok((bytes.to_vec(), false));
    };
    let input = Bytes::copy_from_slice(bytes);
    let out = std::panic::catch_unwind(move || strip_kind(kind, input))
        .map_err(|_| StripError("the image parser failed".into()))??;
    let changed = out != bytes;
    Ok((out, changed))
}

fn strip_kind(kind: &str, input: Bytes) -> Result<Vec<u8>, StripError> {
    let err = |e: img_parts::Error| StripError(e.to_string());
    Ok(match kind {
        "image/jpeg" => {
            let mut j = Jpeg::from_bytes(input).map_err(err)?;
            j.set_exif(None);
            // APP1 (EXIF, XMP), APP13 (IPTC/Photoshop), comments; the
            // colour profile (APP2) stays.
            j.segments_mut()
                .retain(|s| !matches!(s.marker(), 0xE1 | 0xED | 0xFE));
            j.encoder().bytes().to_vec()
        }
        "image/png" => {
            let mut p = Png::from_bytes(input).map_err(err)?;
            p.chunks_mut()
                .retain(|c| !matches!(&c.kind(), b"eXIf" | b"tEXt" | b"iTXt" | b"zTXt" | b"tIME"));
            p.encoder().bytes().to_vec()
        }
        _ => {
            let mut w = WebP::from_bytes(input).map_err(err)?;
            w.set_exif(None);
            w.remove_chunks_by_id(*b"XMP ");
            w.encoder().bytes().to_vec()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal JPEG: SOI, an APP1 EXIF segment holding a marker string,
    /// a COM segment, a tiny SOF/SOS, EOI.
    fn jpeg_with(marker: &[u8]) -> Vec<u8> {
        let mut v = vec![0xFF, 0xD8];
        let mut exif = b"Exif\0\0".to_vec();
        exif.extend_from_slice(marker);
        v.extend_from_slice(&[0xFF, 0xE1]);
        v.extend_from_slice(&((exif.len() + 2) as u16).to_be_bytes());
        v.extend_from_slice(&exif);
        v.extend_from_slice(&[0xFF, 0xFE, 0x00, 0x06]);
        v.extend_from_slice(b"GPS!");
        // SOF0 for a 1x1 greyscale image.
        v.extend_from_slice(&[0xFF, 0xC0, 0, 11, 8, 0, 1, 0, 1, 1, 1, 0x11, 0]);
        // SOS, one component, then entropy bytes.
        v.extend_from_slice(&[0xFF, 0xDA, 0, 8, 1, 1, 0, 0, 0x3F, 0, 0x12, 0x34]);
        v.extend_from_slice(&[0xFF, 0xD9]);
        v
    }

    #[test]
    fn gps_and_comments_leave_a_jpeg_and_other_files_pass() {
        let (out, changed) = strip(&jpeg_with(b"LAT51.5N")).unwrap();
        assert!(changed);
        let s = String::from_utf8_lossy(&out);
        assert!(!s.contains("LAT51.5N") && !s.contains("GPS!"), "{out:?}");
        assert!(out.starts_with(&[0xFF, 0xD8]) && out.ends_with(&[0xFF, 0xD9]));
        let pdf = b"%PDF-1.7 lab result".to_vec();
        assert_eq!(strip(&pdf).unwrap(), (pdf, false));
        // Claims to be a JPEG, is not one: refused, not passed on.
        assert!(strip(&[0xFF, 0xD8, 0xFF, 0x00]).is_err());
    }
}
