//! Reading each blob from the source exactly once into the local store, verifying its
//! digest and building its chunk map on the way.

use std::sync::Arc;

use blobswarm_core::store::{FsStore, StoreError};
use blobswarm_core::{ChunkError, ChunkHasher, ChunkMap, Digest, check_blob};
use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;

use crate::source::{BlobDescriptor, ResolvedImage, Source, SourceError};

/// A blob now held in full by the local store, with its chunk map.
#[derive(Debug, Clone)]
pub struct IngestedBlob {
    /// Chunk map built while reading.
    pub map: ChunkMap,
    /// Media type from the manifest.
    pub media_type: String,
    /// Bytes read from the source for it (0 when it was already in the store).
    pub bytes_read: u64,
}

/// Why a blob could not be ingested; names the blob.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The source failed to provide the blob.
    #[error("reading blob {blob}: {source}")]
    Source {
        /// The blob.
        blob: Digest,
        /// The source error.
        source: SourceError,
    },
    /// The stream broke off.
    #[error("reading blob {blob}: {source}")]
    Stream {
        /// The blob.
        blob: Digest,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The source sent more bytes than the manifest declares.
    #[error("blob {blob} is longer than the {size} bytes its manifest declares")]
    TooLong {
        /// The blob.
        blob: Digest,
        /// Declared size.
        size: u64,
    },
    /// Digest, size or chunking failed.
    #[error(transparent)]
    Verify(#[from] ChunkError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A hashing thread died.
    #[error("hashing thread for {0} failed")]
    Worker(Digest),
}

/// Buffers in flight between the network reader and each hashing thread.
const PIPELINE_DEPTH: usize = 16;

/// Ingests every blob of `image`, calling `progress` with the bytes of each buffer read.
///
/// Each byte is read from the source once; the whole-blob SHA-256 (checked against the
/// manifest's digest) and the chunk SHA-256s run on two blocking threads over the same
/// buffers, so ingest uses two cores and the async runtime never hashes.
///
/// # Errors
/// [`IngestError`] naming the blob; the blob's partial file is removed.
pub async fn ingest(
    source: &Source,
    image: &ResolvedImage,
    store: &Arc<FsStore>,
    chunk_size: u32,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Vec<IngestedBlob>, IngestError> {
    let mut out = Vec::with_capacity(image.blobs.len());
    for blob in &image.blobs {
        out.push(ingest_blob(source, blob, store, chunk_size, progress).await?);
    }
    Ok(out)
}

async fn ingest_blob(
    source: &Source,
    blob: &BlobDescriptor,
    store: &Arc<FsStore>,
    chunk_size: u32,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<IngestedBlob, IngestError> {
    let digest = blob.digest;
    if store.has_blob(&digest) {
        // Already verified earlier (a restart, or a layer shared with a previous image):
        // only the chunk map must be rebuilt, from local disk.
        let map = rehash_local(store.clone(), blob.clone(), chunk_size).await?;
        progress(blob.size);
        return Ok(IngestedBlob {
            map,
            media_type: blob.media_type.clone(),
            bytes_read: 0,
        });
    }
    let mut stream = source
        .open_blob(blob)
        .await
        .map_err(|source| IngestError::Source {
            blob: digest,
            source,
        })?;
    let (whole_tx, mut whole_rx) = mpsc::channel::<Bytes>(PIPELINE_DEPTH);
    let (chunk_tx, mut chunk_rx) = mpsc::channel::<Bytes>(PIPELINE_DEPTH);
    let mut writer = store.blob_writer(&digest)?;
    let whole = tokio::task::spawn_blocking(move || {
        let mut h = Sha256::new();
        let mut size = 0u64;
        while let Some(buf) = whole_rx.blocking_recv() {
            h.update(&buf);
            size += buf.len() as u64;
            if let Err(e) = writer.write(&buf) {
                writer.abandon();
                return Err(IngestError::Store(e));
            }
        }
        writer.finish()?;
        Ok::<_, IngestError>((Digest::from_bytes(h.finalize().into()), size))
    });
    let chunks = tokio::task::spawn_blocking(move || {
        let mut h = ChunkHasher::new(chunk_size)?;
        while let Some(buf) = chunk_rx.blocking_recv() {
            h.update(&buf);
        }
        Ok::<_, IngestError>(h)
    });
    let mut read = 0u64;
    let mut failure = None;
    while let Some(item) = stream.next().await {
        let buf = match item {
            Ok(b) => b,
            Err(source) => {
                failure = Some(IngestError::Stream {
                    blob: digest,
                    source,
                });
                break;
            }
        };
        read += buf.len() as u64;
        if read > blob.size {
            failure = Some(IngestError::TooLong {
                blob: digest,
                size: blob.size,
            });
            break;
        }
        progress(buf.len() as u64);
        if whole_tx.send(buf.clone()).await.is_err() || chunk_tx.send(buf).await.is_err() {
            break;
        }
    }
    drop((whole_tx, chunk_tx));
    let whole = whole.await.map_err(|_| IngestError::Worker(digest))?;
    let chunks = chunks.await.map_err(|_| IngestError::Worker(digest))?;
    let result = (|| {
        if let Some(e) = failure {
            return Err(e);
        }
        let (actual, size) = whole?;
        check_blob(digest, blob.size, actual, size)?;
        Ok(chunks?.finish(digest)?)
    })();
    match result {
        Ok(map) => {
            let store2 = store.clone();
            let size = blob.size;
            tokio::task::spawn_blocking(move || store2.finalize(&digest, size))
                .await
                .map_err(|_| IngestError::Worker(digest))??;
            Ok(IngestedBlob {
                map,
                media_type: blob.media_type.clone(),
                bytes_read: read,
            })
        }
        Err(e) => {
            store.discard_partial(&digest);
            Err(e)
        }
    }
}

async fn rehash_local(
    store: Arc<FsStore>,
    blob: BlobDescriptor,
    chunk_size: u32,
) -> Result<ChunkMap, IngestError> {
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut r = store.open_blob(&blob.digest)?;
        let mut h = blobswarm_core::BlobHasher::new(chunk_size)?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = r.read(&mut buf).map_err(|source| IngestError::Stream {
                blob: blob.digest,
                source,
            })?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        Ok(h.finish(blob.digest, blob.size)?)
    })
    .await
    .map_err(|_| IngestError::Worker(blob.digest))?
}
