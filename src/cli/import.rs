//! `blobswarm import --from DIR`: put an image from an OCI layout into containerd by hand,
//! the same import the agent runs after a swarm download.

use std::path::PathBuf;

/// Arguments of `blobswarm import`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// OCI image layout directory to import from.
    #[arg(long)]
    from: PathBuf,
    /// Which image of the layout (its `org.opencontainers.image.ref.name`).
    #[arg(long = "ref")]
    ref_name: String,
    /// Name to record in containerd, e.g. `registry.example/app:v1` (default: the ref).
    #[arg(long)]
    name: Option<String>,
    #[command(flatten)]
    containerd: super::containerd_args::ContainerdArgs,
}

/// Reads the image from the layout, checks it, and imports it through the same
/// [`ImportTarget`](blobswarm_containerd_import::ImportTarget) the agent uses. A build
/// without the `containerd` feature says so when the target is opened.
pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    use anyhow::Context;
    use blobswarm_containerd_import::containerd::ImageToImport;
    use blobswarm_containerd_import::{Progress, TargetConfig};
    use indicatif::{ProgressBar, ProgressStyle};

    let mut image = ImageToImport::from_oci_layout(&args.from, &args.ref_name)
        .with_context(|| format!("reading {} from {}", args.ref_name, args.from.display()))?;
    if let Some(name) = &args.name {
        image = image.with_reference(name.clone());
    }
    image.validate()?;
    let total: u64 = image.blobs.iter().map(|b| b.size).sum::<u64>()
        + image.root.bytes.len() as u64
        + image
            .manifests
            .iter()
            .map(|m| m.bytes.len() as u64)
            .sum::<u64>();
    let bar = ProgressBar::new(total).with_style(
        ProgressStyle::with_template("import {bar:40} {bytes}/{total_bytes} {bytes_per_sec} {msg}")
            .expect("static template"),
    );
    bar.set_message(image.reference.clone());
    let counter = bar.clone();
    let target = blobswarm_containerd_import::connect(
        TargetConfig::Containerd(args.containerd.config()),
        Some(Progress::new(move |n| counter.inc(n))),
    )
    .await?;
    let report = target
        .import(&image)
        .await
        .with_context(|| format!("importing {}", image.reference))?;
    bar.finish_and_clear();
    println!("{report}");
    Ok(())
}
