//! End-to-end tests of the OCI layout source on layouts written by umoci.

mod common;

use std::fs;

use blobswarm_seeder::source::{Source, SourceError, SourceOptions, media_type};
use blobswarm_testkit::{LayoutImage, build_test_image, build_test_index};
use common::{
    RANDOM_BYTES, assert_blobs_stream_intact, assert_test_image_shape, blob_triples, info_triples,
};

fn layout_source(spec: &str) -> Source {
    Source::parse(spec, SourceOptions::default()).unwrap()
}

#[tokio::test]
async fn resolves_and_streams_an_umoci_layout() {
    let Some(built) = LayoutImage::build(RANDOM_BYTES, 11) else {
        return;
    };
    let (layout, info) = (&built.layout, &built.image);
    assert_test_image_shape(info);

    for spec in [
        built.source(),
        // One image in the layout: the tag may be left out.
        format!("oci-layout:{}", layout.display()),
    ] {
        let source = layout_source(&spec);
        let resolved = source.resolve().await.unwrap();
        assert_eq!(resolved.reference, "v1", "{spec}");
        assert_eq!(resolved.root.digest.to_string(), info.manifest_digest);
        assert_eq!(resolved.root.media_type, media_type::OCI_MANIFEST);
        assert!(resolved.manifests.is_empty());
        assert_eq!(blob_triples(&resolved.blobs), info_triples(&info.blobs()));
        assert_blobs_stream_intact(&source, &resolved.blobs).await;
    }

    // A second image: now the tag is required, and wrong tags are named.
    build_test_image(layout, "v2", 1024, 12);
    let err = layout_source(&format!("oci-layout:{}", layout.display()))
        .resolve()
        .await
        .unwrap_err();
    match &err {
        SourceError::LayoutAmbiguous { available, .. } => {
            assert!(available.contains(&"v1".to_owned()) && available.contains(&"v2".to_owned()));
        }
        other => panic!("expected LayoutAmbiguous, got {other:?}"),
    }
    let err = layout_source(&format!("oci-layout:{}:nope", layout.display()))
        .resolve()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, SourceError::LayoutRefNotFound { tag, available, .. }
            if tag == "nope" && available.len() == 2),
        "{err:?}"
    );
}

#[tokio::test]
async fn resolves_an_index_in_a_layout() {
    let Some(built) = LayoutImage::build(2048, 1) else {
        return;
    };
    let layout = &built.layout;
    let index = build_test_index(layout, "v1", "multi", &["linux/amd64", "linux/arm/v7"]);

    let spec = format!("oci-layout:{}:multi", layout.display());
    let all = layout_source(&spec).resolve().await.unwrap();
    assert_eq!(all.root.digest.to_string(), index.digest);
    assert_eq!(all.manifests.len(), 2);
    assert_eq!(all.blobs.len(), 5);

    let opts = SourceOptions {
        platform: Some("linux/arm/v7".into()),
        ..SourceOptions::default()
    };
    let arm = Source::parse(&spec, opts).unwrap().resolve().await.unwrap();
    assert_eq!(
        arm.root.digest.to_string(),
        index.manifests[1].1.manifest_digest
    );

    let opts = SourceOptions {
        platform: Some("linux/arm/v6".into()),
        ..SourceOptions::default()
    };
    let err = Source::parse(&spec, opts)
        .unwrap()
        .resolve()
        .await
        .unwrap_err();
    assert!(
        matches!(err, SourceError::PlatformNotFound { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn tampered_layouts_are_refused() {
    let Some(built) = LayoutImage::build(4096, 2) else {
        return;
    };
    let (layout, info) = (&built.layout, &built.image);
    let source = layout_source(&built.source());
    let resolved = source.resolve().await.unwrap();
    let blob_file = |digest: &str| {
        layout
            .join("blobs/sha256")
            .join(digest.strip_prefix("sha256:").unwrap())
    };

    // A truncated layer is refused when opened (size), before any hashing.
    let layer = &resolved.blobs[2];
    let path = blob_file(&layer.digest.to_string());
    let bytes = fs::read(&path).unwrap();
    fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
    let err = source.open_blob(layer).await.err().expect("truncated blob");
    assert!(
        matches!(err, SourceError::BlobSizeMismatch { expected, actual, .. }
            if expected == layer.size && actual == layer.size - 1),
        "{err:?}"
    );
    fs::remove_file(&path).unwrap();
    let err = source.open_blob(layer).await.err().expect("missing blob");
    assert!(matches!(err, SourceError::BlobNotFound { .. }), "{err:?}");

    // A manifest whose bytes changed (same length) no longer matches its digest.
    let manifest = blob_file(&info.manifest_digest);
    let mut bytes = fs::read(&manifest).unwrap();
    let pos = bytes.iter().position(|&b| b == b'2').unwrap();
    bytes[pos] = b'3';
    fs::write(&manifest, &bytes).unwrap();
    let err = source.resolve().await.unwrap_err();
    assert!(
        matches!(&err, SourceError::ManifestDigestMismatch { expected, .. }
            if expected.to_string() == info.manifest_digest),
        "{err:?}"
    );

    // Not a layout at all.
    let err = layout_source(&format!(
        "oci-layout:{}:v1",
        built.root.join("nowhere").display()
    ))
    .resolve()
    .await
    .unwrap_err();
    assert!(matches!(err, SourceError::Layout { .. }), "{err:?}");
}
