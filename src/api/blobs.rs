//! The attachment endpoints (protocol/blobs.md §6): upload a blob, fetch
//! one from peers, download it (with byte ranges) and its thumbnail; and
//! what the history shows of each attachment.
//!
//! Invariants:
//! - an upload is stripped of photo metadata before it is hashed, so what
//!   the team receives is what the hash names;
//! - a download never lets an attachment run as a page of ours: only
//!   images, audio, video and PDFs are shown inline, everything else is
//!   served as `application/octet-stream` with `Content-Disposition:
//!   attachment`, to save (and `nosniff` holds browsers to that type).

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::server::{bad_request, conversation_id, message_id, Answer, Fail, Shared};
use super::types::{AttachmentRequest, AttachmentView, HistoryMessage, Uploaded};
use crate::blobs::meta::{clean_name, image_kind, valid_media_type, MAX_THUMBNAIL};
use crate::blobs::store::BlobStore;
use crate::blobs::{Attachment, BlobHash, Key, MAX_ATTACHMENTS, MAX_BLOB_LEN};
use crate::ids::ConversationId;

pub(super) fn routes() -> Router<Shared> {
    Router::new()
        .route(
            "/v1/blobs",
            post(upload).layer(DefaultBodyLimit::max(MAX_BLOB_LEN as usize + 1)),
        )
        .route(
            "/v1/conversations/{id}/messages/{message}/attachments",
            get(list),
        )
        .route(
            "/v1/conversations/{id}/messages/{message}/attachments/{index}",
            get(download),
        )
        .route(
            "/v1/conversations/{id}/messages/{message}/attachments/{index}/thumbnail",
            get(thumbnail),
        )
        .route(
            "/v1/conversations/{id}/messages/{message}/attachments/{index}/fetch",
            post(fetch),
        )
}

/// How long a fetch request waits for the blob to be held whole.
const FETCH_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

/// A media type for a file named `name`, by its extension.
pub fn guess_media_type(name: &str) -> &'static str {
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("png") => "image/png",
        Some("webp") => "image/webp",
        Some("gif") => "image/gif",
        Some("pdf") => "application/pdf",
        Some("txt") => "text/plain",
        Some("csv") => "text/csv",
        Some("webm") => "audio/webm",
        Some("ogg" | "oga" | "opus") => "audio/ogg",
        Some("m4a") => "audio/mp4",
        Some("mp3") => "audio/mpeg",
        Some("wav") => "audio/wav",
        Some("mp4") => "video/mp4",
        Some("dcm") => "application/dicom",
        Some("docx") => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        _ => "application/octet-stream",
    }
}

/// Media types shown in the page; everything else is only saved.
fn inline(media_type: &str) -> bool {
    matches!(
        media_type,
        "image/jpeg" | "image/png" | "image/webp" | "image/gif" | "application/pdf"
    ) || media_type.starts_with("audio/")
        || media_type.starts_with("video/")
}

/// The attachments a send request for `conversation` names, as the message
/// carries them: each must be uploaded whole here, and is attached in that
/// conversation (`BlobStore::adopt`) before the message exists.
pub fn resolve(
    blobs: &BlobStore,
    conversation: ConversationId,
    reqs: &[AttachmentRequest],
) -> Result<Vec<Attachment>, String> {
    if reqs.len() > MAX_ATTACHMENTS {
        return Err(format!(
            "a message carries at most {MAX_ATTACHMENTS} attachments"
        ));
    }
    let mut out: Vec<Attachment> = Vec::with_capacity(reqs.len());
    for r in reqs {
        let hash = BlobHash::from_hex(&r.hash)
            .ok_or_else(|| format!("\"{}\" is not a blob hash (64 hex digits)", r.hash))?;
        let size = blobs.adopt(conversation, &hash).map_err(|e| match e {
            crate::blobs::store::BlobError::NotHeld => format!(
                "this device does not hold the attachment {} whole; upload it first",
                &r.hash[..r.hash.len().min(16)]
            ),
            e => e.to_string(),
        })?;
        if !valid_media_type(&r.media_type) {
            return Err(format!(
                "\"{}\" is not a media type such as image/jpeg",
                r.media_type
            ));
        }
        let thumbnail = match &r.thumbnail {
            None => Vec::new(),
            Some(h) => {
                let t = data_encoding::HEXLOWER_PERMISSIVE
                    .decode(h.as_bytes())
                    .map_err(|_| "a thumbnail is given in hex".to_string())?;
                if t.len() > MAX_THUMBNAIL || image_kind(&t).is_none() {
                    return Err(format!(
                        "a thumbnail is a JPEG, PNG or WebP of at most {MAX_THUMBNAIL} bytes"
                    ));
                }
                crate::blobs::strip::strip(&t).map_err(|e| e.to_string())?.0
            }
        };
        let a = Attachment {
            hash,
            size,
            media_type: r.media_type.clone(),
            name: clean_name(&r.name),
            thumbnail,
        };
        a.check().map_err(|e| e.to_string())?;
        if out.iter().any(|b| b.hash == a.hash) {
            return Err("the same file is attached twice".into());
        }
        out.push(a);
    }
    Ok(out)
}

