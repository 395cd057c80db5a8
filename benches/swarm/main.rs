//! Swarm benchmark: blobswarm against N direct registry pulls, on rate-shaped links
//! between network namespaces, with a real `docker-registry`.
//!
//! ```text
//! cargo bench --bench swarm -- [--smoke] [--nodes 4,8,16,32] [--size 256MiB]
//!                               [--rate 250mbit] [--registry-rate 200mbit]
//!                               [--loopback-size 4GiB] [--out DIR]
//! ```
//!
//! Needs root (namespaces, veth, tc). For every N it measures, in one run:
//! - baseline: N simultaneous `skopeo copy` pulls from the registry;
//! - blobswarm: `blobswarm seed` + N `blobswarm agent` processes, one per namespace.
//!
//! Then a seeder and one agent move a large image over 127.0.0.1 (unshaped) for the
//! throughput ÷ SHA-256 ratio and the agent's peak RSS. It prints JSON and a markdown
//! table and writes `results.json`, `results.md` and `bench-swarm.png` to `--out`
//! (default `target/bench-swarm`). Namespaces are named `bswb-*` and addressed from
//! 198.18.0.0/15; they are removed at the end, on Ctrl-C/SIGTERM, and at start if an
//! earlier run left any. The kernel here has no netem, so links are rate-shaped only.
//! The registry sits in a namespace of its own behind a link shaped to `--registry-rate`
//! (default: `--rate`, like every link), so the seeder's read of the image costs real time.
//! Besides time to all, the table shows the time to the first peer byte, time to all ÷
//! max(registry read, swarm lower bound), agent CPU-s per GiB received and peak RSS,
//! seeder upload ÷ image and registry bytes ÷ image.
//! `--smoke` (N=4, 64 MiB, 256 MiB loopback) checks the harness and that blobswarm's
//! registry egress is ≈ 1× the image; it exits non-zero when a check fails.

mod firstbyte;
mod images;
mod netns;
mod procs;
mod report;
mod runs;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use sha2::Digest as _;

use report::{Check, Results, Row};

/// Arguments after `cargo bench --bench swarm --`.
#[derive(Debug, Parser)]
#[command(about = "blobswarm vs direct registry pulls on shaped links")]
struct Args {
    /// Small CI run: N=4, 64 MiB image, 256 MiB loopback; checks egress ≈ 1×.
    #[arg(long)]
    smoke: bool,
    /// Numbers of agent nodes to measure.
    #[arg(long, value_delimiter = ',')]
    nodes: Option<Vec<usize>>,
    /// Size of the image's random layer (the image adds busybox and a config).
    #[arg(long)]
    size: Option<String>,
    /// Rate of every link, each direction (tc syntax: 250mbit, 1gbit).
    #[arg(long, default_value = "250mbit")]
    rate: String,
    /// Rate of the registry's link, each direction (default: --rate). The seeder's own
    /// link (--rate) caps its read too.
    #[arg(long)]
    registry_rate: Option<String>,
    /// Measure blobswarm only (for profiling); the table shows no baseline.
    #[arg(long)]
    skip_baseline: bool,
    /// Image size for the 2-peer loopback run; 0 skips it.
    #[arg(long)]
    loopback_size: Option<String>,
    /// Directory for results.json, results.md and bench-swarm.png.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Only redraw the PNG and table from an earlier results.json (no root needed).
    #[arg(long)]
    replot: Option<PathBuf>,
    /// Keep the work directory (logs of every process) instead of deleting it.
    #[arg(long)]
    keep: bool,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// The work directory, removed by the signal handler.
static WORK: OnceLock<PathBuf> = OnceLock::new();

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if let Some(json) = &args.replot {
        return match replot(json) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("swarm benchmark: replot failed: {e:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    if !is_root() {
        eprintln!(
            "swarm benchmark: refusing to run without root. It creates network namespaces, \
             veth links, a bridge and tc qdiscs. Run it as root, e.g. \
             `sudo -E cargo bench --bench swarm`."
        );
        return std::process::ExitCode::from(2);
    }
    let tools = [
        "ip",
        "tc",
        "getconf",
        "docker-registry",
        "skopeo",
        "umoci",
        "busybox",
    ];
    // Under CI=true a missing tool panics (a failure); elsewhere it is a SKIP.
    if !blobswarm_testkit::require_tools(&tools) {
        eprintln!("swarm benchmark: missing tools (scripts/test-deps.sh installs them)");
        return std::process::ExitCode::SUCCESS;
    }
    match run(&args) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("swarm benchmark: a check failed (see above)");
            std::process::ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("swarm benchmark failed: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let uid = s.lines().find(|l| l.starts_with("Uid:"))?.to_owned();
            // Real, effective, saved, fs: the effective uid decides.
            uid.split_whitespace().nth(2).map(|u| u == "0")
        })
        .unwrap_or(false)
}

