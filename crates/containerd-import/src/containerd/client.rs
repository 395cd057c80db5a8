//! The gRPC connection: connecting with actionable errors, request metadata
//! (`containerd-namespace`, `containerd-lease`), timeouts and status mapping.

use std::fmt::Display;
use std::future::Future;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::time::Duration;

use containerd_client::services::v1::version_client::VersionClient;
use containerd_client::services::v1::{PluginsRequest, introspection_client::IntrospectionClient};
use containerd_client::tonic::metadata::MetadataValue;
use containerd_client::tonic::transport::Channel;
use containerd_client::tonic::{Code, Request, Response, Status};

use super::{ContainerdConfig, ContainerdError};

/// Plugin type of snapshotters in containerd's introspection API.
const SNAPSHOTTER_PLUGIN_TYPE: &str = "io.containerd.snapshotter.v1";

/// A connected channel plus the config every request is built from.
#[derive(Debug, Clone)]
pub(crate) struct Conn {
    pub(crate) channel: Channel,
    pub(crate) config: ContainerdConfig,
}

/// What a request needs besides its message: the lease its resources are held by.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Lease<'a> {
    None,
    Id(&'a str),
}

impl Conn {
    /// Connects to `config.socket`, checks containerd answers and that the snapshotter is
    /// loaded; each failure becomes the [`ContainerdError`] variant an operator can act on.
    pub(crate) async fn connect(config: ContainerdConfig) -> Result<Self, ContainerdError> {
        config.validate()?;
        let path = config.socket.clone();
        probe_socket(&path, config.timeout).await?;
        let channel =
            match tokio::time::timeout(config.timeout, containerd_client::connect(&path)).await {
                Err(_) => {
                    return Err(ContainerdError::NotAnswering {
                        path,
                        op: "connect",
                        timeout: config.timeout,
                    });
                }
                Ok(Err(e)) => {
                    return Err(ContainerdError::Disconnected {
                        path,
                        op: "connect",
                        subject: String::new(),
                        message: error_chain(&e),
                    });
                }
                Ok(Ok(c)) => c,
            };
        let conn = Self { channel, config };
        conn.ping().await?;
        conn.check_snapshotter().await?;
        Ok(conn)
    }

    /// One version call: does containerd still answer?
    pub(crate) async fn ping(&self) -> Result<(), ContainerdError> {
        self.call(
            "version",
            &"",
            VersionClient::new(self.channel.clone()).version(self.request((), Lease::None)),
        )
        .await?;
        Ok(())
    }

    pub(crate) const fn timeout(&self) -> Duration {
        self.config.timeout
    }

    /// `msg` with the namespace (and lease) metadata every containerd request needs.
    pub(crate) fn request<T>(&self, msg: T, lease: Lease<'_>) -> Request<T> {
        let mut req = Request::new(msg);
        let md = req.metadata_mut();
        md.insert(
            "containerd-namespace",
            MetadataValue::try_from(self.config.namespace.as_str())
                .expect("validated namespace is ASCII"),
        );
        if let Lease::Id(id) = lease {
            md.insert(
                "containerd-lease",
                MetadataValue::try_from(id).expect("lease ids are ASCII"),
            );
        }
        req
    }

    /// Awaits `fut` for at most `timeout`; a timeout is an error, a gRPC status is returned
    /// for the caller to inspect (NotFound and AlreadyExists are often expected).
    pub(crate) async fn call_status<T>(
        &self,
        op: &'static str,
        timeout: Duration,
        fut: impl Future<Output = Result<Response<T>, Status>>,
    ) -> Result<Result<T, Status>, ContainerdError> {
        match tokio::time::timeout(timeout, fut).await {
            Err(_) => Err(ContainerdError::NotAnswering {
                path: self.config.socket.clone(),
                op,
                timeout,
            }),
            Ok(r) => Ok(r.map(Response::into_inner)),
        }
    }

    /// [`Self::call_status`] within the configured timeout, with every status an error.
    pub(crate) async fn call<T>(
        &self,
        op: &'static str,
        subject: &(dyn Display + Sync),
        fut: impl Future<Output = Result<Response<T>, Status>>,
    ) -> Result<T, ContainerdError> {
        self.call_status(op, self.timeout(), fut)
            .await?
            .map_err(|s| self.status_err(op, subject, &s))
    }

