//! The `/huddle/sync/1` stream codec for libp2p request-response: a request
//! is one huddle frame, a response is an empty acknowledgement.
//!
//! On a stream: the request is `u32` big-endian length ‖ frame bytes, then
//! the requester closes its write side; the response is a zero length
//! prefix (`00 00 00 00`), then the responder closes. `protocol/transport.md`
//! is the normative description.
//!
//! Invariant: nothing is allocated for a frame before its length prefix has
//! been checked against [`MAX_FRAME_LEN`]. A request that breaks the framing
//! (a larger prefix, a truncated frame, trailing bytes) is read as
//! [`SyncRequest::Invalid`] — request-response would otherwise drop a
//! failed read silently — and a non-empty response is an I/O error; the
//! shell answers both by closing every connection to that peer.

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::request_response;
use libp2p::StreamProtocol;

use crate::wire::{MAX_FRAME_LEN, PROTOCOL_ID};

/// The libp2p protocol id of the frame protocol.
pub const SYNC_PROTOCOL: StreamProtocol = StreamProtocol::new(PROTOCOL_ID);

/// One request on the frame protocol, as read from a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncRequest {
    /// A frame, for the core to decode.
    Frame(Vec<u8>),
    /// The stream broke the framing rules; nothing of it reaches the core.
    /// Never written: only reading produces it.
    Invalid(String),
}

/// Stateless: every stream carries exactly one frame and one ack.
#[derive(Clone, Copy, Debug, Default)]
pub struct FrameCodec;

fn invalid(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

/// Reads one length-prefixed frame, then requires the end of the stream.
async fn read_frame<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<Vec<u8>> {
    let mut prefix = [0u8; 4];
    io.read_exact(&mut prefix).await?;
    let len = u32::from_be_bytes(prefix) as usize;
    if len > MAX_FRAME_LEN {
        return Err(invalid(format!(
            "frame of {len} bytes exceeds the limit of {MAX_FRAME_LEN}"
        )));
    }
    let mut frame = vec![0u8; len];
    io.read_exact(&mut frame).await?;
    let mut extra = [0u8; 1];
    if io.read(&mut extra).await? != 0 {
        return Err(invalid("bytes after the frame on a sync stream".into()));
    }
    Ok(frame)
}

async fn write_frame<T: AsyncWrite + Unpin + Send>(io: &mut T, frame: &[u8]) -> io::Result<()> {
    if frame.len() > MAX_FRAME_LEN {
        return Err(invalid(format!(
            "refusing to send a frame of {} bytes (limit {MAX_FRAME_LEN})",
            frame.len()
        )));
    }
    let len = u32::try_from(frame.len()).map_err(|_| invalid("frame too long".into()))?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(frame).await?;
    io.flush().await
}

impl request_response::Codec for FrameCodec {
    type Protocol = StreamProtocol;
    type Request = SyncRequest;
    type Response = ();

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<SyncRequest>
    where
        T: AsyncRead + Unpin + Send,
    {
        match read_frame(io).await {
            Ok(frame) => Ok(SyncRequest::Frame(frame)),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
                ) =>
            {
                Ok(SyncRequest::Invalid(e.to_string()))
            }
            Err(e) => Err(e),
        }
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<()>
    where
        T: AsyncRead + Unpin + Send,
    {
        let ack = read_frame(io).await?;
        if ack.is_empty() {
            Ok(())
        } else {
            Err(invalid("a sync acknowledgement must be empty".into()))
        }
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        request: SyncRequest,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        match request {
            SyncRequest::Frame(frame) => write_frame(io, &frame).await,
            SyncRequest::Invalid(_) => Err(invalid("an invalid request is never sent".into())),
        }
    }

    async fn write_response<T>(&mut self, _: &StreamProtocol, io: &mut T, (): ()) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &[]).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;
    use futures::io::Cursor;

    #[test]
    fn frames_round_trip_and_limits_hold() {
        let mut buf = Cursor::new(Vec::new());
        block_on(write_frame(&mut buf, b"hello")).unwrap();
        assert_eq!(buf.get_ref()[..4], [0, 0, 0, 5]);
        let mut r = Cursor::new(buf.into_inner());
        assert_eq!(block_on(read_frame(&mut r)).unwrap(), b"hello");

        let over = (MAX_FRAME_LEN as u32 + 1).to_be_bytes();
        let e = block_on(read_frame(&mut Cursor::new(over.to_vec()))).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);

        let trailing = [0, 0, 0, 1, 7, 8];
        let e = block_on(read_frame(&mut Cursor::new(trailing.to_vec()))).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);

        let mut codec = FrameCodec;
        let read = |bytes: Vec<u8>| {
            block_on(request_response::Codec::read_request(
                &mut FrameCodec,
                &SYNC_PROTOCOL,
                &mut Cursor::new(bytes),
            ))
            .unwrap()
        };
        assert_eq!(read(vec![0, 0, 0, 2, 1, 2]), SyncRequest::Frame(vec![1, 2]));
        assert!(matches!(read(over.to_vec()), SyncRequest::Invalid(_)));
        assert!(matches!(read(vec![0, 0, 0, 9, 1]), SyncRequest::Invalid(_)));
        let mut ack = Cursor::new(Vec::new());
        block_on(request_response::Codec::write_response(
            &mut codec,
            &SYNC_PROTOCOL,
            &mut ack,
            (),
        ))
        .unwrap();
        assert_eq!(ack.get_ref(), &[0, 0, 0, 0]);
        let mut eof = Cursor::new(Vec::new());
        assert!(block_on(request_response::Codec::read_response(
            &mut codec,
            &SYNC_PROTOCOL,
            &mut eof
        ))
        .is_err());
    }
}
