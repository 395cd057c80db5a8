//! The containerd importer against a real, private containerd (root, `containerd`,
//! `ctr`, `runc`, `umoci`, `busybox`): the CRI's view (`ctr -n k8s.io images ls`),
//! snapshots before any run, a container started from the image, idempotence, refusal of
//! corrupt and unsupported layers, connection errors, a containerd crash mid-import, and
//! a newer pinned release unpinning the older one, which containerd's GC then reclaims.

#![cfg(feature = "containerd")]

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use blobswarm_containerd_import::containerd::{
    ContainerdConfig, ContainerdError, ContainerdTarget, ImageToImport, ImportReport, Progress,
};
use blobswarm_core::{DEFAULT_CHUNK_SIZE, Digest, Document, Release, ReleaseBlob};
use blobswarm_testkit::{
    Containerd, ImageInfo, build_test_image, require_containerd, require_tools, sha256_digest,
};
use serde_json::Value;
use support::{config, ctr_run};
use tempfile::TempDir;

mod support;

const REF: &str = "registry.local/blobswarm/ctd-test:v1";
const REPO: &str = "registry.local/blobswarm/ctd-test";

fn ready() -> bool {
    // `&` not `&&`: report every missing piece at once.
    require_containerd() & require_tools(&["umoci", "busybox"])
}

/// A private containerd, the test image `v1` in an OCI layout next to it, and a target
/// connected to that containerd.
struct Fixture {
    target: ContainerdTarget,
    /// Declared before `tmp`, so containerd stops before its directory is removed.
    ctd: Containerd,
    /// `<tmp>/oci`.
    layout: PathBuf,
    info: ImageInfo,
    /// `v1` from the layout, named [`REF`].
    image: ImageToImport,
    /// Holds containerd's directories and the layout.
    tmp: TempDir,
}

impl Fixture {
    /// Starts containerd, builds `v1` with `random_layer_bytes` of random data from
    /// `seed`; `None` (the test skips) where containerd or the image tools are missing.
    async fn start(random_layer_bytes: u64, seed: u64) -> Option<Self> {
        if !ready() {
            return None;
        }
        let tmp = tempfile::tempdir().unwrap();
        let ctd = Containerd::start(tmp.path());
        let layout = tmp.path().join("oci");
        let info = build_test_image(&layout, "v1", random_layer_bytes, seed);
        let image = layout_image(&layout);
        let target = ContainerdTarget::connect(config(&ctd)).await.unwrap();
        Some(Self {
            target,
            ctd,
            layout,
            info,
            image,
            tmp,
        })
    }
}

/// The image tagged `v1` in the OCI layout at `layout`, to be recorded as [`REF`].
fn layout_image(layout: &Path) -> ImageToImport {
    ImageToImport::from_oci_layout(layout, "v1")
        .unwrap()
        .with_reference(REF)
}

fn blob_path(layout: &Path, digest: &str) -> PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").expect("sha256 digest"))
}

/// diff_ids of the image config and the chain IDs containerd names snapshots by,
/// computed here independently of the importer.
fn chain_ids(layout: &Path, info: &ImageInfo) -> (Vec<String>, Vec<String>) {
    let config: Value =
        serde_json::from_slice(&fs::read(blob_path(layout, &info.config.digest)).unwrap()).unwrap();
    let diff_ids: Vec<String> = config["rootfs"]["diff_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().to_owned())
        .collect();
    let mut chains: Vec<String> = Vec::new();
    for d in &diff_ids {
        let next = match chains.last() {
            None => d.clone(),
            Some(prev) => sha256_digest(format!("{prev} {d}").as_bytes()),
        };
        chains.push(next);
    }
    (diff_ids, chains)
}

/// `(name, target digest, labels column)` of every image record.
fn images(ctd: &Containerd) -> Vec<(String, String, String)> {
    ctd.ctr_ok(&["images", "ls"])
        .lines()
        .skip(1)
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols.len() >= 4).then(|| {
                (
                    cols[0].to_owned(),
                    cols[2].to_owned(),
                    (*cols.last().unwrap()).to_owned(),
                )
            })
        })
        .collect()
}

