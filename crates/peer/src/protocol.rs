//! Frames blobswarm wire messages onto libp2p request-response streams.

use std::io;
use std::time::Duration;

use blobswarm_core::codec::{self, PREFIX_LEN};
use blobswarm_core::wire::{Request, Response};
use bytes::Bytes;
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use libp2p::request_response;

use crate::bufpool::BufPool;

/// The request-response codec: one frame per request and per response. Chunk payloads
/// are read into, and served chunks given back to, the agent's buffer pool.
#[derive(Debug, Clone)]
pub(crate) struct WireCodec {
    pool: BufPool,
}

impl WireCodec {
    /// A codec drawing its payload buffers from `pool`.
    pub(crate) fn new(pool: BufPool) -> Self {
        Self { pool }
    }
}

/// Time every answer gets whatever its size: a few round trips, Yamux window growth and
/// a receiver that is briefly busy (hashing the previous chunk, a GC pause).
pub(crate) const ANSWER_GRACE: Duration = Duration::from_secs(4);
/// The slowest rate a requester may read an answer at, in bytes per second. A full
/// 4 MiB chunk gets 8 s (an effective 512 KiB/s); an honest node with its 8 chunk
/// requests in flight needs about 4 MiB/s (32 Mbit/s) of download for none of them to
/// be cut, far below any cluster link. A slow reader holds an upload slot at most
/// that long instead of the 30 s request timeout.
pub(crate) const MIN_READ_RATE: u64 = 1 << 20;

/// How long writing an answer of `bytes` may take before it is cut off.
pub(crate) fn answer_deadline(bytes: usize) -> Duration {
    let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
    ANSWER_GRACE + Duration::from_millis(bytes.saturating_mul(1000) / MIN_READ_RATE)
}

/// The requester read an answer below [`MIN_READ_RATE`]: the answer was cut off and
/// its upload slot freed. Carried inside the `io::Error` the write fails with, so the
/// adapter can tell it from other failures.
#[derive(Debug, thiserror::Error)]
#[error("requester read {bytes} bytes too slowly: not sent within {deadline:?}")]
pub(crate) struct SlowReader {
    /// Size of the answer.
    pub(crate) bytes: usize,
    /// The deadline it missed.
    pub(crate) deadline: Duration,
}

impl SlowReader {
    /// Whether a stream error is this one.
    pub(crate) fn is(e: &io::Error) -> bool {
        e.get_ref().is_some_and(|inner| inner.is::<Self>())
    }
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

/// Reads one frame, checking both lengths against the codec limits before allocating;
/// the payload goes into a buffer from `pool` (given back if the read fails).
async fn read_frame<T: AsyncRead + Unpin + Send>(
    io: &mut T,
    pool: &BufPool,
) -> io::Result<(Vec<u8>, Vec<u8>)> {
    let mut prefix = [0u8; PREFIX_LEN];
    io.read_exact(&mut prefix).await?;
    let (h, p) = codec::parse_prefix(prefix).map_err(invalid)?;
    let mut header = vec![0u8; h];
    io.read_exact(&mut header).await?;
    let mut payload = pool.take(p);
    if let Err(e) = io.read_exact(&mut payload).await {
        pool.put(payload);
        return Err(e);
    }
    Ok((header, payload))
}

async fn write_frame<T: AsyncWrite + Unpin + Send>(
    io: &mut T,
    header: &[u8],
    payload: &[u8],
) -> io::Result<()> {
    let prefix = codec::frame_prefix(header.len(), payload.len()).map_err(invalid)?;
    io.write_all(&prefix).await?;
    io.write_all(header).await?;
    io.write_all(payload).await?;
    io.close().await
}

impl request_response::Codec for WireCodec {
    type Protocol = StreamProtocol;
    type Request = Request;
    type Response = (Response, Bytes);

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Request>
    where
        T: AsyncRead + Unpin + Send,
    {
        // Requests get a much smaller limit than responses: a peer may open many inbound
        // streams, and none of them may make us allocate more than a valid request needs.
        let mut prefix = [0u8; PREFIX_LEN];
        io.read_exact(&mut prefix).await?;
        let len = codec::parse_request_prefix(prefix).map_err(invalid)?;
        let mut header = vec![0u8; len];
        io.read_exact(&mut header).await?;
        let req: Request = codec::decode(&header).map_err(invalid)?;
        req.validate().map_err(invalid)?;
        Ok(req)
    }

    async fn read_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<(Response, Bytes)>
    where
        T: AsyncRead + Unpin + Send,
    {
        let (header, payload) = read_frame(io, &self.pool).await?;
        let checked = codec::decode::<Response>(&header)
            .map_err(invalid)
            .and_then(|resp| resp.validate().map(|()| resp).map_err(invalid))
            .and_then(|resp| {
                if payload.is_empty() || matches!(resp, Response::Chunk { .. }) {
                    Ok(resp)
                } else {
                    Err(invalid("only chunk responses carry a payload"))
                }
            });
        match checked {
            Ok(resp) => Ok((resp, Bytes::from(payload))),
            Err(e) => {
                self.pool.put(payload);
                Err(e)
            }
        }
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Request,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let header = codec::encode(&req).map_err(invalid)?;
        write_frame(io, &header, &[]).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        (resp, payload): (Response, Bytes),
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let header = codec::encode(&resp).map_err(invalid)?;
        let bytes = PREFIX_LEN + header.len() + payload.len();
        let deadline = answer_deadline(bytes);
        // Dropping the write on timeout drops the stream: its Yamux window and the
        // payload go with it, and request-response reports an inbound failure, which
        // frees the upload slot.
        let written = tokio::time::timeout(deadline, write_frame(io, &header, &payload)).await;
        // Sent or not, the chunk's buffer serves the next read.
        self.pool.put_bytes(payload);
        match written {
            Ok(written) => written,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                SlowReader { bytes, deadline },
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_get_a_grace_plus_their_size_at_the_minimum_rate() {
        assert_eq!(answer_deadline(0), Duration::from_secs(4));
        assert_eq!(answer_deadline(1 << 20), Duration::from_secs(5));
        assert_eq!(answer_deadline(4 << 20), Duration::from_secs(8));
        assert_eq!(answer_deadline(512 << 10), Duration::from_millis(4500));
        // Never overflows, and stays below the request timeout for any chunk.
        assert!(answer_deadline(usize::MAX) > Duration::from_secs(4));
        assert!(answer_deadline(blobswarm_core::MAX_CHUNK_SIZE as usize) < Duration::from_secs(30));
    }

    #[test]
    fn a_slow_reader_error_is_told_from_other_timeouts() {
        let cut = io::Error::new(
            io::ErrorKind::TimedOut,
            SlowReader {
                bytes: 1,
                deadline: ANSWER_GRACE,
            },
        );
        assert!(SlowReader::is(&cut));
        assert!(!SlowReader::is(&io::Error::from(io::ErrorKind::TimedOut)));
    }
}
