//! Benchmark: blobswarm's containerd import vs `ctr images import` of the same image as a
//! tar, each into a fresh private containerd, both unpacking into the same snapshotter.
//!
//! `cargo bench --features containerd --bench import_vs_ctr` (as root; needs containerd,
//! ctr, runc, umoci, skopeo, busybox-static). Prints a table and one JSON line.
//! `BLOBSWARM_BENCH_LAYER_MIB` sets the random layer size (default 256).

use std::process::Command;
use std::time::Instant;

use blobswarm_testkit::{Containerd, build_test_image, require_containerd, require_tools, run};

fn main() {
    if !require_tools(&["umoci", "skopeo", "busybox"]) || !require_containerd() {
        eprintln!("import_vs_ctr: missing components, nothing measured");
        return;
    }
    let mib: u64 = std::env::var("BLOBSWARM_BENCH_LAYER_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    let image = build_test_image(&layout, "v1", mib << 20, 3);
    let total: u64 = image.blobs().iter().map(|b| b.size).sum();
    let tar = tmp.path().join("image.tar");
    let name = "bench.local/import:v1";
    run(Command::new("skopeo").args([
        "copy",
        &format!("oci:{}:v1", layout.display()),
        &format!("oci-archive:{}:{name}", tar.display()),
    ]));
    let mut rows = Vec::new();
    for round in 0..3 {
        let ours = Containerd::start(&tmp.path().join(format!("ours-{round}")));
        let first = timed_import(&layout, name, &ours);
        let again = timed_import(&layout, name, &ours);
        drop(ours);
        let theirs = Containerd::start(&tmp.path().join(format!("ctr-{round}")));
        let t = Instant::now();
        theirs.ctr_ok(&[
            "images",
            "import",
            "--snapshotter",
            theirs.snapshotter(),
            tar.to_str().unwrap(),
        ]);
        let ctr = t.elapsed().as_secs_f64();
        let snapshotter = theirs.snapshotter().to_owned();
        drop(theirs);
        rows.push((first, again, ctr, snapshotter));
    }
    println!(
        "image: {} blobs, {:.1} MiB; 3 rounds, fresh containerd for every import",
        image.blobs().len(),
        total as f64 / 1048576.0
    );
    println!(
        "{:<6} {:>16} {:>16} {:>18} {:>8}",
        "round", "blobswarm (s)", "again, no-op (s)", "ctr images import", "ratio"
    );
    for (i, (a, b, c, _)) in rows.iter().enumerate() {
        println!(
            "{:<6} {:>16.3} {:>16.3} {:>18.3} {:>8.2}",
            i,
            a,
            b,
            c,
            a / c
        );
    }
    let med = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let ours = med(rows.iter().map(|r| r.0).collect());
    let again = med(rows.iter().map(|r| r.1).collect());
    let ctr = med(rows.iter().map(|r| r.2).collect());
    println!(
        "{{\"bench\":\"import_vs_ctr\",\"image_bytes\":{total},\"snapshotter\":\"{}\",\"blobswarm_secs\":{ours:.3},\"blobswarm_noop_secs\":{again:.3},\"ctr_import_secs\":{ctr:.3},\"ratio\":{:.3}}}",
        rows[0].3,
        ours / ctr
    );
}

/// Seconds `blobswarm import` takes to put the layout's `v1` image into `ctd` as `name`.
fn timed_import(layout: &std::path::Path, name: &str, ctd: &Containerd) -> f64 {
    let t = Instant::now();
    run(Command::new(env!("CARGO_BIN_EXE_blobswarm")).args([
        "import",
        "--from",
        layout.to_str().unwrap(),
        "--ref",
        "v1",
        "--name",
        name,
        "--containerd-socket",
        ctd.socket().to_str().unwrap(),
        "--snapshotter",
        ctd.snapshotter(),
    ]));
    t.elapsed().as_secs_f64()
}