/// On SIGINT or SIGTERM: kill children, remove namespaces and the work dir, exit 130.
fn install_signal_handler() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::spawn(move || {
        rt.block_on(async {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut int), Ok(mut term)) = (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) else {
                return;
            };
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            eprintln!("swarm benchmark: interrupted; killing children, removing namespaces");
            procs::kill_all();
            netns::cleanup_stale();
            if let Some(dir) = WORK.get() {
                let _ = std::fs::remove_dir_all(dir);
            }
            std::process::exit(130);
        });
    });
    Ok(())
}

fn parse_size(s: &str) -> anyhow::Result<u64> {
    let t = s.trim();
    let (num, mult) = [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)]
        .iter()
        .find_map(|(unit, m)| t.strip_suffix(unit).map(|n| (n, *m)))
        .unwrap_or((t, 1));
    let v: u64 = num
        .trim()
        .parse()
        .with_context(|| format!("size {s:?}: expected e.g. 256MiB"))?;
    Ok(v * mult)
}

/// Single-core SHA-256 rate of this CPU with the same `sha2` build blobswarm uses.
fn sha256_rate() -> f64 {
    let mut buf = vec![0u8; 256 << 20];
    blobswarm_testkit::PseudoRandom::new(5).fill(&mut buf);
    (0..3)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(sha2::Sha256::digest(&buf));
            buf.len() as f64 / t.elapsed().as_secs_f64()
        })
        .fold(0.0, f64::max)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpu
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU", |(_, m)| m.trim())
        .to_owned();
    let sha_ni = cpu.contains(" sha_ni");
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let mem_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0);
    format!(
        "{cores} vCPU {model}{}, {:.0} GiB",
        if sha_ni {
            " with SHA-NI"
        } else {
            " without SHA-NI"
        },
        mem_kib as f64 / 1048576.0
    )
}

fn revision() -> String {
    let mut c = std::process::Command::new("git");
    c.args([
        "-C",
        env!("CARGO_MANIFEST_DIR"),
        "describe",
        "--always",
        "--dirty",
    ]);
    procs::run(c).unwrap_or_else(|_| "unknown".into())
}

fn today() -> String {
    procs::run({
        let mut c = std::process::Command::new("date");
        c.args(["-u", "+%Y-%m-%d"]);
        c
    })
    .unwrap_or_default()
}

/// What to measure, from the arguments and their `--smoke` defaults.
struct Plan {
    nodes: Vec<usize>,
    /// Bytes of the image's random layer.
    size: u64,
    /// Bytes of the loopback image; 0 skips that run.
    lo_size: u64,
    rate: netns::Rate,
    /// The registry link's rate.
    registry_rate: netns::Rate,
    out: PathBuf,
}

impl Plan {
    fn new(args: &Args) -> anyhow::Result<Self> {
        let nodes = args.nodes.clone().unwrap_or_else(|| {
            if args.smoke {
                vec![4]
            } else {
                vec![4, 8, 16, 32]
            }
        });
        if nodes.is_empty() || nodes.iter().any(|&n| n == 0 || n > 200) {
            bail!("--nodes must list numbers between 1 and 200");
        }
        let default_size = if args.smoke { "64MiB" } else { "256MiB" };
        let size = parse_size(args.size.as_deref().unwrap_or(default_size))?;
        let default_lo = if args.smoke { "256MiB" } else { "4GiB" };
        let lo_size = parse_size(args.loopback_size.as_deref().unwrap_or(default_lo))?;
        let rate = netns::Rate::parse(&args.rate)?;
        let registry_rate =
            netns::Rate::parse(args.registry_rate.as_deref().unwrap_or(&args.rate))?;
        let out = args
            .out
            .clone()
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-swarm"));
        Ok(Self {
            nodes,
            size,
            lo_size,
            rate,
            registry_rate,
            out,
        })
    }
}

