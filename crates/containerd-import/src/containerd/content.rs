//! Putting blobs and documents into containerd's content store.
//!
//! `Content.Info` first: present content is only relabelled if labels are missing.
//! Otherwise `Content.Write`, a bidirectional stream keyed by a ref: STAT (learn how much
//! an interrupted earlier write left), WRITE 1 MiB pieces read from the file (each blob is
//! read once), COMMIT with the expected size and digest, which containerd re-hashes.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use blobswarm_core::Digest;
use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::{
    AbortRequest, Info, InfoRequest, UpdateRequest, WriteAction, WriteContentRequest,
    WriteContentResponse,
};
use containerd_client::tonic::{Code, Status, Streaming};
use futures::SinkExt;
use futures::channel::mpsc;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::ContainerdError;
use super::client::{Conn, Lease};
use super::error::io_err;
use super::plan::{ContentItem, Source};
use crate::Progress;

/// Bytes per WRITE message: large enough to keep the per-message overhead negligible,
/// small enough to stay well under gRPC's default 4 MiB message limit.
const WRITE_CHUNK: usize = 1 << 20;
/// How long to wait for another writer holding the same ingest ref.
const LOCKED_RETRY: Duration = Duration::from_millis(250);

/// What putting one item did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ContentOutcome {
    /// Written now (false: it was already present).
    pub(crate) written: bool,
    /// Bytes sent.
    pub(crate) bytes_sent: u64,
    /// Bytes an interrupted write had left that were kept.
    pub(crate) bytes_resumed: u64,
    /// Labels were added to present content.
    pub(crate) relabelled: bool,
}

/// Makes `item` present with its labels, held by `lease`: skips it if present, else
/// writes it.
pub(crate) async fn ensure(
    conn: &Conn,
    lease: &str,
    item: &ContentItem,
    progress: Option<&Progress>,
) -> Result<ContentOutcome, ContainerdError> {
    let deadline = tokio::time::Instant::now() + conn.timeout() * 4;
    let mut restarted = false;
    super::lease::hold(conn, lease, "content", &item.digest.to_string()).await?;
    loop {
        if let Some(info) = info(conn, lease, item.digest).await? {
            let relabelled =
                ensure_labels(conn, lease, item.digest, &info.labels, &item.labels).await?;
            if let Some(p) = progress {
                p.add(item.size);
            }
            return Ok(ContentOutcome {
                relabelled,
                ..ContentOutcome::default()
            });
        }
        match write(conn, lease, item, progress).await {
            Ok(out) => return Ok(out),
            // Someone else committed it between Info and Write: check its labels.
            Err(WriteError::AlreadyExists) => {}
            Err(WriteError::Restart) if !restarted => restarted = true,
            Err(WriteError::Restart) => {
                return Err(ContainerdError::Rpc {
                    op: "content write",
                    subject: item.digest.to_string(),
                    code: "Aborted".into(),
                    message:
                        "containerd kept an ingest that does not fit the blob after it was aborted"
                            .into(),
                });
            }
            // Another writer (a concurrent import of an image sharing this blob) holds
            // the ref: wait for it to finish, then find the blob present.
            Err(WriteError::Locked(s)) => {
                if tokio::time::Instant::now() > deadline {
                    return Err(conn.status_err("content write", &item.digest, &s));
                }
                tokio::time::sleep(LOCKED_RETRY).await;
            }
            // An interrupted earlier write left bytes that do not add up to the blob:
            // start over once from offset 0.
            Err(WriteError::Failed { error, resumed }) => {
                if resumed > 0
                    && !restarted
                    && matches!(
                        error,
                        ContainerdError::DigestMismatch { .. }
                            | ContainerdError::SizeMismatch { .. }
                    )
                {
                    restarted = true;
                    abort(conn, lease, item.digest).await?;
                    continue;
                }
                return Err(error);
            }
        }
    }
}

/// Content info, `None` if the namespace does not have it.
pub(crate) async fn info(
    conn: &Conn,
    lease: &str,
    digest: Digest,
) -> Result<Option<Info>, ContainerdError> {
    Ok(conn
        .call_unless(
            "content info",
            &digest,
            Code::NotFound,
            ContentClient::new(conn.channel.clone()).info(conn.request(
                InfoRequest {
                    digest: digest.to_string(),
                },
                Lease::Id(lease),
            )),
        )
        .await?
        .and_then(|r| r.info))
}

