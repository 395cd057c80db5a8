//! One conformance body for every [`ImportTarget`], run against the OCI layout target and
//! (with the `containerd` feature, as root) a real, private containerd: import an image,
//! import it again (a no-op that says so), and read the image back with the target's own
//! tools (`skopeo`/`umoci` for the layout; `ctr images ls` and `ctr run` for containerd).

use std::path::Path;

use blobswarm_containerd_import::containerd::{ImageToImport, ImportReport};
use blobswarm_containerd_import::{ImportTarget, TargetConfig, connect};
use blobswarm_testkit::{build_test_image, require_tools};

#[cfg(feature = "containerd")]
mod support;

const REF: &str = "registry.local/blobswarm/conformance:v1";

/// The image every target imports: umoci-built, busybox inside, one random layer.
fn image(tmp: &Path) -> ImageToImport {
    let src = tmp.join("src");
    build_test_image(&src, "v1", 1 << 20, 5);
    ImageToImport::from_oci_layout(&src, "v1")
        .unwrap()
        .with_reference(REF)
}

/// The shared body: first import writes everything and records the name; the second
/// finds everything in place and changes nothing. Returns both reports.
async fn import_twice(target: &dyn ImportTarget, image: &ImageToImport) -> [ImportReport; 2] {
    let kind = target.kind();
    target
        .ping()
        .await
        .unwrap_or_else(|e| panic!("{kind}: ping: {e}"));
    let content = image.blobs.len() + image.manifests.len() + 1;

    let first = target
        .import(image)
        .await
        .unwrap_or_else(|e| panic!("{kind}: first import: {e}"));
    eprintln!("{kind} first import: {first}");
    assert_eq!(first.names.first().map(String::as_str), Some(REF), "{kind}");
    assert_eq!(first.content_written, content, "{kind}: {first:?}");
    assert_eq!(first.content_present, 0, "{kind}: {first:?}");
    assert!(first.records_created >= 1, "{kind}: {first:?}");
    assert!(!first.changed_nothing(), "{kind}: {first:?}");

    let second = target
        .import(image)
        .await
        .unwrap_or_else(|e| panic!("{kind}: second import: {e}"));
    eprintln!("{kind} second import: {second}");
    assert!(second.changed_nothing(), "{kind}: {second:?}");
    assert_eq!(second.content_present, content, "{kind}: {second:?}");
    assert_eq!(second.bytes_written, 0, "{kind}: {second:?}");
    assert_eq!(
        second.records_unchanged, first.records_created,
        "{kind}: {second:?}"
    );
    [first, second]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oci_layout_target_conforms() {
    if !require_tools(&["umoci", "skopeo", "busybox"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let image = image(tmp.path());
    let dest = tmp.path().join("dest");
    let target = connect(TargetConfig::OciLayout(dest.clone()), None)
        .await
        .unwrap();
    assert_eq!(target.kind(), "oci-layout");
    import_twice(&*target, &image).await;

    // Readable by standard OCI tools under the recorded name, byte for byte.
    let out = blobswarm_testkit::run(std::process::Command::new("skopeo").args([
        "inspect",
        "--raw",
        &format!("oci:{}:{REF}", dest.display()),
    ]));
    assert_eq!(
        out.stdout, image.root.bytes,
        "skopeo reads another manifest"
    );
    let out = blobswarm_testkit::run(std::process::Command::new("umoci").args([
        "ls",
        "--layout",
        dest.to_str().unwrap(),
    ]));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(REF),
        "umoci ls does not list {REF}"
    );
}

#[cfg(feature = "containerd")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_target_conforms() {
    use blobswarm_testkit::{Containerd, require_containerd};

    if !(require_containerd() & require_tools(&["umoci", "busybox"])) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let ctd = Containerd::start(tmp.path());
    let image = image(tmp.path());
    let target = connect(TargetConfig::Containerd(support::config(&ctd)), None)
        .await
        .unwrap();
    assert_eq!(target.kind(), "containerd");
    import_twice(&*target, &image).await;

    // The CRI's view: the name points at the root document.
    let listed = ctd.ctr_ok(&["images", "ls"]);
    let record = listed
        .lines()
        .find(|l| l.split_whitespace().next() == Some(REF))
        .unwrap_or_else(|| panic!("{REF} not in ctr images ls:\n{listed}"));
    assert!(record.contains(&image.root.digest.to_string()), "{record}");
    // And a container runs from it.
    let id = format!("bsw-conf-{}", std::process::id());
    let out = support::ctr_run(&ctd, REF, &id, &["/bin/busybox", "echo", "OK"]);
    assert_eq!(out.trim(), "OK");
}

/// Without the `containerd` feature the target is still chosen at run time: asking for
/// it is an error that says how to get it, not a compile-time difference for callers.
#[cfg(not(feature = "containerd"))]
#[tokio::test]
async fn containerd_without_the_feature_is_refused_at_run_time() {
    use blobswarm_containerd_import::TargetError;
    use blobswarm_containerd_import::containerd::ContainerdConfig;

    let err = connect(TargetConfig::Containerd(ContainerdConfig::default()), None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, TargetError::ContainerdNotBuilt { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("--features containerd"), "{err}");
}