fn run(args: &Args) -> anyhow::Result<bool> {
    let wall = Instant::now();
    let plan = Plan::new(args)?;
    std::fs::create_dir_all(&plan.out)?;
    report::load_font()?;

    install_signal_handler()?;
    netns::cleanup_stale();
    let tmp = tempfile::Builder::new().prefix("bswb-bench-").tempdir()?;
    let work = if args.keep {
        tmp.keep()
    } else {
        tmp.path().to_owned()
    };
    let _ = WORK.set(work.clone());
    eprintln!("work dir {}", work.display());

    let sha = sha256_rate();
    eprintln!("single-core sha256: {:.0} MiB/s", sha / 1048576.0);
    eprintln!(
        "building the image ({} MiB random layer) with umoci",
        plan.size >> 20
    );
    let layout = work.join("image");
    let info = blobswarm_testkit::build_test_image(&layout, "v1", plan.size, 7);
    let blobs: Vec<(String, u64)> = info
        .blobs()
        .iter()
        .map(|b| (b.digest.clone(), b.size))
        .collect();
    let image_bytes: u64 = blobs.iter().map(|(_, s)| s).sum();

    let max_n = plan.nodes.iter().copied().max().unwrap_or(1);
    eprintln!(
        "creating {} namespaces, links shaped to {}, the registry's to {}",
        max_n + 2,
        plan.rate.tc,
        plan.registry_rate.tc
    );
    let mut net = netns::Net::new(plan.rate.clone())?;
    let reg_node = net.add_at("reg", "198.18.0.2", &plan.registry_rate)?;
    let seeder = net.add("seed", "198.18.0.3")?;
    let agents = (0..max_n)
        .map(|i| net.add(&format!("a{i}"), &format!("198.18.1.{}", i + 1)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let registry = images::Registry::start(reg_node, &work.join("registry"))?;
    registry.push(&layout)?;
    // Worst case: the baseline's N pulls share the registry's link; allow 3× that.
    let slowest = plan
        .rate
        .bytes_per_sec
        .min(plan.registry_rate.bytes_per_sec);
    let worst = 3.0 * (max_n as f64) * image_bytes as f64 / slowest;
    let bench = runs::Bench {
        bin: bench_bin(),
        work: work.clone(),
        registry,
        seeder,
        agents,
        blobs,
        timeout: Duration::from_secs_f64(worst.max(120.0)),
        link_bytes_per_sec: plan.rate.bytes_per_sec,
    };
    let rows = measure(&bench, &plan.nodes, args.skip_baseline)?;
    drop(bench);
    let loopback = if plan.lo_size > 0 {
        Some(loopback(&mut net, &work, plan.lo_size)?)
    } else {
        None
    };
    net.teardown();

    let mut results = Results {
        date: today(),
        machine: machine(),
        revision: revision(),
        smoke: args.smoke,
        rate: plan.rate.tc.clone(),
        rate_bytes_per_sec: plan.rate.bytes_per_sec,
        registry_rate: Some(plan.registry_rate.tc.clone()),
        registry_rate_bytes_per_sec: Some(plan.registry_rate.bytes_per_sec),
        latency_note: "no added latency: this kernel has no netem".into(),
        image_bytes,
        sha256_single_core_bytes_per_sec: sha,
        loopback_vs_sha256: loopback.as_ref().map(|l| l.throughput_bytes_per_sec / sha),
        loopback,
        rows,
        checks: Vec::new(),
        wall_secs: 0.0,
    };
    results.checks = checks(&results);
    results.wall_secs = wall.elapsed().as_secs_f64();
    write_results(&mut results, &plan.out)
}

/// One row per N: the baseline's direct pulls (unless skipped), then blobswarm.
fn measure(bench: &runs::Bench, nodes: &[usize], skip_baseline: bool) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for &n in nodes {
        let baseline = if skip_baseline {
            None
        } else {
            eprintln!("N={n}: baseline ({n} direct pulls)");
            let b = bench.baseline(n)?;
            eprintln!("N={n}: baseline took {:.1} s", b.time_to_all_secs);
            Some(b)
        };
        eprintln!("N={n}: blobswarm (seeder + {n} agents)");
        let blobswarm = bench.blobswarm(n)?;
        eprintln!(
            "N={n}: blobswarm took {:.1} s (release at {:.1} s)",
            blobswarm.max_secs, blobswarm.release_secs
        );
        rows.push(Row {
            nodes: n,
            baseline,
            blobswarm,
        });
    }
    Ok(rows)
}

/// A seeder and one agent moving a `size`-byte image over 127.0.0.1 in an isolated
/// namespace.
fn loopback(net: &mut netns::Net, work: &Path, size: u64) -> anyhow::Result<runs::Loopback> {
    let ns = net.add_isolated("lo")?;
    let big = work.join("big");
    eprintln!("loopback: writing a {} MiB OCI layout", size >> 20);
    let bytes = images::write_big_layout(&big, size)?;
    eprintln!("loopback: seeder + 1 agent on 127.0.0.1");
    let l = runs::loopback(&bench_bin(), &ns, &big, bytes, &work.join("loopback"))?;
    std::fs::remove_dir_all(&big)?;
    Ok(l)
}

/// Writes `results.json` (numbers first, so a plotting problem cannot lose a long run),
/// the plot and `results.md` to `out`, and prints them; true if every check passed.
fn write_results(results: &mut Results, out: &Path) -> anyhow::Result<bool> {
    std::fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(&results)?,
    )?;
    let png = out.join("bench-swarm.png");
    let plotted = results.plot(&png);
    let png_ok = plotted.is_ok() && std::fs::metadata(&png).is_ok_and(|m| m.len() > 1000);
    results.checks.push(Check {
        name: "plot written".into(),
        ok: png_ok,
        detail: match plotted {
            Ok(()) => png.display().to_string(),
            Err(e) => format!("{e:#}"),
        },
    });
    let json = serde_json::to_string_pretty(&results)?;
    let md = results.markdown();
    std::fs::write(out.join("results.json"), &json)?;
    std::fs::write(out.join("results.md"), &md)?;
    println!("{json}\n\n{md}");
    eprintln!(
        "wrote {}/{{results.json,results.md,bench-swarm.png}} in {:.0} s",
        out.display(),
        results.wall_secs
    );
    Ok(results.checks.iter().all(|c| c.ok))
}