/// Adds the labels of `want` that `have` lacks or has with another value; true if any.
pub(crate) async fn ensure_labels(
    conn: &Conn,
    lease: &str,
    digest: Digest,
    have: &HashMap<String, String>,
    want: &BTreeMap<String, String>,
) -> Result<bool, ContainerdError> {
    let missing: HashMap<String, String> = want
        .iter()
        .filter(|(k, v)| have.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if missing.is_empty() {
        return Ok(false);
    }
    let paths = missing.keys().map(|k| format!("labels.{k}")).collect();
    conn.call(
        "content update",
        &digest,
        ContentClient::new(conn.channel.clone()).update(conn.request(
            UpdateRequest {
                info: Some(Info {
                    digest: digest.to_string(),
                    labels: missing,
                    ..Info::default()
                }),
                update_mask: Some(prost_types::FieldMask { paths }),
            },
            Lease::Id(lease),
        )),
    )
    .await?;
    Ok(true)
}

/// The ingest ref for a blob: stable, so a write interrupted by a crash is resumed.
fn ingest_ref(digest: Digest) -> String {
    format!("blobswarm-{digest}")
}

/// Drops the ingest of `digest`; none there counts as dropped.
async fn abort(conn: &Conn, lease: &str, digest: Digest) -> Result<(), ContainerdError> {
    conn.call_unless(
        "content abort",
        &digest,
        Code::NotFound,
        ContentClient::new(conn.channel.clone()).abort(conn.request(
            AbortRequest {
                r#ref: ingest_ref(digest),
            },
            Lease::Id(lease),
        )),
    )
    .await?;
    Ok(())
}

enum WriteError {
    AlreadyExists,
    /// An ingest with other expectations was aborted; write again from offset 0.
    Restart,
    Locked(Status),
    Failed {
        error: ContainerdError,
        resumed: u64,
    },
}

impl From<ContainerdError> for WriteError {
    fn from(error: ContainerdError) -> Self {
        Self::Failed { error, resumed: 0 }
    }
}

/// One Write session: the request sender and the response stream, in lock step.
struct Session<'a> {
    conn: &'a Conn,
    digest: Digest,
    tx: mpsc::Sender<WriteContentRequest>,
    rx: Streaming<WriteContentResponse>,
}

impl Session<'_> {
    /// Opens a Write stream for `digest` whose first message is `stat`, and reads its
    /// answer: how much of the blob an earlier, interrupted write left.
    async fn open<'c>(
        conn: &'c Conn,
        lease: &str,
        digest: Digest,
        stat: WriteContentRequest,
    ) -> Result<(Session<'c>, WriteContentResponse), WriteError> {
        // The first message must be queued before the call: containerd answers (and so
        // sends response headers) only after reading it.
        let (mut tx, rx) = mpsc::channel(1);
        tx.try_send(stat)
            .expect("a new channel has room for one message");
        let stream = conn
            .call_status(
                "content write",
                conn.timeout(),
                ContentClient::new(conn.channel.clone()).write(conn.request(rx, Lease::Id(lease))),
            )
            .await?
            .map_err(|s| classify(conn, "content write", digest, &s))?;
        let mut session = Session {
            conn,
            digest,
            tx,
            rx: stream,
        };
        // The STAT was already queued; read its answer.
        let status = session.answer("content write stat", true).await?;
        Ok((session, status))
    }

    async fn round(
        &mut self,
        op: &'static str,
        req: WriteContentRequest,
    ) -> Result<WriteContentResponse, WriteError> {
        // A failed send means the server ended the stream; its status is on `rx`.
        let sent = self.tx.send(req).await.is_ok();
        self.answer(op, sent).await
    }

    /// The next response on the stream; `sent` is false when the request before it could
    /// not be sent, and then only an error status is a useful answer.
    async fn answer(
        &mut self,
        op: &'static str,
        sent: bool,
    ) -> Result<WriteContentResponse, WriteError> {
        let timeout = self.conn.timeout();
        let next = tokio::time::timeout(timeout, self.rx.message()).await;
        match next {
            Err(_) => Err(ContainerdError::NotAnswering {
                path: self.conn.config.socket.clone(),
                op,
                timeout,
            }
            .into()),
            Ok(Ok(Some(resp))) if sent => Ok(resp),
            Ok(Ok(_)) => Err(ContainerdError::Disconnected {
                path: self.conn.config.socket.clone(),
                op,
                subject: self.digest.to_string(),
                message: "containerd ended the write stream".into(),
            }
            .into()),
            Ok(Err(s)) => Err(classify(self.conn, op, self.digest, &s)),
        }
    }
}

