//! Docker credential helpers: the programs (`docker-credential-ecr-login`, `-gcr`,
//! `-acr-env`, `-pass`, …) that a docker `config.json` names in `credHelpers` or
//! `credsStore` to hand out registry credentials.
//!
//! The protocol is docker's: `docker-credential-<name> get`, found on `PATH`, reads the
//! server (`host[:port]`, or `https://index.docker.io/v1/` for Docker Hub) on stdin and
//! prints `{"ServerURL": …, "Username": …, "Secret": …}` with exit status 0; on failure
//! it prints a message and exits non-zero, the message
//! `credentials not found in native keychain` meaning it has nothing for that server
//! (then the registry is read anonymously, as docker does).
//!
//! A helper is an external program, so everything about running it is bounded: it is
//! killed after [`HELPER_TIMEOUT`], and an answer longer than [`MAX_HELPER_OUTPUT`] is
//! refused. Its answers carry no expiry, so they are cached per (helper, server) for
//! [`HELPER_CACHE_TTL`]; a source whose registry refuses the cached credentials asks the
//! helper again once. Errors name the helper and the registry, never the secret.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::process::{Child, Command};
use tokio::sync::Mutex;

/// How long a helper may take to answer before it is killed.
pub const HELPER_TIMEOUT: Duration = Duration::from_secs(10);
/// The most bytes a helper may print on stdout (and on stderr); more is refused. A
/// credential answer is a few hundred bytes; cloud tokens a few KiB.
pub const MAX_HELPER_OUTPUT: usize = 64 * 1024;
/// How long a helper's answer is reused (helpers return no expiry; cloud registry tokens
/// live for hours, so five minutes is well inside any of them).
pub const HELPER_CACHE_TTL: Duration = Duration::from_secs(5 * 60);
/// Most (helper, server) answers cached; the oldest goes first.
const MAX_CACHED: usize = 256;
/// What docker's helpers print (and exit non-zero) when they hold nothing for a server.
const NOT_FOUND: &str = "credentials not found in native keychain";
/// The user name that marks `Secret` as an identity (OAuth2 refresh) token.
const IDENTITY_TOKEN_USER: &str = "<token>";
/// Longest helper message quoted in an error.
const MAX_MESSAGE_CHARS: usize = 300;

/// One credential helper asked about one server: what a docker config names for a
/// registry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Helper {
    /// `docker-credential-<name>`.
    program: String,
    /// What the helper is asked about (written to its stdin).
    server: String,
}

impl Helper {
    /// The helper `docker-credential-<name>` asked about `server`; None when `name` is
    /// empty or holds anything but ASCII letters, digits, `.`, `_` and `-` (so it can only
    /// name a program on `PATH`, never a path).
    pub(crate) fn new(name: &str, server: &str) -> Option<Self> {
        let valid = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        valid.then(|| Self {
            program: format!("docker-credential-{name}"),
            server: server.to_owned(),
        })
    }

    /// The program run, `docker-credential-<name>`, for messages.
    pub(crate) fn program(&self) -> &str {
        &self.program
    }
}

/// Why a credential helper gave no credentials. Each variant names the program and the
/// registry (server) it was asked about; none holds the secret.
#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    /// The program is not on `PATH` (or its interpreter is missing).
    #[error("credential helper {program} for registry {registry}: not found on PATH")]
    NotFound {
        /// `docker-credential-<name>`.
        program: String,
        /// The server it was asked about.
        registry: String,
    },
    /// Starting it or talking to it failed.
    #[error("credential helper {program} for registry {registry}: {cause}")]
    Io {
        /// `docker-credential-<name>`.
        program: String,
        /// The server it was asked about.
        registry: String,
        /// The I/O error.
        cause: String,
    },
    /// It did not finish within the timeout and was killed.
    #[error(
        "credential helper {program} for registry {registry}: no answer within {} ms; killed",
        .after.as_millis()
    )]
    Timeout {
        /// `docker-credential-<name>`.
        program: String,
        /// The server it was asked about.
        registry: String,
        /// The timeout.
        after: Duration,
    },
    /// It printed more than [`MAX_HELPER_OUTPUT`] bytes.
    #[error(
        "credential helper {program} for registry {registry}: printed more than {limit} bytes; refused"
    )]
    OutputTooLarge {
        /// `docker-credential-<name>`.
        program: String,
        /// The server it was asked about.
        registry: String,
        /// The limit in bytes.
        limit: usize,
    },
    /// It exited unsuccessfully.
    #[error("credential helper {program} for registry {registry} failed ({status}): {message}")]
    Failed {
        /// `docker-credential-<name>`.
        program: String,
        /// The server it was asked about.
        registry: String,
        /// How it exited.
        status: ExitStatus,
        /// What it printed (stdout, else stderr), shortened to one line.
        message: String,
    },
    /// It succeeded but stdout is not the credential JSON.
    #[error(
        "credential helper {program} for registry {registry}: answer is not the JSON \
         {{\"Username\", \"Secret\"}}: {reason}"
    )]
    BadAnswer {
        /// `docker-credential-<name>`.
        program: String,
        /// The server it was asked about.
        registry: String,
        /// Where the JSON broke (never its content, which may hold the secret).
        reason: String,
    },
    /// It answered with an identity token (user name `<token>`), which is exchanged
    /// through docker's OAuth2 flow, not supported here.
    #[error(
        "credential helper {program} for registry {registry}: answered with an identity token \
         (Username \"<token>\"), which blobswarm cannot use; configure it to return a user \
         name and password or registry token"
    )]
    IdentityToken {
        /// `docker-credential-<name>`.
        program: String,
        /// The server it was asked about.
        registry: String,
    },
}