/// Redraws `bench-swarm.png` and `results.md` next to an earlier `results.json`.
fn replot(json: &Path) -> anyhow::Result<()> {
    let results: Results = serde_json::from_slice(
        &std::fs::read(json).with_context(|| format!("reading {}", json.display()))?,
    )?;
    let dir = json.parent().unwrap_or(Path::new("."));
    report::load_font()?;
    results.plot(&dir.join("bench-swarm.png"))?;
    let md = results.markdown();
    std::fs::write(dir.join("results.md"), &md)?;
    println!("{md}");
    Ok(())
}

fn bench_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_blobswarm"))
}

/// Registry egress: baseline ≈ N× the image, blobswarm ≈ 1× (response bodies within 2%,
/// wire bytes with TCP/IP headers within 10%); every agent finished.
fn checks(r: &Results) -> Vec<Check> {
    let img = r.image_bytes as f64;
    let mut out = Vec::new();
    for row in &r.rows {
        let n = row.nodes;
        let body = row.blobswarm.registry.http_bytes as f64 / img;
        let wire = row.blobswarm.registry.wire_bytes as f64 / img;
        out.push(Check {
            name: format!("N={n}: blobswarm registry egress ≈ 1× image"),
            ok: (0.98..=1.02).contains(&body) && (0.98..=1.10).contains(&wire),
            detail: format!("body {body:.3}×, wire {wire:.3}×"),
        });
        if let Some(b) = &row.baseline {
            let bbody = b.registry.http_bytes as f64 / img;
            out.push(Check {
                name: format!("N={n}: baseline registry egress ≈ {n}× image"),
                ok: (bbody / n as f64 - 1.0).abs() < 0.02,
                detail: format!("body {bbody:.2}×"),
            });
        }
        out.push(Check {
            name: format!("N={n}: all {n} agents imported"),
            ok: row.blobswarm.done_secs.len() == n,
            detail: format!("{} done", row.blobswarm.done_secs.len()),
        });
    }
    out
}