/// Fills in what this device holds of each attachment in `messages` of
/// `conversation`.
pub fn enrich(blobs: &BlobStore, conversation: ConversationId, messages: &mut [HistoryMessage]) {
    for m in messages {
        for a in &mut m.attachments {
            enrich_one(blobs, conversation, a);
        }
    }
}

pub fn enrich_one(blobs: &BlobStore, conversation: ConversationId, a: &mut AttachmentView) {
    let Some(hash) = BlobHash::from_hex(&a.hash) else {
        return;
    };
    if let Ok(Some(s)) = blobs
        .status(&Key::new(conversation, hash))
        .map(|s| s.filter(|s| s.size == a.size))
    {
        a.held = s.complete();
        a.held_chunks = s.held_chunks;
        a.own = s.own;
        a.reached = s.reached;
    }
}

#[derive(Deserialize)]
struct UploadQuery {
    name: Option<String>,
    #[serde(rename = "type")]
    media_type: Option<String>,
}

async fn upload(
    State(s): State<Shared>,
    Query(q): Query<UploadQuery>,
    body: Bytes,
) -> Answer<Uploaded> {
    let limit = s.handle.query(|n| n.attachment_limit()).await?;
    let name = clean_name(q.name.as_deref().unwrap_or("attachment"));
    let media_type = match q.media_type {
        Some(t) => {
            let t = t.to_ascii_lowercase();
            if !valid_media_type(&t) {
                return Err(bad_request(format!(
                    "\"{t}\" is not a media type such as image/jpeg"
                )));
            }
            t
        }
        None => guess_media_type(&name).to_owned(),
    };
    let blobs = s.handle.blobs().clone();
    let (hash, size, stripped) = tokio::task::spawn_blocking(move || {
        let (bytes, stripped) =
            crate::blobs::strip::strip(&body).map_err(|e| bad_request(e.to_string()))?;
        let size = bytes.len() as u64;
        let hash = blobs.put_own(&bytes, limit).map_err(blob_fail)?;
        Ok::<_, Fail>((hash, size, stripped))
    })
    .await
    .map_err(|e| Fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    Ok(Json(Uploaded {
        hash: hash.to_hex(),
        size,
        name,
        media_type,
        stripped,
    }))
}

fn blob_fail(e: crate::blobs::store::BlobError) -> Fail {
    use crate::blobs::store::BlobError as E;
    let code = match e {
        E::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        E::Quota { .. } => StatusCode::INSUFFICIENT_STORAGE,
        E::Empty => StatusCode::BAD_REQUEST,
        E::NotHeld | E::SizeMismatch => StatusCode::CONFLICT,
        E::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    Fail(code, e.to_string())
}

/// The attachment `index` of a message, and whether the caller may see it
/// (the message is in a conversation this node holds).
async fn attachment(
    s: &Shared,
    id: &str,
    message: &str,
    index: usize,
) -> Result<
    (
        crate::ids::ConversationId,
        crate::ids::MessageId,
        Attachment,
    ),
    Fail,
> {
    let c = conversation_id(id)?;
    let m = message_id(message)?;
    let all = s.handle.query(move |n| n.attachments_of(&c, &m)).await?;
    let a = all.get(index).cloned().ok_or_else(|| {
        Fail(
            StatusCode::NOT_FOUND,
            format!("message {m} has no attachment {index}"),
        )
    })?;
    Ok((c, m, a))
}

async fn list(
    State(s): State<Shared>,
    Path((id, message)): Path<(String, String)>,
) -> Answer<Vec<AttachmentView>> {
    let c = conversation_id(&id)?;
    let m = message_id(&message)?;
    let all = s.handle.query(move |n| n.attachments_of(&c, &m)).await?;
    Ok(Json(
        all.iter()
            .enumerate()
            .map(|(i, a)| {
                let mut v = AttachmentView::of(i, a);
                enrich_one(s.handle.blobs(), c, &mut v);
                v
            })
            .collect(),
    ))
}

async fn fetch(
    State(s): State<Shared>,
    Path((id, message, index)): Path<(String, String, usize)>,
) -> Answer<AttachmentView> {
    let (c, m, a) = attachment(&s, &id, &message, index).await?;
    match tokio::time::timeout(FETCH_WAIT, s.handle.fetch(c, m, a.hash)).await {
        Ok(r) => {
            r?.map_err(|why| Fail(StatusCode::CONFLICT, why))?;
        }
        Err(_) => {
            return Err(Fail(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "{} is still being fetched after {} minutes; it goes on in the background",
                    a.name,
                    FETCH_WAIT.as_secs() / 60
                ),
            ))
        }
    }
    let mut v = AttachmentView::of(index, &a);
    enrich_one(s.handle.blobs(), c, &mut v);
    Ok(Json(v))
}

async fn thumbnail(
    State(s): State<Shared>,
    Path((id, message, index)): Path<(String, String, usize)>,
) -> Result<Response, Fail> {
    let (_, _, a) = attachment(&s, &id, &message, index).await?;
    let kind = image_kind(&a.thumbnail).ok_or_else(|| {
        Fail(
            StatusCode::NOT_FOUND,
            "this attachment has no thumbnail".into(),
        )
    })?;
    Ok(([(header::CONTENT_TYPE, kind)], a.thumbnail).into_response())
}

/// `bytes=A-B`, `bytes=A-` or `bytes=-N` of a blob of `size` bytes, as a
/// half-open range; `Err` if it cannot be satisfied. One range only.
fn parse_range(v: &str, size: u64) -> Result<(u64, u64), ()> {
    let spec = v.trim().strip_prefix("bytes=").ok_or(())?;
    if spec.contains(',') {
        return Err(());
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().map_err(|_| ())?;
            (size.saturating_sub(n), size)
        }
        (a, "") => (a.parse().map_err(|_| ())?, size),
        (a, b) => {
            let a: u64 = a.parse().map_err(|_| ())?;
            let b: u64 = b.parse().map_err(|_| ())?;
            (a, b.saturating_add(1).min(size))
        }
    };
    if start >= end || start >= size {
        return Err(());
    }
    Ok((start, end))
}