/// The token that follows `marker` in a containerd status message, up to one of `ends`.
fn token_after<'m>(message: &'m str, marker: &str, ends: &[char]) -> Option<&'m str> {
    message
        .split(marker)
        .nth(1)
        .and_then(|r| r.split(ends).next())
}

fn classify(conn: &Conn, op: &'static str, digest: Digest, s: &Status) -> WriteError {
    match s.code() {
        Code::AlreadyExists => WriteError::AlreadyExists,
        Code::Unavailable if s.message().contains("locked") => WriteError::Locked(s.clone()),
        Code::FailedPrecondition if s.message().contains("unexpected commit digest") => {
            let actual = token_after(s.message(), "unexpected commit digest ", &[',', ' '])
                .unwrap_or("another digest")
                .to_owned();
            ContainerdError::DigestMismatch { digest, actual }.into()
        }
        Code::FailedPrecondition if s.message().contains("unexpected commit size") => {
            let actual = token_after(s.message(), "unexpected commit size ", &[',', ' '])
                .unwrap_or("?")
                .to_owned();
            let expected = token_after(s.message(), "expected ", &[',', ':', ' '])
                .and_then(|n| n.parse().ok())
                .unwrap_or_default();
            ContainerdError::SizeMismatch {
                digest,
                expected,
                actual,
            }
            .into()
        }
        _ => conn.status_err(op, &digest, s).into(),
    }
}

/// One Write session from STAT to COMMIT: resumes where an interrupted write stopped.
async fn write(
    conn: &Conn,
    lease: &str,
    item: &ContentItem,
    progress: Option<&Progress>,
) -> Result<ContentOutcome, WriteError> {
    let size = i64::try_from(item.size).map_err(|_| ContainerdError::BadDocument {
        what: "blob",
        digest: item.digest,
        reason: format!("size {} does not fit containerd's int64", item.size),
    })?;
    let base = WriteContentRequest {
        r#ref: ingest_ref(item.digest),
        total: size,
        expected: item.digest.to_string(),
        ..WriteContentRequest::default()
    };
    let stat = WriteContentRequest {
        action: WriteAction::Stat as i32,
        ..base.clone()
    };
    let (mut session, status) = Session::open(conn, lease, item.digest, stat).await?;
    if status.offset < 0 || status.offset > size || (status.total != 0 && status.total != size) {
        // Left over from a write with other expectations; start from scratch.
        drop(session);
        abort(conn, lease, item.digest).await?;
        return Err(WriteError::Restart);
    }
    let resumed = u64::try_from(status.offset).unwrap_or(0);
    send_from(&mut session, item, &base, status.offset, progress)
        .await
        .map_err(|e| with_resumed(e, resumed))?;
    commit(session, lease, item, base)
        .await
        .map_err(|e| with_resumed(e, resumed))?;
    Ok(ContentOutcome {
        written: true,
        bytes_sent: item.size - resumed,
        bytes_resumed: resumed,
        relabelled: false,
    })
}

