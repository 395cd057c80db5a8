//! HTTP Range reads of one chunk of a blob: the herd guard's way to re-inject a chunk
//! no peer holds.

use super::*;

impl RegistrySource {
    /// Reads bytes `range` of blob `digest` with an HTTP Range request: the herd guard's
    /// way to re-inject a chunk no peer holds. At most `range` is buffered: a registry
    /// that ignores the Range header is read only when the range is the whole blob.
    /// The bytes are not verified here; the caller checks them against the chunk map.
    pub async fn read_range(
        &self,
        digest: &Digest,
        range: std::ops::Range<u64>,
    ) -> Result<bytes::Bytes, SourceError> {
        let url = format!("{}/blobs/{digest}", self.inner.base_url);
        let want = range.end.saturating_sub(range.start);
        let bad = |cause: String| SourceError::Registry {
            registry: self.inner.registry.clone(),
            cause: format!("range {}-{} of {digest}: {cause}", range.start, range.end),
        };
        if want == 0 || want > blobswarm_core::MAX_CHUNK_SIZE as u64 {
            return Err(bad(format!("{want} bytes is not a chunk-sized range")));
        }
        let header = format!("bytes={}-{}", range.start, range.end - 1);
        let resp = self.get_with(&url, None, Some(&header)).await?;
        let resp = self
            .check_status(resp, || SourceError::BlobNotFound {
                digest: *digest,
                location: format!(
                    "{}/{}",
                    self.inner.registry,
                    self.inner.reference.repository()
                ),
            })
            .await?;
        let whole = resp.status() == StatusCode::OK;
        if whole && range.start != 0 {
            return Err(bad("the registry ignored the Range header".to_owned()));
        }
        if let Some(len) = resp.content_length()
            && len != want
        {
            return Err(bad(format!(
                "the registry sent {len} bytes, expected {want}"
            )));
        }
        let mut body = Vec::with_capacity(want as usize);
        let mut stream = resp.bytes_stream();
        while let Some(piece) = stream
            .try_next()
            .await
            .map_err(|e| self.request_error(&e))?
        {
            if body.len() as u64 + piece.len() as u64 > want {
                return Err(bad(format!("the registry sent more than {want} bytes")));
            }
            body.extend_from_slice(&piece);
        }
        if body.len() as u64 != want {
            return Err(bad(format!(
                "the registry sent {} bytes, expected {want}",
                body.len()
            )));
        }
        Ok(body.into())
    }
}
