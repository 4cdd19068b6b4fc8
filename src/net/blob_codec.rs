//! The `/huddle/blob/1` codec (protocol/blobs.md §3): a 4-byte big-endian
//! length, then the message (`blobs::wire`), the length checked against the
//! bound before anything is allocated.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::StreamProtocol;

use super::blobs::{REQUEST_TIMEOUT, STREAMS_PER_CONNECTION};
use crate::blobs::wire::{BlobRequest, BlobResponse, MAX_REQUEST_LEN, MAX_RESPONSE_LEN, PROTOCOL};

/// The codec: a 4-byte big-endian length, then the message (wire.rs).
#[derive(Clone, Default)]
pub struct BlobCodec {
    /// Bytes of responses read, counted as they arrive (for resumption's
    /// measure: what a cut costs).
    pub bytes_in: Arc<AtomicU64>,
}

async fn read_framed<T: AsyncRead + Unpin + Send>(
    io: &mut T,
    max: usize,
    counter: Option<&AtomicU64>,
) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let n = u32::from_be_bytes(len) as usize;
    if n > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a blob message of {n} bytes (at most {max})"),
        ));
    }
    let mut buf = vec![0u8; n];
    let mut at = 0;
    while at < n {
        let k = io.read(&mut buf[at..]).await?;
        if k == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if let Some(c) = counter {
            c.fetch_add(k as u64, Ordering::Relaxed);
        }
        at += k;
    }
    Ok(buf)
}

async fn write_framed<T: AsyncWrite + Unpin + Send>(io: &mut T, b: &[u8]) -> io::Result<()> {
    io.write_all(&(b.len() as u32).to_be_bytes()).await?;
    io.write_all(b).await?;
    io.flush().await
}

fn invalid(e: crate::codec::DecodeError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

impl request_response::Codec for BlobCodec {
    type Protocol = StreamProtocol;
    type Request = BlobRequest;
    type Response = BlobResponse;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<BlobRequest>
    where
        T: AsyncRead + Unpin + Send,
    {
        let b = read_framed(io, MAX_REQUEST_LEN, None).await?;
        BlobRequest::decode(&b).map_err(invalid)
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<BlobResponse>
    where
        T: AsyncRead + Unpin + Send,
    {
        let b = read_framed(io, MAX_RESPONSE_LEN, Some(&self.bytes_in)).await?;
        BlobResponse::decode(&b).map_err(invalid)
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: BlobRequest,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_framed(io, &req.encode()).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        resp: BlobResponse,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_framed(io, &resp.encode()).await
    }
}

pub type Behaviour = request_response::Behaviour<BlobCodec>;

pub fn behaviour(codec: BlobCodec) -> Behaviour {
    request_response::Behaviour::with_codec(
        codec,
        [(StreamProtocol::new(PROTOCOL), ProtocolSupport::Full)],
        request_response::Config::default()
            .with_request_timeout(REQUEST_TIMEOUT)
            .with_max_concurrent_streams(STREAMS_PER_CONNECTION),
    )
}