async fn download(
    State(s): State<Shared>,
    Path((id, message, index)): Path<(String, String, usize)>,
    headers: HeaderMap,
) -> Result<Response, Fail> {
    let (c, _, a) = attachment(&s, &id, &message, index).await?;
    let blobs = s.handle.blobs().clone();
    let key = Key::new(c, a.hash);
    let held = blobs
        .status(&key)
        .map_err(|e| Fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .is_some_and(|st| st.complete() && st.size == a.size);
    if !held {
        return Err(Fail(
            StatusCode::CONFLICT,
            "this device does not hold the attachment yet: fetch it first".into(),
        ));
    }
    let size = a.size;
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        None => None,
        Some(r) => match parse_range(r, size) {
            Ok(r) => Some(r),
            Err(()) => {
                let mut res = Fail(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    format!("the range \"{r}\" is not within the attachment's {size} bytes"),
                )
                .into_response();
                res.headers_mut().insert(
                    header::CONTENT_RANGE,
                    HeaderValue::from_str(&format!("bytes */{size}")).expect("ascii"),
                );
                return Ok(res);
            }
        },
    };
    let (start, end) = range.unwrap_or((0, size));
    let bytes = tokio::task::spawn_blocking(move || blobs.read_range(&key, start, end))
        .await
        .map_err(|e| Fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(blob_fail)?;
    let shown = inline(&a.media_type);
    let content_type = if shown {
        a.media_type.as_str()
    } else {
        "application/octet-stream"
    };
    let disposition = format!(
        "{}; filename*=UTF-8''{}",
        if shown { "inline" } else { "attachment" },
        percent(&a.name)
    );
    let mut res = bytes.into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(content_type).expect("a checked media type"),
    );
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&disposition).expect("percent-encoded"),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if range.is_some() {
        *res.status_mut() = StatusCode::PARTIAL_CONTENT;
        res.headers_mut().insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&format!("bytes {start}-{}/{size}", end - 1)).expect("ascii"),
        );
    }
    Ok(res)
}

/// A query parameter's value, percent-encoded.
pub(super) fn query_escape(s: &str) -> String {
    percent(s)
}

/// RFC 5987 percent-encoding of a file name.
fn percent(name: &str) -> String {
    name.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_read_as_http_says() {
        assert_eq!(parse_range("bytes=0-9", 100), Ok((0, 10)));
        assert_eq!(parse_range("bytes=90-", 100), Ok((90, 100)));
        assert_eq!(parse_range("bytes=-10", 100), Ok((90, 100)));
        assert_eq!(parse_range("bytes=50-500", 100), Ok((50, 100)));
        assert_eq!(parse_range("bytes=100-", 100), Err(()));
        assert_eq!(parse_range("bytes=5-4", 100), Err(()));
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Err(()));
        assert_eq!(parse_range("items=0-1", 100), Err(()));
    }
}
