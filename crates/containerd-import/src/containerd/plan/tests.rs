//! Unit tests of the parent module.

use std::path::Path;

use serde_json::json;

use super::*;
use crate::containerd::BlobFile;

const LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

fn amd64() -> Platform {
    Platform {
        os: "linux".into(),
        architecture: "amd64".into(),
        variant: None,
    }
}

fn doc(media_type: &str, v: &Value) -> Document {
    let bytes = serde_json::to_vec(v).unwrap();
    Document {
        digest: Digest::of(&bytes),
        media_type: media_type.into(),
        bytes,
    }
}

fn desc(d: &Document) -> Value {
    json!({"mediaType": d.media_type, "digest": d.digest.to_string(), "size": d.bytes.len()})
}

/// Writes `bytes` as a blob file in `dir`.
fn blob(dir: &Path, media_type: &str, bytes: &[u8]) -> BlobFile {
    let digest = Digest::of(bytes);
    let path = dir.join(digest.hex());
    fs::write(&path, bytes).unwrap();
    BlobFile {
        digest,
        size: bytes.len() as u64,
        media_type: media_type.into(),
        path,
    }
}

fn blob_desc(b: &BlobFile) -> Value {
    json!({"mediaType": b.media_type, "digest": b.digest.to_string(), "size": b.size})
}

/// A manifest with `layers` (media types) whose config names `arch`; returns the
/// manifest and its blobs (config first). Layer i's diff_id is its own digest here.
fn manifest(dir: &Path, arch: &str, layers: &[&str]) -> (Document, Vec<BlobFile>) {
    let layer_blobs: Vec<BlobFile> = layers
        .iter()
        .enumerate()
        .map(|(i, mt)| blob(dir, mt, format!("layer {i} {arch}").as_bytes()))
        .collect();
    let diff_ids: Vec<String> = layer_blobs.iter().map(|b| b.digest.to_string()).collect();
    let config = blob(
        dir,
        OCI_CONFIG_TYPE,
        &serde_json::to_vec(&json!({
            "architecture": arch, "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": diff_ids}
        }))
        .unwrap(),
    );
    let m = doc(
        "application/vnd.oci.image.manifest.v1+json",
        &json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": blob_desc(&config),
            "layers": layer_blobs.iter().map(blob_desc).collect::<Vec<_>>(),
        }),
    );
    (m, std::iter::once(config).chain(layer_blobs).collect())
}

const OCI_CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";

fn single(dir: &Path, layers: &[&str]) -> ImageToImport {
    let (root, blobs) = manifest(dir, "amd64", layers);
    ImageToImport {
        reference: "reg.local/app:v1".into(),
        root,
        manifests: vec![],
        blobs,
        release_line: None,
    }
}

#[test]
fn chain_ids_match_containerd() {
    let [a, b, c] = ["a", "b", "c"].map(|x| format!("sha256:{}", x.repeat(64)));
    // Computed independently: sha256 over "<previous chain> <diff_id>".
    assert_eq!(
        chain_ids(&[a.clone(), b, c]),
        [
            a,
            "sha256:ccd722928bd92476ba1745586fed6e45a102504185ad88cd89e01ff116fd146c".into(),
            "sha256:c1377126441fb2f5ec2c21ae2a60255331d639e830f0ee1b40a36e52d4c40588".into(),
        ]
    );
}