/// A user name and secret, as a helper answered.
type Found = Option<(String, String)>;

struct Cached {
    at: Instant,
    found: Found,
}

/// Runs credential helpers and remembers their answers for [`HELPER_CACHE_TTL`]. Cheap to
/// clone: clones share the cache, so every source built from one
/// [`SourceOptions`](super::SourceOptions) asks a helper once per TTL, not once per image.
#[derive(Clone)]
pub struct CredentialHelpers {
    timeout: Duration,
    ttl: Duration,
    search_path: Option<OsString>,
    cache: Arc<Mutex<HashMap<Helper, Cached>>>,
}

impl Default for CredentialHelpers {
    fn default() -> Self {
        Self {
            timeout: HELPER_TIMEOUT,
            ttl: HELPER_CACHE_TTL,
            search_path: None,
            cache: Arc::default(),
        }
    }
}

impl fmt::Debug for CredentialHelpers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialHelpers")
            .field("timeout", &self.timeout)
            .field("ttl", &self.ttl)
            .field("search_path", &self.search_path)
            .finish_non_exhaustive()
    }
}

/// Why talking to the child failed, before it is named.
enum Talk {
    TooLarge,
    Io(std::io::Error),
}

impl From<std::io::Error> for Talk {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Answer {
    #[serde(default)]
    username: String,
    #[serde(default)]
    secret: String,
}

impl CredentialHelpers {
    /// Kills a helper that has not answered after `timeout` (default [`HELPER_TIMEOUT`]).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Reuses an answer for `ttl` (default [`HELPER_CACHE_TTL`]; zero asks every time).
    #[must_use]
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Looks helpers up on `path` (a `PATH`-style list; also the helpers' own `PATH`)
    /// instead of this process's `PATH`: for embedding and tests.
    #[must_use]
    pub fn with_search_path(mut self, path: impl Into<OsString>) -> Self {
        self.search_path = Some(path.into());
        self
    }

    /// The credentials `helper` holds (None: it has none, read anonymously), from the
    /// cache unless `refresh` or the cached answer is older than the TTL. Helpers run
    /// one at a time; errors are not cached.
    pub(crate) async fn get(&self, helper: &Helper, refresh: bool) -> Result<Found, HelperError> {
        let mut cache = self.cache.lock().await;
        if !refresh
            && let Some(hit) = cache.get(helper)
            && hit.at.elapsed() < self.ttl
        {
            return Ok(hit.found.clone());
        }
        cache.remove(helper);
        let found = self.run(helper).await?;
        let now = Instant::now();
        cache.retain(|_, c| now.duration_since(c.at) < self.ttl);
        if cache.len() >= MAX_CACHED
            && let Some(oldest) = cache
                .iter()
                .min_by_key(|(_, c)| c.at)
                .map(|(h, _)| h.clone())
        {
            cache.remove(&oldest);
        }
        cache.insert(
            helper.clone(),
            Cached {
                at: now,
                found: found.clone(),
            },
        );
        Ok(found)
    }

    /// Runs `helper get` once, bounded in time and output.
    async fn run(&self, helper: &Helper) -> Result<Found, HelperError> {
        let program = helper.program.clone();
        let registry = helper.server.clone();
        let mut cmd = Command::new(&helper.program);
        cmd.arg("get")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(path) = &self.search_path {
            cmd.env("PATH", path);
        }
        let mut child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(HelperError::NotFound { program, registry });
            }
            Err(e) => {
                return Err(HelperError::Io {
                    program,
                    registry,
                    cause: format!("cannot start it: {e}"),
                });
            }
        };
        let talked = tokio::time::timeout(self.timeout, talk(&mut child, &helper.server)).await;
        let (status, stdout, stderr) = match talked {
            Ok(Ok(output)) => output,
            Ok(Err(e)) => {
                let _ = child.start_kill();
                return Err(match e {
                    Talk::TooLarge => HelperError::OutputTooLarge {
                        program,
                        registry,
                        limit: MAX_HELPER_OUTPUT,
                    },
                    Talk::Io(e) => HelperError::Io {
                        program,
                        registry,
                        cause: e.to_string(),
                    },
                });
            }
            Err(_) => {
                let _ = child.start_kill();
                return Err(HelperError::Timeout {
                    program,
                    registry,
                    after: self.timeout,
                });
            }
        };
        interpret(helper, status, &stdout, &stderr)
    }
}

