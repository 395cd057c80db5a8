//! Starting a swarm of real processes: a `blobswarm seed` and `blobswarm agent`s on
//! 127.0.0.1, and the fixtures most end-to-end tests begin with (a registry holding a
//! pushed test image plus its seeder, or an OCI layout to seed from).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use crate::{Binary, ImageInfo, PUSH_TOOLS, Proc, PushedImage, build_test_image, require_tools};

/// The listen address every test process uses: a free TCP port of 127.0.0.1.
pub const LOOPBACK: &str = "/ip4/127.0.0.1/tcp/0";

/// How long a process may take to print its `listening` line.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(30);

/// The seeder's node key, made with `keygen` before anything starts (agents need its id
/// to trust it, sometimes before the seeder runs).
#[derive(Debug, Clone)]
pub struct SeederKey {
    /// The key file (`root/seeder.key`).
    pub path: PathBuf,
    /// Its peer id, what agents trust.
    pub id: String,
}

impl SeederKey {
    /// Writes `root/seeder.key` with `bin keygen`.
    pub fn generate(bin: Binary, root: &Path) -> Self {
        let path = root.join("seeder.key");
        let id = bin.keygen(&path);
        Self { path, id }
    }
}

/// A running `blobswarm seed` (data dir `root/seeder`, log `root/seeder.log`) and what
/// agents need to join it.
#[derive(Debug)]
pub struct Seeder {
    /// The process.
    pub proc: Proc,
    /// Its peer id, what agents trust.
    pub id: String,
    /// Its listen multiaddr (with `/p2p/<id>`), what agents bootstrap from.
    pub addr: String,
    bin: Binary,
    root: PathBuf,
    /// The API's URL and token file, when started with [`Self::serve`].
    api: Option<(String, PathBuf)>,
}

impl Seeder {
    /// Creates the seeder key, seeds `reference` from the plain-HTTP registry at
    /// `registry_addr` and waits until it listens.
    pub fn start(bin: Binary, root: &Path, reference: &str, registry_addr: &str) -> Self {
        Self::start_with(bin, root, reference, registry_addr, &[])
    }

    /// [`Self::start`] with `extra` flags appended to `seed`.
    pub fn start_with(
        bin: Binary,
        root: &Path,
        reference: &str,
        registry_addr: &str,
        extra: &[&str],
    ) -> Self {
        let mut args = vec![reference, "--insecure-registry", registry_addr];
        args.extend_from_slice(extra);
        Self::launch(bin, root, &SeederKey::generate(bin, root), &args)
    }

    /// `seed --serve` with its API on `api_addr` (bearer token in `token_file`), reading
    /// the plain-HTTP registry at `registry_addr`, `extra` flags appended; waits until it
    /// listens and its API is up.
    pub fn serve(
        bin: Binary,
        root: &Path,
        (api_addr, token_file): (&str, &Path),
        registry_addr: &str,
        extra: &[&str],
    ) -> Self {
        let key = SeederKey::generate(bin, root);
        let mut args = vec![
            "--serve",
            "--api-listen",
            api_addr,
            "--api-token-file",
            token_file.to_str().expect("utf-8 token path"),
            "--insecure-registry",
            registry_addr,
        ];
        args.extend_from_slice(extra);
        let mut seeder = Self::launch(bin, root, &key, &args);
        seeder
            .proc
            .wait_line("api http://", Duration::from_secs(10));
        seeder.api = Some((format!("http://{api_addr}"), token_file.to_owned()));
        seeder
    }

    /// `bin ARGS --api URL --api-token-file TOKEN`: a client command (`seed IMAGE`,
    /// `status`) talking to the API of this [`Self::serve`]d seeder.
    ///
    /// # Panics
    /// If this seeder was not started with [`Self::serve`].
    pub fn api_command(&self, args: &[&str]) -> Command {
        let (url, token_file) = self.api.as_ref().expect("a seeder started with serve()");
        let mut cmd = self.bin.command();
        cmd.args(args)
            .args(["--api", url, "--api-token-file"])
            .arg(token_file);
        cmd
    }

    /// `seed ARGS --key-file KEY --data-dir root/seeder`, listening on [`LOOPBACK`] unless
    /// `args` name a `--listen`; waits until it listens.
    ///
    /// # Panics
    /// If it does not listen within 30 s, or its address does not end with the key's id.
    pub fn launch(bin: Binary, root: &Path, key: &SeederKey, args: &[&str]) -> Self {
        let data_dir = root.join("seeder");
        let mut all = vec!["seed"];
        all.extend_from_slice(args);
        all.extend([
            "--key-file",
            key.path.to_str().expect("utf-8 key path"),
            "--data-dir",
            data_dir.to_str().expect("utf-8 data dir"),
        ]);
        if !args.contains(&"--listen") {
            all.extend(["--listen", LOOPBACK]);
        }
        let mut proc = bin.start("seeder", &all, &root.join("seeder.log"));
        let addr = proc.wait_line("listening ", LISTEN_TIMEOUT);
        assert!(
            addr.ends_with(&key.id),
            "{addr} should end with /p2p/{}",
            key.id
        );
        Self {
            proc,
            id: key.id.clone(),
            addr,
            bin,
            root: root.to_owned(),
            api: None,
        }
    }

