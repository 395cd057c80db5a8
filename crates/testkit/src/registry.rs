//! A real CNCF distribution registry (`docker-registry serve`) on 127.0.0.1, with
//! its access log parsed so tests can count what clients fetched.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::credentials::htpasswd_line;
use crate::token_auth::{TOKEN_ISSUER, TOKEN_SERVICE, TokenServer};
use crate::{free_port, http_get_status};

/// How the registry authenticates clients.
#[derive(Debug, Clone, Copy)]
enum AuthMode<'a> {
    Anonymous,
    /// htpasswd (bcrypt) with [`crate::TEST_USER`]/[`crate::TEST_PASSWORD`].
    Basic,
    /// Bearer tokens from this token service.
    Token(&'a TokenServer),
}

const STARTUP_TIMEOUT: Duration = Duration::from_secs(15);

/// A running `docker-registry` child process, killed on drop.
#[derive(Debug)]
pub struct Registry {
    child: Child,
    addr: String,
    log_path: PathBuf,
    dir: PathBuf,
}

/// A position in the registry log; see [`Registry::mark_log`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct LogMark(u64);

/// One request line of the access log (combined log format), e.g.
/// `127.0.0.1 - - [23/Nov/2026:09:17:44 +0000] "GET /v2/test/img/blobs/sha256:… HTTP/1.1" 200 110 "" "curl/7.88.1"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogEntry {
    /// HTTP method, e.g. `GET`.
    pub method: String,
    /// Request path including any query string.
    pub path: String,
    /// HTTP status code of the response.
    pub status: u16,
}

impl AccessLogEntry {
    /// Parses one access-log line; `None` for any other line (the registry's
    /// structured `time=… level=…` lines share the log file).
    pub fn parse(line: &str) -> Option<Self> {
        // `<host> - <user> [<date>] "<METHOD> <path> <proto>" <status> <bytes> "<referer>" "<agent>"`
        let (_, rest) = line.split_once("] \"")?;
        let (request, rest) = rest.split_once("\" ")?;
        let mut parts = request.split(' ');
        let method = parts.next()?.to_owned();
        let path = parts.next()?.to_owned();
        let proto = parts.next()?;
        if !proto.starts_with("HTTP/") || parts.next().is_some() {
            return None;
        }
        let status = rest.split(' ').next()?.parse().ok()?;
        Some(Self {
            method,
            path,
            status,
        })
    }

    /// The `sha256:<hex>` digest if this is a request to `/v2/<repo>/blobs/sha256:<hex>`.
    pub fn blob_digest(&self) -> Option<&str> {
        let path = self.path.split('?').next()?;
        let rest = path.strip_prefix("/v2/")?;
        let (_repo, digest) = rest.rsplit_once("/blobs/")?;
        let hex = digest.strip_prefix("sha256:")?;
        (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(digest)
    }

    /// The reference (tag or digest) if this is a request to `/v2/<repo>/manifests/<ref>`.
    pub fn manifest_reference(&self) -> Option<&str> {
        let path = self.path.split('?').next()?;
        let rest = path.strip_prefix("/v2/")?;
        let (_repo, reference) = rest.rsplit_once("/manifests/")?;
        Some(reference)
    }
}

impl Registry {
    /// Starts an anonymous-access registry storing its data under `tmp`, listening on
    /// a free port of 127.0.0.1. Panics (with the registry log) if it does not answer
    /// `GET /v2/` within 15 s.
    pub fn start(tmp: &Path) -> Self {
        Self::start_inner(tmp, AuthMode::Anonymous, "")
    }

    /// Like [`Registry::start`], and sends push notifications (the distribution
    /// registry's `notifications: endpoints:`) to `url` with `Authorization: Bearer token`.
    pub fn start_with_notifications(tmp: &Path, url: &str, token: &str) -> Self {
        let extra = format!(
            "notifications:\n  endpoints:\n    - name: blobswarm\n      url: {url}\n      \
             headers:\n        Authorization: [\"Bearer {token}\"]\n      timeout: 5s\n      \
             threshold: 3\n      backoff: 1s\n"
        );
        Self::start_inner(tmp, AuthMode::Anonymous, &extra)
    }

    /// Like [`Registry::start`] but requiring HTTP basic auth as
    /// [`crate::TEST_USER`]/[`crate::TEST_PASSWORD`] (an htpasswd file generated with bcrypt).
    pub fn start_with_basic_auth(tmp: &Path) -> Self {
        Self::start_inner(tmp, AuthMode::Basic, "")
    }

    /// Like [`Registry::start`] but requiring bearer tokens from `tokens` (which
    /// issues them for [`crate::TEST_USER`]/[`crate::TEST_PASSWORD`]).
    pub fn start_with_token_auth(tmp: &Path, tokens: &TokenServer) -> Self {
        Self::start_inner(tmp, AuthMode::Token(tokens), "")
    }

    fn start_inner(tmp: &Path, auth: AuthMode<'_>, extra: &str) -> Self {
        // The port was free when we looked; another process may take it before the
        // registry binds it, so retry a few times if the registry dies at start-up.
        let mut last_log = String::new();
        for attempt in 0..3 {
            let dir = tmp.join(format!("registry-{attempt}"));
            match Self::try_start(&dir, auth, extra) {
                Ok(registry) => return registry,
                Err(log) => last_log = log,
            }
        }
        panic!("docker-registry exited during start-up three times; last log:\n{last_log}");
    }

