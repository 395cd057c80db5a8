//! Frames blobswarm wire messages onto libp2p request-response streams.

use std::io;

use blobswarm_core::codec::{self, PREFIX_LEN};
use blobswarm_core::wire::{Request, Response};
use bytes::Bytes;
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use libp2p::request_response;

/// The request-response codec: one frame per request and per response.
#[derive(Debug, Clone, Default)]
pub(crate) struct WireCodec;

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

/// Reads one frame, checking both lengths against the codec limits before allocating.
async fn read_frame<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<(Vec<u8>, Vec<u8>)> {
    let mut prefix = [0u8; PREFIX_LEN];
    io.read_exact(&mut prefix).await?;
    let (h, p) = codec::parse_prefix(prefix).map_err(invalid)?;
    let mut header = vec![0u8; h];
    io.read_exact(&mut header).await?;
    let mut payload = vec![0u8; p];
    io.read_exact(&mut payload).await?;
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
        let (header, payload) = read_frame(io).await?;
        let resp: Response = codec::decode(&header).map_err(invalid)?;
        resp.validate().map_err(invalid)?;
        if !payload.is_empty() && !matches!(resp, Response::Chunk { .. }) {
            return Err(invalid("only chunk responses carry a payload"));
        }
        Ok((resp, Bytes::from(payload)))
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
        write_frame(io, &header, &payload).await
    }
}
