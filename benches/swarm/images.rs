//! The images the benchmark moves, and a real `docker-registry` inside its namespace.

use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use blobswarm_testkit::PseudoRandom;
use serde_json::json;
use sha2::Digest as _;

use crate::netns::{self, Node};
use crate::procs::{Proc, run};

/// The repository and tag every run pulls.
const REPO_TAG: &str = "bench/img:v1";
/// Port of the registry inside its namespace.
const PORT: u16 = 5000;

/// Writes an OCI layout tagged `v1` holding one uncompressed tar layer with a
/// `size`-byte pseudo-random file, without umoci: gzip of several GiB would take minutes
/// and measure nothing of blobswarm. Returns the total bytes of config and layer.
pub(crate) fn write_big_layout(dir: &Path, size: u64) -> anyhow::Result<u64> {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs)?;
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let tmp = blobs.join("layer.partial");
    let mut out = BufWriter::with_capacity(1 << 20, fs::File::create(&tmp)?);
    let mut hash = sha2::Sha256::new();
    let mut put = |bytes: &[u8]| -> std::io::Result<()> {
        hash.update(bytes);
        out.write_all(bytes)
    };
    let mut header = tar::Header::new_ustar();
    header.set_path("data/random.bin")?;
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_cksum();
    put(header.as_bytes())?;
    let mut rng = PseudoRandom::new(42);
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill(&mut buf[..n]);
        put(&buf[..n])?;
        left -= n as u64;
    }
    let pad = (512 - size % 512) % 512;
    put(&vec![0u8; pad as usize + 1024])?;
    // The closure's borrows end here; `out` and `hash` are used directly below.
    out.flush()?;
    drop(out);
    let layer_digest = format!("sha256:{}", hex::encode(hash.finalize()));
    let layer_size = fs::metadata(&tmp)?.len();
    fs::rename(&tmp, blobs.join(&layer_digest[7..]))?;

    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": { "type": "layers", "diff_ids": [layer_digest] },
    }))?;
    let config_digest = put_blob(&blobs, &config)?;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": layer_digest,
            "size": layer_size,
        }],
    }))?;
    let manifest_digest = put_blob(&blobs, &manifest)?;
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest.len(),
            "annotations": { "org.opencontainers.image.ref.name": "v1" },
        }],
    }))?;
    fs::write(dir.join("index.json"), index)?;
    Ok(layer_size + config.len() as u64)
}

fn put_blob(blobs: &Path, bytes: &[u8]) -> anyhow::Result<String> {
    let digest = blobswarm_testkit::sha256_digest(bytes);
    fs::write(blobs.join(&digest[7..]), bytes)?;
    Ok(digest)
}

/// `docker-registry serve` in the registry namespace, access log on.
pub(crate) struct Registry {
    _proc: Proc,
    /// `ADDR:PORT` as clients name it.
    pub(crate) addr: String,
    log: PathBuf,
    /// The namespace it runs in (its link counters are the registry's egress).
    pub(crate) node: Node,
}

impl Registry {
    /// Starts the registry and waits until it answers `GET /v2/`.
    pub(crate) fn start(node: Node, dir: &Path) -> anyhow::Result<Self> {
        fs::create_dir_all(dir.join("storage"))?;
        let addr = format!("{}:{PORT}", node.addr);
        let config = format!(
            "version: 0.1\n\
             log:\n  level: warn\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: {addr}\n  secret: blobswarm-bench\n",
            dir.join("storage").display()
        );
        let config_path = dir.join("config.yml");
        fs::write(&config_path, config)?;
        let log = dir.join("registry.log");
        // The access log goes to stdout: the reader thread drains it, a file keeps it.
        let cmd = netns::in_ns(
            &node.ns,
            Path::new("sh"),
            &[
                "-c".into(),
                format!(
                    "exec docker-registry serve {} >>{} 2>&1",
                    config_path.display(),
                    log.display()
                ),
            ],
        );
        let proc = Proc::start("registry", cmd, &dir.join("registry.stderr"))?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while blobswarm_testkit::http_get_status(&addr, "/v2/") != Some(200) {
            if Instant::now() > deadline {
                bail!(
                    "docker-registry in {} did not answer GET /v2/ within 20 s; log:\n{}",
                    node.ns,
                    fs::read_to_string(&log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Self {
            _proc: proc,
            addr,
            log,
            node,
        })
    }

    /// The reference pulls use.
    pub(crate) fn reference(&self) -> String {
        format!("{}/{REPO_TAG}", self.addr)
    }

    /// Pushes tag `v1` of the OCI layout from inside the registry's namespace (loopback
    /// there, so the push never touches the shaped link or its counters).
    pub(crate) fn push(&self, layout: &Path) -> anyhow::Result<()> {
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &self.node.ns,
            "skopeo",
            "--insecure-policy",
        ])
        .args(["copy", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:v1", layout.display()))
        .arg(format!("docker://{}", self.reference()));
        run(cmd).map(drop)
    }

    /// Marks the end of the access log once it has stopped growing for 300 ms (lines are
    /// written just after each response), so later sums see only later requests.
    pub(crate) fn settle_log(&self) -> u64 {
        let len = || fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0);
        let deadline = Instant::now() + Duration::from_secs(5);
        let (mut last, mut since) = (len(), Instant::now());
        while Instant::now() < deadline && since.elapsed() < Duration::from_millis(300) {
            std::thread::sleep(Duration::from_millis(50));
            let now = len();
            if now != last {
                (last, since) = (now, Instant::now());
            }
        }
        last
    }

    /// Response body bytes of successful GETs logged after log offset `mark`, and the
    /// number of blob GETs among them.
    pub(crate) fn served_since(&self, mark: u64) -> anyhow::Result<(u64, usize)> {
        let bytes = fs::read(&self.log).context("reading registry log")?;
        let text = String::from_utf8_lossy(&bytes[(mark as usize).min(bytes.len())..]).into_owned();
        let (mut body, mut blob_gets) = (0, 0);
        for line in text.lines() {
            // `<host> - - [<date>] "GET <path> HTTP/1.1" <status> <bytes> "<ref>" "<agent>"`
            let Some((_, rest)) = line.split_once("] \"") else {
                continue;
            };
            let Some((request, rest)) = rest.split_once("\" ") else {
                continue;
            };
            let mut fields = rest.split(' ');
            let status: u16 = fields.next().and_then(|s| s.parse().ok()).unwrap_or(0);
            let sent: u64 = fields.next().and_then(|s| s.parse().ok()).unwrap_or(0);
            if request.starts_with("GET ") && (200..300).contains(&status) {
                body += sent;
                if request.contains("/blobs/sha256:") {
                    blob_gets += 1;
                }
            }
        }
        Ok((body, blob_gets))
    }
}
