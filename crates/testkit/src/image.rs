//! Real OCI images built with `umoci` and pushed with `skopeo`.

use std::fs;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use crate::{PseudoRandom, run, sha256_digest};

const REF_NAME: &str = "org.opencontainers.image.ref.name";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// A config or layer blob of a built image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    /// `sha256:<hex>`.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// Media type as written in the manifest.
    pub media_type: String,
}

/// An image manifest in an OCI layout, as umoci wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// The tag (`org.opencontainers.image.ref.name`) in the layout.
    pub tag: String,
    /// `sha256:<hex>` of the manifest bytes.
    pub manifest_digest: String,
    /// Size of the manifest in bytes.
    pub manifest_size: u64,
    /// Media type of the manifest.
    pub manifest_media_type: String,
    /// The image configuration blob.
    pub config: BlobInfo,
    /// The layers, base first.
    pub layers: Vec<BlobInfo>,
}

impl ImageInfo {
    /// Config first, then layers: the order a seeder lists an image's blobs in.
    pub fn blobs(&self) -> Vec<BlobInfo> {
        std::iter::once(self.config.clone())
            .chain(self.layers.iter().cloned())
            .collect()
    }
}

/// A multi-platform image index in an OCI layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexInfo {
    /// The tag of the index in the layout.
    pub tag: String,
    /// `sha256:<hex>` of the index bytes.
    pub digest: String,
    /// Size of the index in bytes.
    pub size: u64,
    /// `(platform "os/arch[/variant]", manifest)` in index order.
    pub manifests: Vec<(String, ImageInfo)>,
}

/// How [`push_image_with`] writes the manifest to the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushFormat {
    /// Keep the OCI manifest as built (byte for byte).
    Oci,
    /// Convert to a Docker v2 schema 2 manifest (`skopeo --format v2s2`).
    DockerV2S2,
}

pub(crate) fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|uid| uid == "0"))
        })
        .unwrap_or(false)
}

fn image_arg(layout_dir: &Path, tag: &str) -> String {
    format!("{}:{tag}", layout_dir.display())
}

fn umoci_insert(layout_dir: &Path, tag: &str, source: &Path, target: &str) {
    let mut cmd = Command::new("umoci");
    cmd.arg("insert");
    if !is_root() {
        cmd.arg("--rootless");
    }
    cmd.arg("--image")
        .arg(image_arg(layout_dir, tag))
        .arg(source)
        .arg(target);
    run(&mut cmd);
}

fn busybox_path() -> std::path::PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("busybox"))
        .find(|p| p.is_file())
        .expect("busybox not found on PATH (install busybox-static; call require_tool first)")
}

/// Builds the test image `tag` in the OCI layout `layout_dir` (created if needed)
/// with umoci. Layers: 1) `/bin/busybox` plus a `/bin/sh` symlink, 2) a
/// `random_layer_bytes` file `/data/random.bin` of pseudo-random bytes fixed by
/// `seed` (so it does not compress and is reproducible), 3) the text file
/// `/etc/blobswarm-test`. The config's cmd is `["/bin/busybox", "sh"]`.
/// Layer tarballs carry timestamps, so digests differ between builds; read them
/// from the returned [`ImageInfo`].
pub fn build_test_image(
    layout_dir: &Path,
    tag: &str,
    random_layer_bytes: u64,
    seed: u64,
) -> ImageInfo {
    if !layout_dir.join("index.json").exists() {
        run(Command::new("umoci")
            .arg("init")
            .arg("--layout")
            .arg(layout_dir));
    }
    run(Command::new("umoci")
        .arg("new")
        .arg("--image")
        .arg(image_arg(layout_dir, tag)));

    let parent = layout_dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let staging = tempfile::tempdir_in(parent).expect("create staging dir");

    // Layer 1: busybox.
    let bin = staging.path().join("bin");
    fs::create_dir(&bin).expect("create staging bin");
    fs::copy(busybox_path(), bin.join("busybox")).expect("copy busybox");
    std::os::unix::fs::symlink("busybox", bin.join("sh")).expect("symlink sh");
    umoci_insert(layout_dir, tag, &bin, "/bin");

    // Layer 2: reproducible pseudo-random data.
    let random = staging.path().join("random.bin");
    {
        let mut out = BufWriter::new(fs::File::create(&random).expect("create random.bin"));
        let mut rng = PseudoRandom::new(seed);
        let mut buf = vec![0u8; 1 << 20];
        let mut left = random_layer_bytes;
        while left > 0 {
            let n = usize::try_from(left.min(buf.len() as u64)).expect("chunk fits usize");
            rng.fill(&mut buf[..n]);
            out.write_all(&buf[..n]).expect("write random.bin");
            left -= n as u64;
        }
        out.flush().expect("flush random.bin");
    }
    umoci_insert(layout_dir, tag, &random, "/data/random.bin");

    // Layer 3: a small text file.
    let text = staging.path().join("blobswarm-test");
    fs::write(
        &text,
        format!("blobswarm test image {tag}, seed {seed}, {random_layer_bytes} random bytes\n"),
    )
    .expect("write text file");
    umoci_insert(layout_dir, tag, &text, "/etc/blobswarm-test");

    run(Command::new("umoci")
        .arg("config")
        .arg("--image")
        .arg(image_arg(layout_dir, tag))
        .args(["--config.cmd", "/bin/busybox", "--config.cmd", "sh"]));
    run(Command::new("umoci")
        .arg("gc")
        .arg("--layout")
        .arg(layout_dir));

    let info = read_image_info(layout_dir, tag);
    assert!(
        info.layers.len() >= 3,
        "umoci produced {} layers, expected at least 3",
        info.layers.len()
    );
    info
}