#[test]
fn manifest_plan_writes_children_first_with_labels_and_three_names() {
    let dir = tempfile::tempdir().unwrap();
    let image = single(dir.path(), &[LAYER, LAYER]);
    let plan = Plan::build(&image, &amd64()).unwrap();
    plan.check_files().unwrap();
    let config = image.blobs[0].digest;
    assert_eq!(
        plan.names,
        [
            "reg.local/app:v1".to_owned(),
            format!("reg.local/app@{}", image.root.digest),
            config.to_string(),
        ]
    );
    let order: Vec<Digest> = plan.content.iter().map(|c| c.digest).collect();
    let mut want: Vec<Digest> = image.blobs.iter().map(|b| b.digest).collect();
    want.push(image.root.digest);
    assert_eq!(order, want, "blobs before the manifest");
    let root = plan.content.last().unwrap();
    assert_eq!(root.labels[LABEL_GC_CONFIG], config.to_string());
    assert_eq!(
        root.labels[&format!("{LABEL_GC_LAYER}1")],
        image.blobs[2].digest.to_string()
    );
    assert_eq!(
        plan.content[1].labels[LABEL_UNCOMPRESSED],
        image.blobs[1].digest.to_string()
    );
    // The config is sent from memory (it was read once, for its diff_ids).
    assert!(matches!(plan.content[0].source, Source::Bytes(_)));
    assert!(matches!(plan.content[1].source, Source::File(_)));
    let unpack = plan.unpack.unwrap();
    assert_eq!(unpack.config, config);
    assert_eq!(unpack.layers.len(), 2);
    assert_eq!(unpack.layers[0].chain_id, unpack.layers[0].diff_id);
    assert_eq!(plan.target.digest, image.root.digest);
}

#[test]
fn foreign_and_unknown_layers_are_refused_naming_digest_and_type() {
    let dir = tempfile::tempdir().unwrap();
    for mt in [
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/x-unknown",
    ] {
        let image = single(dir.path(), &[LAYER, mt]);
        let err = Plan::build(&image, &amd64()).unwrap_err();
        match &err {
            ContainerdError::UnsupportedLayer {
                layer, media_type, ..
            } => {
                assert_eq!(*layer, image.blobs[2].digest);
                assert_eq!(media_type, mt);
            }
            other => panic!("{mt}: {other:?}"),
        }
        assert!(err.to_string().contains(&image.blobs[2].digest.to_string()));
    }
}

#[test]
fn index_unpacks_the_host_platform_only_and_references_every_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let (arm, arm_blobs) = manifest(dir.path(), "arm64", &[LAYER]);
    let (amd, amd_blobs) = manifest(dir.path(), "amd64", &[LAYER, LAYER]);
    // An attestation-like entry whose layer type nobody could unpack.
    let (att, att_blobs) = manifest(dir.path(), "unknown", &["application/vnd.in-toto+json"]);
    let entry = |d: &Document, os: &str, arch: &str| {
        let mut e = desc(d);
        e["platform"] = json!({"os": os, "architecture": arch});
        e
    };
    let root = doc(
        "application/vnd.oci.image.index.v1+json",
        &json!({"schemaVersion": 2, "manifests": [
            entry(&arm, "linux", "arm64"),
            entry(&amd, "linux", "amd64"),
            entry(&att, "unknown", "unknown"),
        ]}),
    );
    let image = ImageToImport {
        reference: "reg.local/app:v1".into(),
        root,
        manifests: vec![arm.clone(), amd.clone(), att.clone()],
        blobs: arm_blobs
            .into_iter()
            .chain(amd_blobs.clone())
            .chain(att_blobs)
            .collect(),
        release_line: None,
    };
    let plan = Plan::build(&image, &amd64()).unwrap();
    assert_eq!(plan.unpack.as_ref().unwrap().config, amd_blobs[0].digest);
    assert_eq!(plan.names[2], amd_blobs[0].digest.to_string());
    let root_item = plan.content.last().unwrap();
    assert_eq!(root_item.digest, image.root.digest);
    for (i, m) in [&arm, &amd, &att].iter().enumerate() {
        assert_eq!(
            root_item.labels[&format!("{LABEL_GC_MANIFEST}{i}")],
            m.digest.to_string()
        );
        let pos = plan.content.iter().position(|c| c.digest == m.digest);
        assert!(pos.is_some(), "manifest {i} is written");
    }
    // Manifests after all blobs, the index last.
    let first_manifest = plan
        .content
        .iter()
        .position(|c| c.digest == arm.digest)
        .unwrap();
    assert_eq!(first_manifest, image.blobs.len());
    // No platform manifest here: nothing to unpack, no image ID.
    let riscv = Platform {
        architecture: "riscv64".into(),
        ..amd64()
    };
    let plan = Plan::build(&image, &riscv).unwrap();
    assert!(plan.unpack.is_none());
    assert_eq!(plan.names.len(), 2);
}