/// Writes the server to the child's stdin and reads its (bounded) output until it exits.
async fn talk(child: &mut Child, server: &str) -> Result<(ExitStatus, Vec<u8>, Vec<u8>), Talk> {
    let stdin = child.stdin.take();
    let write = async move {
        if let Some(mut stdin) = stdin {
            // A helper may exit without reading its stdin; its answer decides, not the pipe.
            let _ = stdin.write_all(server.as_bytes()).await;
        }
        Ok::<(), Talk>(())
    };
    let ((), stdout, stderr) = tokio::try_join!(
        write,
        read_bounded(child.stdout.take()),
        read_bounded(child.stderr.take())
    )?;
    let status = child.wait().await?;
    Ok((status, stdout, stderr))
}

/// Everything `pipe` carries, refused past [`MAX_HELPER_OUTPUT`] bytes.
async fn read_bounded(pipe: Option<impl AsyncRead + Unpin>) -> Result<Vec<u8>, Talk> {
    let mut out = Vec::new();
    if let Some(pipe) = pipe {
        pipe.take(MAX_HELPER_OUTPUT as u64 + 1)
            .read_to_end(&mut out)
            .await?;
    }
    if out.len() > MAX_HELPER_OUTPUT {
        return Err(Talk::TooLarge);
    }
    Ok(out)
}

/// What a finished helper's exit status and output mean.
fn interpret(
    helper: &Helper,
    status: ExitStatus,
    stdout: &[u8],
    stderr: &[u8],
) -> Result<Found, HelperError> {
    let program = || helper.program.clone();
    let registry = || helper.server.clone();
    if !status.success() {
        let said = |bytes: &[u8]| {
            String::from_utf8_lossy(bytes)
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        };
        let mut message = said(stdout);
        if message.is_empty() {
            message = said(stderr);
        }
        if message == NOT_FOUND {
            tracing::debug!(program = %helper.program, registry = %helper.server,
                "the credential helper has no credentials for this registry; reading anonymously");
            return Ok(None);
        }
        if let Some((cut, _)) = message.char_indices().nth(MAX_MESSAGE_CHARS) {
            message.truncate(cut);
            message.push('…');
        }
        return Err(HelperError::Failed {
            program: program(),
            registry: registry(),
            status,
            message,
        });
    }
    let answer: Answer = serde_json::from_slice(stdout).map_err(|e| HelperError::BadAnswer {
        program: program(),
        registry: registry(),
        // serde's own message may quote a value (the secret): say only where it broke.
        reason: format!(
            "{} error at line {} column {}",
            match e.classify() {
                serde_json::error::Category::Io => "read",
                serde_json::error::Category::Syntax => "syntax",
                serde_json::error::Category::Data => "type",
                serde_json::error::Category::Eof => "unexpected end",
            },
            e.line(),
            e.column()
        ),
    })?;
    if answer.username == IDENTITY_TOKEN_USER {
        return Err(HelperError::IdentityToken {
            program: program(),
            registry: registry(),
        });
    }
    if answer.username.is_empty() && answer.secret.is_empty() {
        return Ok(None);
    }
    Ok(Some((answer.username, answer.secret)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helper_names_are_program_suffixes_only() {
        for good in [
            "ecr-login",
            "gcr",
            "acr-env",
            "pass",
            "osxkeychain",
            "a.b_c-1",
        ] {
            let h = Helper::new(good, "r:1").unwrap();
            assert_eq!(h.program(), format!("docker-credential-{good}"));
        }
        for bad in ["", "../x", "a/b", "x y", "a;b", "é", "$(id)"] {
            assert!(Helper::new(bad, "r:1").is_none(), "{bad:?}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn answers_are_interpreted_without_quoting_the_secret() {
        use std::os::unix::process::ExitStatusExt as _;
        let h = Helper::new("t", "r:1").unwrap();
        let ok = ExitStatus::from_raw(0);
        let failed = ExitStatus::from_raw(1 << 8);
        let good = br#"{"ServerURL":"r:1","Username":"u","Secret":"s3cret"}"#;
        assert_eq!(
            interpret(&h, ok, good, b"").unwrap(),
            Some(("u".into(), "s3cret".into()))
        );
        let none = format!("{NOT_FOUND}\n");
        assert_eq!(interpret(&h, failed, none.as_bytes(), b"").unwrap(), None);
        let err = interpret(&h, failed, b"", b"no  login\n for r:1").unwrap_err();
        assert!(
            err.to_string().contains("docker-credential-t")
                && err.to_string().contains("no login for r:1"),
            "{err}"
        );
        let mistyped = br#"{"Username":"u","Secret":1234567}"#;
        let err = interpret(&h, ok, mistyped, b"").unwrap_err().to_string();
        assert!(
            err.contains("type error") && !err.contains("1234567"),
            "{err}"
        );
        let token = br#"{"Username":"<token>","Secret":"refresh"}"#;
        let err = interpret(&h, ok, token, b"").unwrap_err();
        assert!(matches!(err, HelperError::IdentityToken { .. }), "{err}");
    }
}