fn read_json(path: &Path) -> Value {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

fn blob_path(layout_dir: &Path, digest: &str) -> std::path::PathBuf {
    let hex = digest
        .strip_prefix("sha256:")
        .unwrap_or_else(|| panic!("unexpected digest {digest}"));
    layout_dir.join("blobs").join("sha256").join(hex)
}

fn blob_info(v: &Value) -> BlobInfo {
    BlobInfo {
        digest: v["digest"].as_str().expect("descriptor digest").to_owned(),
        size: v["size"].as_u64().expect("descriptor size"),
        media_type: v["mediaType"]
            .as_str()
            .expect("descriptor mediaType")
            .to_owned(),
    }
}

fn find_ref<'a>(index: &'a Value, layout_dir: &Path, tag: &str) -> &'a Value {
    index["manifests"]
        .as_array()
        .expect("index.json manifests")
        .iter()
        .find(|m| m["annotations"][REF_NAME].as_str() == Some(tag))
        .unwrap_or_else(|| panic!("tag {tag} not in {}/index.json", layout_dir.display()))
}

/// Reads the image manifest tagged `tag` in the OCI layout `layout_dir`.
pub fn read_image_info(layout_dir: &Path, tag: &str) -> ImageInfo {
    let index = read_json(&layout_dir.join("index.json"));
    let desc = blob_info(find_ref(&index, layout_dir, tag));
    let bytes = fs::read(blob_path(layout_dir, &desc.digest)).expect("read manifest blob");
    assert_eq!(sha256_digest(&bytes), desc.digest, "manifest blob digest");
    let manifest: Value = serde_json::from_slice(&bytes).expect("parse manifest");
    ImageInfo {
        tag: tag.to_owned(),
        manifest_digest: desc.digest,
        manifest_size: bytes.len() as u64,
        manifest_media_type: desc.media_type,
        config: blob_info(&manifest["config"]),
        layers: manifest["layers"]
            .as_array()
            .expect("manifest layers")
            .iter()
            .map(blob_info)
            .collect(),
    }
}