    /// [`Self::call`] with a status of `code` (the outcome the caller expects besides
    /// success, such as NotFound or AlreadyExists) as `None`.
    pub(crate) async fn call_unless<T>(
        &self,
        op: &'static str,
        subject: &(dyn Display + Sync),
        code: Code,
        fut: impl Future<Output = Result<Response<T>, Status>>,
    ) -> Result<Option<T>, ContainerdError> {
        match self.call_status(op, self.timeout(), fut).await? {
            Ok(v) => Ok(Some(v)),
            Err(s) if s.code() == code => Ok(None),
            Err(s) => Err(self.status_err(op, subject, &s)),
        }
    }

    /// The error for a gRPC status: transport failures become [`ContainerdError::Disconnected`].
    pub(crate) fn status_err(
        &self,
        op: &'static str,
        subject: &(dyn Display + Sync),
        s: &Status,
    ) -> ContainerdError {
        if is_transport_failure(s) {
            ContainerdError::Disconnected {
                path: self.config.socket.clone(),
                op,
                subject: subject.to_string(),
                message: one_line(s.message()),
            }
        } else {
            ContainerdError::Rpc {
                op,
                subject: subject.to_string(),
                code: format!("{:?}", s.code()),
                message: one_line(s.message()),
            }
        }
    }

    /// Fails with [`ContainerdError::SnapshotterUnavailable`] unless the configured
    /// snapshotter loaded without error.
    async fn check_snapshotter(&self) -> Result<(), ContainerdError> {
        let plugins = self
            .call(
                "introspection plugins",
                &SNAPSHOTTER_PLUGIN_TYPE,
                IntrospectionClient::new(self.channel.clone())
                    .plugins(self.request(PluginsRequest { filters: vec![] }, Lease::None)),
            )
            .await?
            .plugins;
        let snapshotters: Vec<_> = plugins
            .iter()
            .filter(|p| p.r#type == SNAPSHOTTER_PLUGIN_TYPE)
            .collect();
        let available: Vec<String> = snapshotters
            .iter()
            .filter(|p| p.init_err.is_none())
            .map(|p| p.id.clone())
            .collect();
        let name = &self.config.snapshotter;
        let reason = match snapshotters.iter().find(|p| &p.id == name) {
            Some(p) => match &p.init_err {
                None => return Ok(()),
                Some(e) => format!("it failed to load: {}", one_line(&e.message)),
            },
            None => "no such snapshotter plugin".to_owned(),
        };
        Err(ContainerdError::SnapshotterUnavailable {
            name: name.clone(),
            reason,
            available,
        })
    }
}

/// Classifies why the socket cannot be used, before gRPC hides the OS error.
async fn probe_socket(path: &Path, timeout: Duration) -> Result<(), ContainerdError> {
    use std::io::ErrorKind;
    let owned = || path.to_owned();
    match std::fs::metadata(path) {
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(ContainerdError::SocketMissing { path: owned() });
        }
        Err(e) if e.kind() == ErrorKind::PermissionDenied => {
            return Err(ContainerdError::PermissionDenied { path: owned() });
        }
        Err(source) => {
            return Err(ContainerdError::Io {
                op: "inspecting socket",
                path: owned(),
                source,
            });
        }
        Ok(m) if !m.file_type().is_socket() => {
            return Err(ContainerdError::NotASocket { path: owned() });
        }
        Ok(_) => {}
    }
    match tokio::time::timeout(timeout, tokio::net::UnixStream::connect(path)).await {
        Err(_) => Err(ContainerdError::NotAnswering {
            path: owned(),
            op: "connect",
            timeout,
        }),
        Ok(Ok(_stream)) => Ok(()),
        Ok(Err(e)) => Err(match e.kind() {
            ErrorKind::NotFound => ContainerdError::SocketMissing { path: owned() },
            ErrorKind::PermissionDenied => ContainerdError::PermissionDenied { path: owned() },
            ErrorKind::ConnectionRefused => ContainerdError::Refused { path: owned() },
            _ => ContainerdError::Io {
                op: "connecting to",
                path: owned(),
                source: e,
            },
        }),
    }
}

/// Whether a status means the connection broke rather than containerd refusing.
fn is_transport_failure(s: &Status) -> bool {
    match s.code() {
        // containerd answers Unavailable for a locked ingest ref; that is not a transport issue.
        Code::Unavailable => !s.message().contains("locked"),
        Code::Unknown | Code::Internal | Code::Cancelled => {
            let m = s.message().to_ascii_lowercase();
            [
                "transport",
                "connection",
                "broken pipe",
                "h2 protocol",
                "stream closed",
            ]
            .iter()
            .any(|w| m.contains(w))
        }
        _ => false,
    }
}

/// The error and its sources on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let chain: Vec<String> = std::iter::successors(Some(e), |e| e.source())
        .map(ToString::to_string)
        .collect();
    one_line(&chain.join(": "))
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