/// Lines of `ctr leases ls` for leases created by an import.
fn our_leases(ctd: &Containerd) -> Vec<String> {
    ctd.ctr_ok(&["leases", "ls"])
        .lines()
        .skip(1)
        .filter(|l| l.contains("blobswarm.import"))
        .map(str::to_owned)
        .collect()
}

/// Committed snapshot names of the snapshotter.
fn committed_snapshots(ctd: &Containerd) -> Vec<String> {
    ctd.ctr_ok(&["snapshots", "--snapshotter", ctd.snapshotter(), "ls"])
        .lines()
        .skip(1)
        .filter(|l| l.split_whitespace().last() == Some("Committed"))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// The labels column of `ctr content ls` for `digest`.
fn content_labels(ctd: &Containerd, digest: &str) -> String {
    ctd.ctr_ok(&["content", "ls"])
        .lines()
        .find(|l| l.starts_with(digest))
        .unwrap_or_else(|| panic!("{digest} not in ctr content ls"))
        .split_whitespace()
        .last()
        .unwrap()
        .to_owned()
}

/// The release a seeder would publish for the layout's image (chunk maps are not used
/// by the importer).
fn release_for(layout: &Path, info: &ImageInfo, reference: &str) -> Release {
    let manifest = fs::read(blob_path(layout, &info.manifest_digest)).unwrap();
    Release {
        reference: reference.to_owned(),
        root: Document {
            digest: info.manifest_digest.parse().unwrap(),
            media_type: info.manifest_media_type.clone(),
            bytes: manifest,
        },
        manifests: vec![],
        blobs: info
            .blobs()
            .into_iter()
            .map(|b| ReleaseBlob {
                digest: b.digest.parse().unwrap(),
                size: b.size,
                media_type: b.media_type,
                chunk_size: DEFAULT_CHUNK_SIZE,
                chunk_map: Digest::of(b""),
            })
            .collect(),
        seeder: vec![],
        sequence: 1,
        created_unix_ms: 0,
        expires_unix_ms: 0,
    }
}

fn copy_layout(from: &Path, to: &Path) {
    let ok = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap()
        .success();
    assert!(ok, "cp -a {} {}", from.display(), to.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_is_seen_by_the_cri_unpacked_runnable_and_idempotent() {
    let Some(fx) = Fixture::start(4 << 20, 11).await else {
        return;
    };
    let reported = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = reported.clone();
    let target = fx.target.clone().with_progress(Progress::new(move |n| {
        counter.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }));

    let first = target.import(&fx.image).await.unwrap();
    eprintln!("first import: {first}");
    let content_bytes: u64 =
        fx.image.blobs.iter().map(|b| b.size).sum::<u64>() + fx.image.root.bytes.len() as u64;
    assert_eq!(
        reported.swap(0, std::sync::atomic::Ordering::Relaxed),
        content_bytes,
        "progress reports every content byte once"
    );
    let blobs = fx.info.layers.len() + 1;
    assert_eq!(first.content_written, blobs + 1, "config, layers, manifest");
    assert_eq!(first.content_present, 0);
    assert_eq!(first.snapshots_created, fx.info.layers.len());
    assert_eq!(first.records_created, 3);
    assert!(!first.changed_nothing());
    let names = vec![
        REF.to_owned(),
        format!("{REPO}@{}", fx.info.manifest_digest),
        fx.info.config.digest.clone(),
    ];
    assert_eq!(first.names, names);
    assert_cri_records(&fx.ctd, &names, &fx.info);
    assert_unpacked_labelled_and_runnable(&fx.ctd, &fx.layout, &fx.info);

    // Second import: a no-op.
    let second = target.import(&fx.image).await.unwrap();
    eprintln!("second import: {second}");
    assert_eq!(
        reported.load(std::sync::atomic::Ordering::Relaxed),
        content_bytes,
        "present content counts as done, so a bar reaches 100% on a no-op import"
    );
    assert!(second.changed_nothing(), "{second:?}");
    assert_eq!(second.content_present, blobs + 1);
    assert_eq!(second.snapshots_present, fx.info.layers.len());
    assert_eq!(second.records_unchanged, 3);
    assert_eq!(second.bytes_written, 0);
    eprintln!(
        "IMPORT-TIMING first={:.3}s second={:.3}s (image {} bytes)",
        first.elapsed.as_secs_f64(),
        second.elapsed.as_secs_f64(),
        fx.info.blobs().iter().map(|b| b.size).sum::<u64>()
    );

    release_import_only_adds_labels(&fx.ctd, &target, &fx.layout, &fx.info, &names).await;
    pinning_later_only_adds_the_label(&fx.ctd, &fx.image, &fx.info).await;
}

/// The CRI's view: all `names`, pointing at the manifest, managed by the CRI.
fn assert_cri_records(ctd: &Containerd, names: &[String], info: &ImageInfo) {
    let records = images(ctd);
    for name in names {
        let rec = records
            .iter()
            .find(|r| &r.0 == name)
            .unwrap_or_else(|| panic!("{name} missing from ctr images ls: {records:?}"));
        assert_eq!(rec.1, info.manifest_digest, "{name}");
        assert!(
            rec.2.contains("io.cri-containerd.image=managed"),
            "{name}: {}",
            rec.2
        );
    }
}

/// After the first import: unpacked before any container runs, GC and unpack labels on
/// the content, no lease left; a container starts from it and `ctr` finds nothing left
/// to unpack.
fn assert_unpacked_labelled_and_runnable(ctd: &Containerd, layout: &Path, info: &ImageInfo) {
    let (diff_ids, chains) = chain_ids(layout, info);
    // Unpacked before any container runs: every chain ID is a committed snapshot.
    let before_run = committed_snapshots(ctd);
    for c in &chains {
        assert!(before_run.contains(c), "{c} not committed: {before_run:?}");
    }
    // GC and unpack labels on the content.
    let top = chains.last().unwrap();
    assert!(
        content_labels(ctd, &info.config.digest).contains(&format!(
            "containerd.io/gc.ref.snapshot.{}={top}",
            ctd.snapshotter()
        )),
        "config lacks the snapshot GC label"
    );
    for (layer, diff_id) in info.layers.iter().zip(&diff_ids) {
        assert!(
            content_labels(ctd, &layer.digest)
                .contains(&format!("containerd.io/uncompressed={diff_id}")),
            "layer {} lacks its uncompressed label",
            layer.digest
        );
    }
    let manifest_labels = content_labels(ctd, &info.manifest_digest);
    assert!(
        manifest_labels.contains(&format!(
            "containerd.io/gc.ref.content.config={}",
            info.config.digest
        )),
        "{manifest_labels}"
    );
    assert!(our_leases(ctd).is_empty(), "{:?}", our_leases(ctd));

    // A container starts from it, and ctr found nothing left to unpack.
    let id = format!("bsw-t1-{}", std::process::id());
    let out = ctr_run(ctd, REF, &id, &["/bin/busybox", "echo", "OK"]);
    assert_eq!(out.trim(), "OK");
    let out = ctr_run(
        ctd,
        REF,
        &id,
        &[
            "/bin/busybox",
            "sh",
            "-c",
            "cat /etc/blobswarm-test && wc -c < /data/random.bin",
        ],
    );
    assert!(out.contains("blobswarm test image v1, seed 11"), "{out}");
    assert!(out.contains(&(4u64 << 20).to_string()), "{out}");
    let mut after_run = committed_snapshots(ctd);
    let mut before = before_run.clone();
    after_run.sort();
    before.sort();
    assert_eq!(
        after_run, before,
        "ctr run unpacked again: our chain IDs are wrong"
    );
}

/// The same image as a swarm release with blobs in a store: nothing to write, only the
/// release line's labels are added to the records; once there, nothing to do.
async fn release_import_only_adds_labels(
    ctd: &Containerd,
    target: &ContainerdTarget,
    layout: &Path,
    info: &ImageInfo,
    names: &[String],
) {
    let release = release_for(layout, info, REF);
    let from_release =
        ImageToImport::from_release(&release, |d| layout.join("blobs/sha256").join(d.hex()));
    assert_eq!(from_release.names().unwrap(), names);
    let third = target.import(&from_release).await.unwrap();
    eprintln!("release import: {third}");
    assert_eq!(third.records_updated, 3, "{third:?}");
    assert_eq!(
        third.content_written + third.labels_updated + third.snapshots_created,
        0,
        "{third:?}"
    );
    for (name, _, labels) in images(ctd) {
        assert!(
            labels.contains("io.blobswarm.lineage=") && labels.contains("io.blobswarm.sequence=1"),
            "{name}: {labels}"
        );
    }
    let again = target.import(&from_release).await.unwrap();
    assert!(again.changed_nothing(), "{again:?}");
    assert!(our_leases(ctd).is_empty());
}

/// Pinning later only adds the label to the existing records.
async fn pinning_later_only_adds_the_label(
    ctd: &Containerd,
    image: &ImageToImport,
    info: &ImageInfo,
) {
    let pinned = ContainerdTarget::connect(ContainerdConfig {
        pin: true,
        ..config(ctd)
    })
    .await
    .unwrap();
    let fourth = pinned.import(image).await.unwrap();
    assert_eq!(fourth.records_updated, 3, "{fourth:?}");
    assert_eq!(fourth.content_written + fourth.snapshots_created, 0);
    for (name, digest, labels) in images(ctd) {
        assert_eq!(digest, info.manifest_digest, "{name}");
        assert!(
            labels.contains("io.cri-containerd.pinned=pinned")
                && labels.contains("io.cri-containerd.image=managed"),
            "{name}: {labels}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_or_unsupported_layers_are_refused_without_leftovers() {
    let Some(fx) = Fixture::start(1 << 20, 12).await else {
        return;
    };

    // A foreign layer: refused before anything is written.
    let foreign = fx.tmp.path().join("foreign");
    copy_layout(&fx.layout, &foreign);
    let mut manifest: Value =
        serde_json::from_slice(&fs::read(blob_path(&foreign, &fx.info.manifest_digest)).unwrap())
            .unwrap();
    manifest["layers"][1]["mediaType"] =
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip".into();
    let bytes = serde_json::to_vec(&manifest).unwrap();
    let digest = sha256_digest(&bytes);
    fs::write(blob_path(&foreign, &digest), &bytes).unwrap();
    let mut index: Value =
        serde_json::from_slice(&fs::read(foreign.join("index.json")).unwrap()).unwrap();
    index["manifests"][0]["digest"] = digest.clone().into();
    index["manifests"][0]["size"] = bytes.len().into();
    fs::write(
        foreign.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    let err = fx.target.import(&layout_image(&foreign)).await.unwrap_err();
    eprintln!("foreign layer: {err}");
    match &err {
        ContainerdError::UnsupportedLayer {
            layer, media_type, ..
        } => {
            assert_eq!(layer.to_string(), fx.info.layers[1].digest);
            assert!(media_type.contains("foreign"));
        }
        other => panic!("expected UnsupportedLayer, got {other:?}"),
    }
    assert!(err.to_string().contains(&fx.info.layers[1].digest));
    assert_eq!(
        fx.ctd.ctr_ok(&["content", "ls", "-q"]).trim(),
        "",
        "content was written before the refusal"
    );

    // A layer whose bytes do not match its digest: containerd refuses it.
    let corrupt = fx.tmp.path().join("corrupt");
    copy_layout(&fx.layout, &corrupt);
    let bad = &fx.info.layers[1];
    let path = blob_path(&corrupt, &bad.digest);
    let mut bytes = fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&path, &bytes).unwrap();
    let err = fx.target.import(&layout_image(&corrupt)).await.unwrap_err();
    eprintln!("corrupt layer: {err}");
    match &err {
        ContainerdError::DigestMismatch { digest, actual } => {
            assert_eq!(digest.to_string(), bad.digest);
            assert_eq!(*actual, sha256_digest(&bytes));
        }
        other => panic!("expected DigestMismatch, got {other:?}"),
    }
    assert!(err.to_string().contains(&bad.digest));
    assert!(images(&fx.ctd).is_empty(), "{:?}", images(&fx.ctd));
    assert!(our_leases(&fx.ctd).is_empty(), "{:?}", our_leases(&fx.ctd));
    let active = fx.ctd.ctr_ok(&["content", "active"]);
    assert!(
        !active.contains("blobswarm-"),
        "the bad ingest was kept: {active}"
    );

    // The intact image still imports (nothing of the failed attempts gets in the way).
    let report = fx.target.import(&fx.image).await.unwrap();
    eprintln!("intact import: {report}");
    assert_eq!(images(&fx.ctd).len(), 3);
}

#[tokio::test]
async fn socket_problems_are_reported_at_once_and_distinctly() {
    // Needs no containerd: these are the errors of a node without one.
    let dir = tempfile::Builder::new()
        .prefix("bsw-sock-")
        .tempdir_in("/tmp")
        .unwrap();
    let connect = |socket: PathBuf| {
        ContainerdTarget::connect(ContainerdConfig {
            socket,
            timeout: Duration::from_secs(5),
            ..ContainerdConfig::default()
        })
    };

    let missing = dir.path().join("absent.sock");
    let start = Instant::now();
    let err = connect(missing.clone()).await.unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    eprintln!("{err}");
    assert!(
        matches!(&err, ContainerdError::SocketMissing { path } if *path == missing),
        "{err:?}"
    );
    assert!(err.to_string().contains(&missing.display().to_string()));

    // A socket file nobody listens on (containerd died): refused, not "missing".
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let err = connect(stale.clone()).await.unwrap_err();
    eprintln!("{err}");
    assert!(
        matches!(&err, ContainerdError::Refused { path } if *path == stale),
        "{err:?}"
    );

    let file = dir.path().join("file");
    fs::write(&file, b"x").unwrap();
    let err = connect(file).await.unwrap_err();
    assert!(matches!(err, ContainerdError::NotASocket { .. }), "{err:?}");

    // A listener that accepts but never speaks gRPC: not answering, within the timeout.
    let mute = dir.path().join("mute.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&mute).unwrap();
    let start = Instant::now();
    let err = ContainerdTarget::connect(ContainerdConfig {
        socket: mute,
        timeout: Duration::from_millis(500),
        ..ContainerdConfig::default()
    })
    .await
    .unwrap_err();
    eprintln!("{err}");
    assert!(
        matches!(err, ContainerdError::NotAnswering { .. }),
        "{err:?}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_snapshotter_is_reported_with_the_available_ones() {
    if !require_containerd() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let ctd = Containerd::start(tmp.path());
    for name in ["nosuchfs", "zfs"] {
        let err = ContainerdTarget::connect(ContainerdConfig {
            snapshotter: name.into(),
            ..config(&ctd)
        })
        .await
        .unwrap_err();
        eprintln!("{err}");
        match &err {
            ContainerdError::SnapshotterUnavailable {
                name: n, available, ..
            } => {
                assert_eq!(n, name);
                assert!(available.iter().any(|a| a == "native"), "{available:?}");
                assert!(!available.iter().any(|a| a == name), "{available:?}");
            }
            other => panic!("expected SnapshotterUnavailable, got {other:?}"),
        }
    }
    // The working one connects.
    ContainerdTarget::connect(config(&ctd)).await.unwrap();
}

/// Size of the ingest files containerd is writing, to kill it mid-import.
fn ingest_bytes(root: &Path) -> u64 {
    let dir = root.join("io.containerd.content.v1.content/ingest");
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| fs::metadata(e.path().join("data")).ok())
        .map(|m| m.len())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_interrupted_by_a_containerd_crash_completes_on_rerun() {
    let Some(mut fx) = Fixture::start(128 << 20, 13).await else {
        return;
    };

    let task = {
        let (target, image) = (fx.target.clone(), fx.image.clone());
        tokio::spawn(async move { target.import(&image).await })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while ingest_bytes(&fx.ctd.root()) < 8 << 20 {
        assert!(!task.is_finished(), "import finished before the crash");
        assert!(Instant::now() < deadline, "no ingest grew past 8 MiB");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    fx.ctd.kill();
    let err = task
        .await
        .unwrap()
        .expect_err("import must fail when containerd dies");
    eprintln!("interrupted import: {err}");
    assert!(
        matches!(
            err,
            ContainerdError::Disconnected { .. } | ContainerdError::NotAnswering { .. }
        ),
        "{err:?}"
    );

    fx.ctd.restart();
    // Our lease survived the crash (we could not delete it then).
    assert_eq!(our_leases(&fx.ctd).len(), 1, "{:?}", our_leases(&fx.ctd));
    assert!(images(&fx.ctd).is_empty());

    // The same target: the channel reconnects by itself.
    let report: ImportReport = fx.target.import(&fx.image).await.unwrap();
    eprintln!("re-run: {report}");
    assert_eq!(report.stale_leases_removed, 1);
    assert_eq!(report.snapshots_created, fx.info.layers.len());
    assert!(our_leases(&fx.ctd).is_empty(), "{:?}", our_leases(&fx.ctd));
    assert_eq!(images(&fx.ctd).len(), 3);

    // Content is consistent: every blob reads back and hashes to its digest.
    let listed = fx.ctd.ctr_ok(&["content", "ls", "-q"]);
    for digest in fx
        .info
        .blobs()
        .iter()
        .map(|b| b.digest.clone())
        .chain([fx.info.manifest_digest.clone()])
    {
        assert!(listed.contains(&digest), "{digest} not in content ls");
        let out = fx.ctd.ctr(&["content", "get", &digest]);
        assert!(out.status.success());
        assert_eq!(sha256_digest(&out.stdout), digest);
    }
    let active = fx.ctd.ctr_ok(&["content", "active"]);
    assert!(!active.contains("blobswarm-"), "ingest left: {active}");
    let again = fx.target.import(&fx.image).await.unwrap();
    assert!(again.changed_nothing(), "{again:?}");
}

/// Whether containerd's content store lists `digest` (`ctr content ls`).
fn has_content(ctd: &Containerd, digest: &str) -> bool {
    ctd.ctr_ok(&["content", "ls"])
        .lines()
        .any(|l| l.starts_with(digest))
}

/// The file containerd keeps `digest`'s bytes in.
fn content_file(ctd: &Containerd, digest: &str) -> PathBuf {
    ctd.root()
        .join("io.containerd.content.v1.content/blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_pinned_release_unpins_the_older_one_which_gc_then_reclaims() {
    let Some(fx) = Fixture::start(2 << 20, 21).await else {
        return;
    };
    let (ctd, layout, v1) = (&fx.ctd, &fx.layout, &fx.info);
    let v2 = build_test_image(layout, "v2", 2 << 20, 22);
    let seeder = libp2p_identity::Keypair::ed25519_from_bytes([3u8; 32])
        .unwrap()
        .public()
        .to_peer_id();
    let release = |info: &ImageInfo, sequence: u64| {
        let mut r = release_for(layout, info, REF);
        r.seeder = seeder.to_bytes();
        r.sequence = sequence;
        ImageToImport::from_release(&r, |d| layout.join("blobs/sha256").join(d.hex()))
    };
    let (image1, image2) = (release(v1, 1), release(&v2, 2));
    let lineage = format!("{seeder}/{REF}");
    assert_eq!(image1.release_line.as_ref().unwrap().lineage, lineage);
    let target = ContainerdTarget::connect(ContainerdConfig {
        pin: true,
        ..config(ctd)
    })
    .await
    .unwrap();
    let v1_names = [
        format!("{REPO}@{}", v1.manifest_digest),
        v1.config.digest.clone(),
    ];
    let v2_names = [
        REF.to_owned(),
        format!("{REPO}@{}", v2.manifest_digest),
        v2.config.digest.clone(),
    ];
    let pinned = "io.cri-containerd.pinned=pinned";

    let first = target.import(&image1).await.unwrap();
    eprintln!("v1 (sequence 1): {first}");
    assert!(first.unpinned.is_empty(), "{first:?}");
    for name in &v1_names {
        let (_, _, labels) = record(ctd, name);
        assert!(labels.contains(pinned), "{name}: {labels}");
        assert!(
            labels.contains(&format!("io.blobswarm.lineage={lineage}")),
            "{labels}"
        );
        assert!(labels.contains("io.blobswarm.sequence=1"), "{labels}");
    }

    // v2 of the same line: v1's records lose the pin, v2's (and the tag) keep it.
    let second = target.import(&image2).await.unwrap();
    eprintln!("v2 (sequence 2): {second}");
    let mut unpinned = second.unpinned.clone();
    unpinned.sort();
    let mut want = v1_names.to_vec();
    want.sort();
    assert_eq!(unpinned, want, "{second}");
    assert!(
        second.to_string().contains("unpinned superseded"),
        "{second}"
    );
    for name in &v1_names {
        let (_, _, labels) = record(ctd, name);
        assert!(
            !labels.contains("io.cri-containerd.pinned"),
            "{name}: {labels}"
        );
        assert!(
            labels.contains("io.cri-containerd.image=managed"),
            "{labels}"
        );
    }
    for name in &v2_names {
        let (_, digest, labels) = record(ctd, name);
        assert_eq!(digest, v2.manifest_digest, "{name}");
        assert!(labels.contains(pinned), "{name}: {labels}");
        assert!(
            labels.contains("io.blobswarm.sequence=2"),
            "{name}: {labels}"
        );
    }

    // v1 replayed late: the tag stays on v2, v2 stays pinned, v1 unpins itself again.
    let replay = target.import(&image1).await.unwrap();
    eprintln!("v1 again: {replay}");
    assert_eq!(replay.records_kept_newer, [REF.to_owned()], "{replay:?}");
    for name in &v2_names {
        let (_, digest, labels) = record(ctd, name);
        assert_eq!(digest, v2.manifest_digest, "{name}");
        assert!(labels.contains(pinned), "{name}: {labels}");
    }
    for name in &v1_names {
        let (_, _, labels) = record(ctd, name);
        assert!(
            !labels.contains("io.cri-containerd.pinned"),
            "{name}: {labels}"
        );
    }
    gc_reclaims_v1_but_not_v2(ctd, layout, [v1, &v2], &v1_names);
}

/// `(name, target digest, labels column)` of the image record `name`.
fn record(ctd: &Containerd, name: &str) -> (String, String, String) {
    images(ctd)
        .into_iter()
        .find(|r| r.0 == name)
        .unwrap_or_else(|| panic!("{name} not in ctr images ls"))
}

/// The kubelet's image GC removes unpinned records (`v1_names`); containerd's GC then
/// reclaims v1's own content (manifest, config, its layers) and snapshots, not v2's;
/// and v2 still runs.
fn gc_reclaims_v1_but_not_v2(
    ctd: &Containerd,
    layout: &Path,
    [v1, v2]: [&ImageInfo; 2],
    v1_names: &[String],
) {
    let v2_blobs: Vec<String> = v2.blobs().into_iter().map(|b| b.digest).collect();
    let v1_only: Vec<String> = std::iter::once(v1.manifest_digest.clone())
        .chain(v1.blobs().into_iter().map(|b| b.digest))
        .filter(|d| !v2_blobs.contains(d))
        .collect();
    assert!(v1_only.len() >= 3, "{v1_only:?}");
    let (_, v1_chains) = chain_ids(layout, v1);
    let (_, v2_chains) = chain_ids(layout, v2);
    for d in &v1_only {
        assert!(has_content(ctd, d), "{d} not imported");
        assert!(content_file(ctd, d).is_file(), "{d} has no blob file");
    }
    let mut rm = vec!["images", "rm", "--sync"];
    rm.extend(v1_names.iter().map(String::as_str));
    ctd.ctr_ok(&rm);
    for d in &v1_only {
        assert!(!has_content(ctd, d), "{d} of v1 survived GC");
        // The bytes go too (containerd may delete the files just after answering).
        blobswarm_testkit::wait_until(Duration::from_secs(10), "v1 blob file removed", || {
            !content_file(ctd, d).exists()
        });
    }
    for d in v2_blobs.iter().chain([&v2.manifest_digest]) {
        assert!(has_content(ctd, d), "{d} of v2 was collected");
        assert!(content_file(ctd, d).is_file(), "{d} of v2 lost its file");
    }
    let snapshots = committed_snapshots(ctd);
    let v1_top = v1_chains.last().unwrap();
    assert!(!v2_chains.contains(v1_top));
    assert!(!snapshots.contains(v1_top), "v1's snapshot survived GC");
    for c in &v2_chains {
        assert!(
            snapshots.contains(c),
            "v2 snapshot {c} collected: {snapshots:?}"
        );
    }
    eprintln!(
        "GC reclaimed {} v1 blobs and {} snapshots; v2 intact",
        v1_only.len(),
        v1_chains.iter().filter(|c| !v2_chains.contains(c)).count()
    );

    // v2 still runs.
    let id = format!("bsw-sup-{}", std::process::id());
    let out = ctr_run(
        ctd,
        REF,
        &id,
        &["/bin/busybox", "cat", "/etc/blobswarm-test"],
    );
    assert!(out.contains("blobswarm test image v2, seed 22"), "{out}");
}