    fn try_start(dir: &Path, auth_mode: AuthMode<'_>, extra: &str) -> Result<Self, String> {
        fs::create_dir_all(dir.join("storage")).expect("create registry storage dir");
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let auth = match auth_mode {
            AuthMode::Anonymous => String::new(),
            AuthMode::Basic => {
                let htpasswd = dir.join("htpasswd");
                fs::write(&htpasswd, htpasswd_line()).expect("write htpasswd");
                format!(
                    "auth:\n  htpasswd:\n    realm: blobswarm-test\n    path: {}\n",
                    htpasswd.display()
                )
            }
            AuthMode::Token(tokens) => format!(
                "auth:\n  token:\n    realm: {}\n    service: {TOKEN_SERVICE}\n    \
                 issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
                tokens.realm(),
                tokens.cert_path().display()
            ),
        };
        let config = format!(
            "version: 0.1\n\
             log:\n  level: info\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n\
             http:\n  addr: {addr}\n  secret: blobswarm-test-secret\n\
             {auth}{extra}",
            storage = dir.join("storage").display(),
        );
        let config_path = dir.join("config.yml");
        fs::write(&config_path, config).expect("write registry config.yml");
        let log_path = dir.join("registry.log");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("create registry log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log fd"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("could not start docker-registry: {e}"));
        let mut registry = Self {
            child,
            addr,
            log_path,
            dir: dir.to_owned(),
        };
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(status) = registry.child.try_wait().expect("poll registry child") {
                return Err(format!("exit status {status}\n{}", registry.log()));
            }
            if let Some(code) = http_get_status(&registry.addr, "/v2/") {
                // 401 is the expected answer of a registry that requires auth.
                if code == 200 || (!matches!(auth_mode, AuthMode::Anonymous) && code == 401) {
                    return Ok(registry);
                }
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry at {} did not answer GET /v2/ within {STARTUP_TIMEOUT:?}; log:\n{}",
                registry.addr,
                registry.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        self.addr.clone()
    }

    /// The file the registry's stdout and stderr (access log included) go to.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The registry's working directory (config, storage, log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The whole log so far, for failure messages.
    pub fn log(&self) -> String {
        fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Marks the current end of the log so that later counts only see requests made
    /// after this call. The registry writes an access-log line just after the
    /// response, so this first waits (at most 5 s) for the log to stop growing for
    /// 300 ms, so that lines of earlier requests (e.g. the push) land before the mark.
    pub fn mark_log(&self) -> LogMark {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut len = self.log_len();
        let mut stable_since = Instant::now();
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            let now = self.log_len();
            if now != len {
                len = now;
                stable_since = Instant::now();
            } else if stable_since.elapsed() >= Duration::from_millis(300) {
                break;
            }
        }
        LogMark(len)
    }

    fn log_len(&self) -> u64 {
        fs::metadata(&self.log_path).map(|m| m.len()).unwrap_or(0)
    }

    /// Access-log entries written after `mark`.
    pub fn access_log_since(&self, mark: LogMark) -> Vec<AccessLogEntry> {
        let mut file = File::open(&self.log_path).expect("open registry log");
        file.seek(SeekFrom::Start(mark.0))
            .expect("seek registry log");
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).expect("read registry log");
        String::from_utf8_lossy(&bytes)
            .lines()
            .filter_map(AccessLogEntry::parse)
            .collect()
    }

    /// Number of successful (2xx) `GET /v2/<repo>/blobs/sha256:<hex>` requests per
    /// digest (`sha256:<hex>`) since the registry started. HEAD requests are not counted.
    pub fn blob_gets(&self) -> HashMap<String, usize> {
        self.blob_gets_since(LogMark(0))
    }

    /// Like [`Registry::blob_gets`], counting only requests logged after `mark`.
    pub fn blob_gets_since(&self, mark: LogMark) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for entry in self.access_log_since(mark) {
            if entry.method == "GET"
                && (200..300).contains(&entry.status)
                && let Some(digest) = entry.blob_digest()
            {
                *counts.entry(digest.to_owned()).or_insert(0) += 1;
            }
        }
        counts
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_access_log_lines() {
        let line = r#"127.0.0.1 - - [23/Nov/2026:09:17:44 +0000] "GET /v2/test/img/blobs/sha256:4675a6edea99a03510c05381ae4edaf4b4b7dc0babcce573d1ab66928f88ba28 HTTP/1.1" 200 110 "" "curl/7.88.1""#;
        let e = AccessLogEntry::parse(line).unwrap();
        assert_eq!(e.method, "GET");
        assert_eq!(e.status, 200);
        assert_eq!(
            e.blob_digest(),
            Some("sha256:4675a6edea99a03510c05381ae4edaf4b4b7dc0babcce573d1ab66928f88ba28")
        );
        let put = r#"127.0.0.1 - - [23/Nov/2026:09:17:44 +0000] "PUT /v2/test/img/manifests/v1 HTTP/1.1" 201 0 "" "skopeo/1.9.3""#;
        let e = AccessLogEntry::parse(put).unwrap();
        assert_eq!((e.method.as_str(), e.status), ("PUT", 201));
        assert_eq!(e.blob_digest(), None);
        assert_eq!(e.manifest_reference(), Some("v1"));
        let structured = r#"time="2026-11-23T09:17:44.52Z" level=info msg="response completed" http.request.method=GET http.request.uri="/v2/" http.response.status=200"#;
        assert_eq!(AccessLogEntry::parse(structured), None);
    }
}