/// WRITEs the item's bytes from `offset` (where containerd's ingest stands) to its end.
async fn send_from(
    session: &mut Session<'_>,
    item: &ContentItem,
    base: &WriteContentRequest,
    mut offset: i64,
    progress: Option<&Progress>,
) -> Result<(), WriteError> {
    let size = base.total;
    let resumed = u64::try_from(offset).unwrap_or(0);
    let mut reader = Reader::open(&item.source, resumed).await?;
    if let Some(p) = progress {
        p.add(resumed);
    }
    let mut buf = vec![0u8; WRITE_CHUNK];
    while offset < size {
        let want = usize::try_from(size - offset)
            .unwrap_or(usize::MAX)
            .min(WRITE_CHUNK);
        let n = reader.fill(&mut buf[..want]).await?;
        if n == 0 {
            return Err(ContainerdError::BlobSize {
                digest: item.digest,
                path: reader.path(),
                expected: item.size,
                actual: u64::try_from(offset).unwrap_or(0),
            }
            .into());
        }
        let resp = session
            .round(
                "content write",
                WriteContentRequest {
                    action: WriteAction::Write as i32,
                    offset,
                    data: buf[..n].to_vec(),
                    ..base.clone()
                },
            )
            .await?;
        offset += n as i64;
        if let Some(p) = progress {
            p.add(n as u64);
        }
        if resp.offset != offset {
            return Err(ContainerdError::Rpc {
                op: "content write",
                subject: base.expected.clone(),
                code: "OutOfRange".into(),
                message: format!("containerd is at offset {}, expected {offset}", resp.offset),
            }
            .into());
        }
    }
    Ok(())
}

/// COMMITs the written bytes with the item's labels; containerd re-hashes them. Bad bytes
/// are aborted so a retry does not resume after them.
async fn commit(
    mut session: Session<'_>,
    lease: &str,
    item: &ContentItem,
    base: WriteContentRequest,
) -> Result<(), WriteError> {
    let expected = base.expected.clone();
    let commit = session
        .round(
            "content commit",
            WriteContentRequest {
                action: WriteAction::Commit as i32,
                // Offset 0 would tell containerd to truncate what was written.
                offset: base.total,
                labels: item.labels.clone().into_iter().collect(),
                ..base
            },
        )
        .await;
    let commit = match commit {
        Err(WriteError::Failed { error, resumed }) => {
            if matches!(
                error,
                ContainerdError::DigestMismatch { .. } | ContainerdError::SizeMismatch { .. }
            ) {
                // Drop the bad bytes so a retry does not resume after them.
                let conn = session.conn;
                drop(session);
                let _ = abort(conn, lease, item.digest).await;
            }
            return Err(WriteError::Failed { error, resumed });
        }
        other => other?,
    };
    if !commit.digest.is_empty() && commit.digest != expected {
        return Err(ContainerdError::DigestMismatch {
            digest: item.digest,
            actual: commit.digest,
        }
        .into());
    }
    Ok(())
}

fn with_resumed(e: WriteError, resumed: u64) -> WriteError {
    match e {
        WriteError::Failed { error, .. } => WriteError::Failed { error, resumed },
        other => other,
    }
}

/// Reads an item's bytes from its file or memory, from an offset.
enum Reader<'a> {
    File(tokio::fs::File, &'a std::path::Path),
    Bytes(&'a [u8]),
}

impl<'a> Reader<'a> {
    async fn open(source: &'a Source, offset: u64) -> Result<Self, ContainerdError> {
        match source {
            Source::File(path) => {
                let mut f = tokio::fs::File::open(path)
                    .await
                    .map_err(io_err("opening", path))?;
                if offset > 0 {
                    f.seek(std::io::SeekFrom::Start(offset))
                        .await
                        .map_err(io_err("seeking in", path))?;
                }
                Ok(Self::File(f, path))
            }
            Source::Bytes(b) => Ok(Self::Bytes(
                b.get(usize::try_from(offset).unwrap_or(usize::MAX)..)
                    .unwrap_or_default(),
            )),
        }
    }

    fn path(&self) -> std::path::PathBuf {
        match self {
            Self::File(_, p) => p.to_path_buf(),
            Self::Bytes(_) => "<memory>".into(),
        }
    }

    /// Fills `buf` unless the source ends first; returns the bytes read.
    async fn fill(&mut self, buf: &mut [u8]) -> Result<usize, ContainerdError> {
        match self {
            Self::File(f, path) => {
                let mut n = 0;
                while n < buf.len() {
                    let m = f
                        .read(&mut buf[n..])
                        .await
                        .map_err(io_err("reading", path))?;
                    if m == 0 {
                        break;
                    }
                    n += m;
                }
                Ok(n)
            }
            Self::Bytes(b) => {
                let n = b.len().min(buf.len());
                buf[..n].copy_from_slice(&b[..n]);
                *b = &b[n..];
                Ok(n)
            }
        }
    }
}