    /// The flags that make an agent with data dir `dir` join this seeder's swarm: data
    /// dir, loopback listen address, bootstrap address, trusted seeder id.
    pub fn agent_args(&self, dir: &Path) -> Vec<String> {
        let dir = dir.to_str().expect("utf-8 agent dir");
        [
            "agent",
            "--data-dir",
            dir,
            "--listen",
            LOOPBACK,
            "--bootstrap",
            &self.addr,
            "--trust-seeder",
            &self.id,
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// Starts agent `i` (data dir `root/agent-i`, log `root/agent-i.log`) that trusts and
    /// bootstraps from this seeder, with `extra` flags appended.
    pub fn start_agent(&self, i: usize, extra: &[&str]) -> Proc {
        self.start_agent_logged(i, extra, &self.root.join(format!("agent-{i}.log")))
    }

    /// [`Self::start_agent`] logging to `log` (a restarted agent keeps its earlier log).
    pub fn start_agent_logged(&self, i: usize, extra: &[&str], log: &Path) -> Proc {
        let name = format!("agent-{i}");
        self.start_agent_as(&name, &self.root.join(&name), extra, log)
    }

    /// Starts an agent of this swarm called `name` with data dir `dir`, `extra` flags
    /// appended, logging to `log`.
    pub fn start_agent_as(&self, name: &str, dir: &Path, extra: &[&str], log: &Path) -> Proc {
        self.start_agent_of(self.bin, name, dir, extra, log)
    }

    /// [`Self::start_agent_as`] running another binary that takes `agent` and the same
    /// flags: the `blobswarm-rogue` test agent ([`crate::rogue`]).
    pub fn start_agent_of(
        &self,
        bin: Binary,
        name: &str,
        dir: &Path,
        extra: &[&str],
        log: &Path,
    ) -> Proc {
        let mut args = self.agent_args(dir);
        args.extend(extra.iter().map(|&a| a.to_owned()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        bin.start(name, &args, log)
    }

    /// Agents `0..n`, each started with [`Self::start_agent`] and `extra`.
    pub fn start_agents(&self, n: usize, extra: &[&str]) -> Vec<Proc> {
        (0..n).map(|i| self.start_agent(i, extra)).collect()
    }
}

/// The test image a [`Swarm`] pushes: a busybox rootfs plus a pseudo-random layer.
#[derive(Debug, Clone, Copy)]
pub struct TestImage {
    /// Size of the pseudo-random layer in bytes.
    pub random_layer: u64,
    /// Seed of its bytes.
    pub seed: u64,
    /// Repository it is pushed to (as `repo:v1`).
    pub repo: &'static str,
}

impl TestImage {
    /// A `random_layer`-byte layer from `seed`, pushed to `repo:v1`.
    pub const fn new(random_layer: u64, seed: u64, repo: &'static str) -> Self {
        Self {
            random_layer,
            seed,
            repo,
        }
    }
}

/// The usual start of an end-to-end test: a temporary root, a real registry holding a
/// freshly pushed [`TestImage`], and a seeder seeding it. Agents are started by the test
/// (`swarm.seeder.start_agents(…)`), so it can kill and restart them.
///
/// Fields drop in order: seeder, registry, then the temporary directory.
#[derive(Debug)]
pub struct Swarm {
    /// The seeder.
    pub seeder: Seeder,
    /// The registry and the image pushed to it.
    pub pushed: PushedImage,
    /// Where every process keeps its files and logs.
    pub root: PathBuf,
    _tmp: TempDir,
}

impl Swarm {
    /// Checks [`PUSH_TOOLS`], pushes `image` and starts a seeder with `seeder_extra`
    /// flags. `None` when a tool is missing outside CI (the test returns early; under CI
    /// [`require_tools`] fails the test instead).
    pub fn start(bin: Binary, image: TestImage, seeder_extra: &[&str]) -> Option<Self> {
        if !require_tools(&PUSH_TOOLS) {
            return None;
        }
        let tmp = tempfile::tempdir().expect("temporary directory");
        let root = tmp.path().to_owned();
        let pushed = PushedImage::start(&root, image.random_layer, image.seed, image.repo);
        let seeder = Seeder::start_with(
            bin,
            &root,
            &pushed.reference,
            &pushed.registry.addr(),
            seeder_extra,
        );
        Some(Self {
            seeder,
            pushed,
            root,
            _tmp: tmp,
        })
    }

    /// The pushed image's reference (`127.0.0.1:PORT/REPO:v1`).
    pub fn reference(&self) -> &str {
        &self.pushed.reference
    }

    /// What was pushed: digests and sizes.
    pub fn image(&self) -> &ImageInfo {
        &self.pushed.image
    }
}

/// A temporary root holding an OCI layout (`root/layout`) with one test image tagged
/// `v1`, for tests that seed from a layout instead of a registry.
#[derive(Debug)]
pub struct LayoutImage {
    /// What was built.
    pub image: ImageInfo,
    /// The layout's directory.
    pub layout: PathBuf,
    /// Where every process keeps its files and logs.
    pub root: PathBuf,
    _tmp: TempDir,
}

impl LayoutImage {
    /// Checks for `umoci` and `busybox` and builds the image with a pseudo-random layer
    /// of `random_layer` bytes from `seed`; `None` when a tool is missing outside CI.
    pub fn build(random_layer: u64, seed: u64) -> Option<Self> {
        if !require_tools(&["umoci", "busybox"]) {
            return None;
        }
        let tmp = tempfile::tempdir().expect("temporary directory");
        let root = tmp.path().to_owned();
        let layout = root.join("layout");
        let image = build_test_image(&layout, "v1", random_layer, seed);
        Some(Self {
            image,
            layout,
            root,
            _tmp: tmp,
        })
    }

    /// The image as a `seed` source: `oci-layout:<dir>:v1`.
    pub fn source(&self) -> String {
        format!("oci-layout:{}:v1", self.layout.display())
    }
}
