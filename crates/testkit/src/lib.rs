//! Helpers for blobswarm's end-to-end tests against real components.
//!
//! The tests drive a real CNCF distribution registry (`docker-registry`), build
//! real OCI images with `umoci`, push them with `skopeo` and import them into a
//! private, real `containerd` ([`Containerd`]). Nothing here is a
//! mock: when a helper cannot do its job it panics with a message saying what
//! failed, so a broken environment shows up as a failed test, never as a pass.
//!
//! A test first asks [`require_tool`] for every binary it needs. Outside CI a
//! missing tool skips the test (with a `SKIP:` line on stderr); under CI
//! (`CI=true`) it fails the test, because a green run that skipped everything
//! would prove nothing.
//!
//! The programs under test run as OS processes ([`Proc`], started from a [`Binary`]);
//! [`Swarm`] and [`LayoutImage`] are the start-up most tests share (registry, pushed
//! image, seeder; agents are started by the test).
//!
//! All network traffic stays on 127.0.0.1.

mod containerd;
mod cred_helper;
mod credentials;
pub mod hostile;
mod image;
mod procs;
mod pushed;
mod registry;
pub mod rogue;
mod swarm;
mod token_auth;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub use containerd::{Containerd, require_containerd};
pub use cred_helper::{answering_helper, helper_runs, install_credential_helper, path_with};
pub use credentials::{TEST_PASSWORD, TEST_USER};
pub use image::{
    BlobInfo, ImageInfo, IndexInfo, PushFormat, build_test_image, build_test_index, push_image,
    push_image_with, push_index, read_image_info,
};
pub use procs::{Binary, Proc};
pub use pushed::{PUSH_TOOLS, PrivateImage, PushedImage, RegistryAuth, assert_layout_holds};
pub use registry::{AccessLogEntry, LogMark, Registry};
pub use swarm::{LOOPBACK, LayoutImage, Seeder, SeederKey, Swarm, TestImage};
pub use token_auth::{TOKEN_ISSUER, TOKEN_SERVICE, TokenServer};

/// Whether the binary `name` can be found on `PATH`.
pub fn tool_on_path(name: &str) -> bool {
    let Some(path) = std::env::var_os("PATH") else {
        return false;
    };
    std::env::split_paths(&path).any(|dir| is_executable(&dir.join(name)))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Whether this run is under CI (`CI=true`), where a missing component must fail the test.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Returns true if `name` is installed. If it is missing: under CI (`CI=true`)
/// this panics, outside CI it prints `SKIP: <name> not installed` and returns false
/// so the test can return early.
pub fn require_tool(name: &str) -> bool {
    if tool_on_path(name) {
        return true;
    }
    assert!(
        !under_ci(),
        "required tool `{name}` is not installed; under CI a missing component is a failure \
         (run scripts/test-deps.sh to install the test dependencies)"
    );
    eprintln!("SKIP: {name} not installed (run scripts/test-deps.sh to install it)");
    false
}

/// [`require_tool`] for each of `names`; true only if all are present. Every missing
/// tool is reported, not just the first.
pub fn require_tools(names: &[&str]) -> bool {
    // Not `all()`: it would stop at the first missing tool and hide the others.
    let missing = names.iter().filter(|name| !require_tool(name)).count();
    missing == 0
}

/// Polls `cond` every 20 ms until it returns true; panics naming `what` if
/// `timeout` passes first.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago (bound, then released).
/// Also the way to get a port that is certainly closed right now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener
        .local_addr()
        .expect("local addr of listener")
        .port()
}

/// A minimal HTTP/1.0 `GET path` to `addr` (`IP:PORT`) returning the status code, or
/// `None` if the connection or the answer failed. Enough for readiness polling (a
/// registry, a seeder API) without an HTTP client dependency.
pub fn http_get_status(addr: &str, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    let mut stream =
        TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut head = [0u8; 64];
    let mut got = 0;
    while got < 12 {
        let n = stream.read(&mut head[got..]).ok()?;
        if n == 0 {
            break;
        }
        got += n;
    }
    let line = std::str::from_utf8(&head[..got]).ok()?;
    // "HTTP/1.1 200 OK"
    line.split(' ').nth(1)?.parse().ok()
}

/// `GET path` over plain HTTP/1.0 to `addr` (`IP:PORT`); returns the body of a 200
/// answer (a `/metrics` scrape, a health check).
///
/// # Panics
/// If the connection fails or the answer is not 200.
pub fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("send the request");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read the answer");
    let (head, body) = out.split_once("\r\n\r\n").expect("http answer");
    assert_eq!(head.split(' ').nth(1), Some("200"), "GET {path}: {head}");
    body.to_owned()
}

/// The value of the sample line `series value` in a Prometheus exposition, where
/// `series` is the name with its labels exactly as exposed
/// (`blobswarm_bytes_down_total{source="peer"}`), truncated to an integer.
///
/// # Panics
/// If there is no such line.
pub fn metric_sample(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no {series} in:\n{text}")) as u64
}

/// Runs `cmd` to completion; panics with the command line, exit status, stdout and
/// stderr if it fails. Returns its output.
pub fn run(cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("could not start {shown}: {e}"));
    assert!(
        out.status.success(),
        "{shown} failed with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `sha256:<hex>` of `bytes`, the form registries and OCI layouts use.
pub fn sha256_digest(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// A deterministic pseudo-random byte generator (SplitMix64): the same seed always
/// gives the same bytes, and it is fast enough for tens of MiB in debug builds.
#[derive(Debug, Clone)]
pub struct PseudoRandom(u64);

impl PseudoRandom {
    /// A generator whose output is fixed by `seed`.
    pub const fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 pseudo-random bits.
    pub const fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Fills `buf` with pseudo-random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for chunk in &mut chunks {
            chunk.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            let last = self.next_u64().to_le_bytes();
            rest.copy_from_slice(&last[..rest.len()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudo_random_is_reproducible_and_not_constant() {
        let mut a = vec![0u8; 1001];
        let mut b = vec![0u8; 1001];
        PseudoRandom::new(7).fill(&mut a);
        PseudoRandom::new(7).fill(&mut b);
        assert_eq!(a, b);
        let mut c = vec![0u8; 1001];
        PseudoRandom::new(8).fill(&mut c);
        assert_ne!(a, c);
        assert!(a.iter().filter(|&&x| x == 0).count() < 50);
    }

    #[test]
    fn free_port_is_closed() {
        let port = free_port();
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    }

    #[test]
    #[should_panic(expected = "waiting until the impossible happens")]
    fn wait_until_panics_with_what() {
        wait_until(Duration::from_millis(50), "the impossible happens", || {
            false
        });
    }

    #[test]
    fn require_tool_finds_sh() {
        assert!(require_tool("sh"));
        assert!(!tool_on_path("blobswarm-no-such-tool"));
    }
}