#[test]
fn inconsistent_images_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    // Wrong file size on disk.
    let image = single(dir.path(), &[LAYER]);
    fs::write(&image.blobs[1].path, b"longer than before").unwrap();
    let err = Plan::build(&image, &amd64())
        .unwrap()
        .check_files()
        .unwrap_err();
    assert!(matches!(err, ContainerdError::BlobSize { .. }), "{err:?}");
    // Missing file.
    let mut image = single(dir.path(), &[LAYER]);
    image.blobs[1].path = dir.path().join("absent");
    let err = Plan::build(&image, &amd64())
        .unwrap()
        .check_files()
        .unwrap_err();
    assert!(
        matches!(err, ContainerdError::MissingBlob { .. }),
        "{err:?}"
    );
    // A manifest whose bytes do not match its digest.
    let mut image = single(dir.path(), &[LAYER]);
    image.root.bytes.push(b' ');
    let err = Plan::build(&image, &amd64()).unwrap_err();
    assert!(
        matches!(err, ContainerdError::BadDocument { .. }),
        "{err:?}"
    );
    // A reference pinned to another digest.
    let mut image = single(dir.path(), &[LAYER]);
    image.reference = format!("reg.local/app@{}", Digest::of(b"other"));
    let err = Plan::build(&image, &amd64()).unwrap_err();
    assert!(
        matches!(err, ContainerdError::BadReference { .. }),
        "{err:?}"
    );
    // A blob the manifest needs that the image does not list.
    let mut image = single(dir.path(), &[LAYER]);
    image.blobs.pop();
    let err = Plan::build(&image, &amd64()).unwrap_err();
    assert!(
        matches!(err, ContainerdError::BadDocument { .. }),
        "{err:?}"
    );
}

#[test]
fn diff_ids_must_fit_the_layers() {
    let dir = tempfile::tempdir().unwrap();
    let mut image = single(dir.path(), &[LAYER, LAYER]);
    let config = blob(
        dir.path(),
        OCI_CONFIG_TYPE,
        br#"{"rootfs":{"type":"layers","diff_ids":[]}}"#,
    );
    let mut m: Value = serde_json::from_slice(&image.root.bytes).unwrap();
    m["config"] = blob_desc(&config);
    image.root = doc("application/vnd.oci.image.manifest.v1+json", &m);
    image.blobs[0] = config;
    let err = Plan::build(&image, &amd64()).unwrap_err();
    assert!(
        matches!(err, ContainerdError::BadDocument { what: "config", .. }),
        "{err:?}"
    );
}

#[test]
fn layout_constructor_finds_the_tag_and_walks_the_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("oci");
    let blobs_dir = layout.join("blobs/sha256");
    fs::create_dir_all(&blobs_dir).unwrap();
    let image = single(&blobs_dir, &[LAYER, LAYER]);
    fs::write(blobs_dir.join(image.root.digest.hex()), &image.root.bytes).unwrap();
    let mut entry = desc(&image.root);
    entry["annotations"] = json!({crate::REF_NAME_ANNOTATION: "v1"});
    fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [entry]})).unwrap(),
    )
    .unwrap();
    let read = ImageToImport::from_oci_layout(&layout, "v1").unwrap();
    assert_eq!(read.reference, "v1");
    assert_eq!(read.root, image.root);
    assert_eq!(read.blobs, image.blobs);
    let read = read.with_reference("reg.local/app:v1");
    read.validate().unwrap();
    assert_eq!(
        read.names().unwrap(),
        Plan::build(&image, &Platform::host()).unwrap().names
    );
    let err = ImageToImport::from_oci_layout(&layout, "v2").unwrap_err();
    assert!(matches!(err, ContainerdError::Layout { .. }), "{err:?}");
    assert!(err.to_string().contains("v2"));
}