/// Builds an OCI image index tagged `index_tag` in `layout_dir` with one manifest
/// per platform (`"os/arch[/variant]"`). Each manifest is `base_tag`'s image with
/// the config's os/architecture rewritten by `umoci config`, so the configs differ
/// and the layers are shared. The index names the platform (variant included) of
/// each entry.
pub fn build_test_index(
    layout_dir: &Path,
    base_tag: &str,
    index_tag: &str,
    platforms: &[&str],
) -> IndexInfo {
    let mut entries = Vec::new();
    let mut manifests = Vec::new();
    for platform in platforms {
        let parts: Vec<&str> = platform.split('/').collect();
        assert!(
            (2..=3).contains(&parts.len()),
            "platform {platform:?} is not os/arch[/variant]"
        );
        let derived = format!("{index_tag}-{}", parts.join("-"));
        run(Command::new("umoci")
            .arg("config")
            .arg("--image")
            .arg(image_arg(layout_dir, base_tag))
            .arg("--tag")
            .arg(&derived)
            .arg("--os")
            .arg(parts[0])
            .arg("--architecture")
            .arg(parts[1]));
        let info = read_image_info(layout_dir, &derived);
        let mut plat = json!({ "architecture": parts[1], "os": parts[0] });
        if let Some(variant) = parts.get(2) {
            plat["variant"] = json!(variant);
        }
        entries.push(json!({
            "mediaType": info.manifest_media_type,
            "digest": info.manifest_digest,
            "size": info.manifest_size,
            "platform": plat,
        }));
        manifests.push(((*platform).to_owned(), info));
    }
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": entries,
    }))
    .expect("serialise index");
    let digest = sha256_digest(&index);
    fs::write(blob_path(layout_dir, &digest), &index).expect("write index blob");

    let index_json_path = layout_dir.join("index.json");
    let mut top = read_json(&index_json_path);
    let list = top["manifests"]
        .as_array_mut()
        .expect("index.json manifests");
    list.retain(|m| m["annotations"][REF_NAME].as_str() != Some(index_tag));
    list.push(json!({
        "mediaType": OCI_INDEX,
        "digest": digest,
        "size": index.len(),
        "annotations": { REF_NAME: index_tag },
    }));
    fs::write(
        &index_json_path,
        serde_json::to_vec(&top).expect("serialise index.json"),
    )
    .expect("write index.json");

    IndexInfo {
        tag: index_tag.to_owned(),
        digest,
        size: index.len() as u64,
        manifests,
    }
}

/// Pushes `tag` of the OCI layout to `registry_addr` (plain http, 127.0.0.1) as
/// `repo:tag`, keeping the manifest byte for byte. Returns the pushed reference
/// `ADDR/REPO:TAG`.
pub fn push_image(layout_dir: &Path, tag: &str, registry_addr: &str, repo: &str) -> String {
    push_image_with(layout_dir, tag, registry_addr, repo, PushFormat::Oci, None)
}

/// [`push_image`] with a manifest format and optional `(user, password)` credentials.
pub fn push_image_with(
    layout_dir: &Path,
    tag: &str,
    registry_addr: &str,
    repo: &str,
    format: PushFormat,
    creds: Option<(&str, &str)>,
) -> String {
    let mut cmd = skopeo_copy(registry_addr, creds);
    if format == PushFormat::DockerV2S2 {
        cmd.args(["--format", "v2s2"]);
    }
    finish_copy(cmd, layout_dir, tag, registry_addr, repo)
}

/// Pushes the image index `tag` of the OCI layout and every manifest it lists
/// (`skopeo copy --all`). Returns `ADDR/REPO:TAG`.
pub fn push_index(layout_dir: &Path, tag: &str, registry_addr: &str, repo: &str) -> String {
    let mut cmd = skopeo_copy(registry_addr, None);
    cmd.arg("--all");
    finish_copy(cmd, layout_dir, tag, registry_addr, repo)
}

fn skopeo_copy(registry_addr: &str, creds: Option<(&str, &str)>) -> Command {
    assert!(
        registry_addr.starts_with("127.0.0.1:"),
        "tests only push to 127.0.0.1, not {registry_addr}"
    );
    let mut cmd = Command::new("skopeo");
    cmd.args(["--insecure-policy", "copy", "--dest-tls-verify=false"]);
    if let Some((user, password)) = creds {
        cmd.arg("--dest-creds").arg(format!("{user}:{password}"));
    }
    cmd
}

fn finish_copy(
    mut cmd: Command,
    layout_dir: &Path,
    tag: &str,
    registry_addr: &str,
    repo: &str,
) -> String {
    let reference = format!("{registry_addr}/{repo}:{tag}");
    cmd.arg(format!("oci:{}", image_arg(layout_dir, tag)))
        .arg(format!("docker://{reference}"));
    run(&mut cmd);
    reference
}
