//! End-to-end tests of the registry source against a real distribution registry,
//! with images built by umoci and pushed by skopeo.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use blobswarm_seeder::source::{ResolvedImage, Source, SourceError, SourceOptions, media_type};
use blobswarm_testkit::{
    self as tk, PrivateImage, PushFormat, Registry, RegistryAuth, TEST_PASSWORD, TEST_USER,
    build_test_image, build_test_index, push_image, push_image_with, push_index,
};
use common::{
    RANDOM_BYTES, assert_blobs_stream_intact, assert_test_image_shape, auth_failure, blob_triples,
    info_triples, insecure, insecure_as, registry_and_layout,
};

#[tokio::test]
async fn resolves_a_pushed_image_and_fetches_each_blob_exactly_once() {
    let Some(fixture) = registry_and_layout() else {
        return;
    };
    let (registry, layout) = (&fixture.registry, &fixture.layout);
    let info = build_test_image(layout, "v1", RANDOM_BYTES, 42);
    assert_test_image_shape(&info);
    let reference = push_image(layout, "v1", &registry.addr(), "test/img");
    let mark = registry.mark_log();

    let source = Source::parse(&reference, insecure(&registry.addr())).unwrap();
    let resolved = source.resolve().await.unwrap();

    assert_eq!(resolved.reference, reference);
    assert_eq!(resolved.root.digest.to_string(), info.manifest_digest);
    assert_eq!(resolved.root.media_type, media_type::OCI_MANIFEST);
    assert_eq!(resolved.root.bytes.len() as u64, info.manifest_size);
    assert!(resolved.manifests.is_empty());
    assert_eq!(blob_triples(&resolved.blobs), info_triples(&info.blobs()));

    assert_blobs_stream_intact(&source, &resolved.blobs).await;

    // The access log line is written just after each response: wait for all of
    // them, give stragglers a moment, then require exactly one GET per blob.
    let expected: HashMap<String, usize> = info
        .blobs()
        .into_iter()
        .map(|b| (b.digest, 1usize))
        .collect();
    tk::wait_until(
        Duration::from_secs(10),
        "every blob GET appears in the registry access log",
        || registry.blob_gets_since(mark).len() == expected.len(),
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        registry.blob_gets_since(mark),
        expected,
        "blob GETs after the push (registry log: {})",
        registry.log_path().display()
    );

    // The same image by digest: same root, canonical name keeps the digest.
    let by_digest = format!("{}/test/img@{}", registry.addr(), info.manifest_digest);
    let source = Source::parse(&by_digest, insecure(&registry.addr())).unwrap();
    let again = source.resolve().await.unwrap();
    assert_eq!(again.reference, by_digest);
    assert_eq!(again.root, resolved.root);
    assert_eq!(again.blobs, resolved.blobs);
}

#[tokio::test]
async fn resolves_docker_v2_schema2_manifests() {
    let Some(fixture) = registry_and_layout() else {
        return;
    };
    let (registry, layout) = (&fixture.registry, &fixture.layout);
    let info = build_test_image(layout, "v1", RANDOM_BYTES, 7);
    let reference = push_image_with(
        layout,
        "v1",
        &registry.addr(),
        "test/docker",
        PushFormat::DockerV2S2,
        None,
    );

    let source = Source::parse(&reference, insecure(&registry.addr())).unwrap();
    let resolved = source.resolve().await.unwrap();
    assert_eq!(resolved.root.media_type, media_type::DOCKER_MANIFEST);
    assert_ne!(resolved.root.digest.to_string(), info.manifest_digest);
    assert_eq!(resolved.blobs.len(), 4);
    let digests: Vec<String> = resolved
        .blobs
        .iter()
        .map(|b| b.digest.to_string())
        .collect();
    let want: Vec<String> = info.blobs().into_iter().map(|b| b.digest).collect();
    assert_eq!(digests, want, "skopeo keeps config and layer bytes");
    assert!(
        resolved.blobs[1..]
            .iter()
            .all(|b| b.media_type == "application/vnd.docker.image.rootfs.diff.tar.gzip"),
        "{:?}",
        resolved.blobs
    );
    assert_blobs_stream_intact(&source, &resolved.blobs).await;
}

#[tokio::test]
async fn resolves_a_two_platform_index() {
    let Some(fixture) = registry_and_layout() else {
        return;
    };
    let (registry, layout) = (&fixture.registry, &fixture.layout);
    build_test_image(layout, "base", RANDOM_BYTES, 3);
    let index = build_test_index(layout, "base", "multi", &["linux/amd64", "linux/arm64/v8"]);
    let reference = push_index(layout, "multi", &registry.addr(), "test/multi");
    let (amd64, arm64) = (&index.manifests[0].1, &index.manifests[1].1);
    assert_ne!(amd64.config.digest, arm64.config.digest);
    assert_eq!(amd64.layers, arm64.layers);

    // No platform: the index itself and both manifests.
    let source = Source::parse(&reference, insecure(&registry.addr())).unwrap();
    let all = source.resolve().await.unwrap();
    assert_eq!(all.root.digest.to_string(), index.digest);
    assert_eq!(all.root.media_type, media_type::OCI_INDEX);
    let children: Vec<String> = all.manifests.iter().map(|m| m.digest.to_string()).collect();
    assert_eq!(
        children,
        vec![amd64.manifest_digest.clone(), arm64.manifest_digest.clone()]
    );
    // Deduplicated: amd64 config, the three shared layers, arm64 config.
    let mut want = info_triples(&amd64.blobs());
    want.extend(info_triples(std::slice::from_ref(&arm64.config)));
    assert_eq!(blob_triples(&all.blobs), want);
    assert_blobs_stream_intact(&source, &all.blobs).await;

    // A platform: just that manifest becomes the root.
    let one = resolve_platform(&reference, &registry.addr(), "linux/arm64")
        .await
        .unwrap();
    assert_eq!(one.root.digest.to_string(), arm64.manifest_digest);
    assert_eq!(one.root.media_type, media_type::OCI_MANIFEST);
    assert!(one.manifests.is_empty());
    assert_eq!(blob_triples(&one.blobs), info_triples(&arm64.blobs()));

    // An unknown platform names what there is.
    let err = resolve_platform(&reference, &registry.addr(), "linux/s390x")
        .await
        .unwrap_err();
    match &err {
        SourceError::PlatformNotFound { wanted, available } => {
            assert_eq!(wanted, "linux/s390x");
            assert_eq!(available, &["linux/amd64", "linux/arm64/v8"]);
        }
        other => panic!("expected PlatformNotFound, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("linux/s390x") && msg.contains("linux/arm64/v8"),
        "{msg}"
    );
}

/// Resolves `reference` from the plain-HTTP registry at `addr` for `platform`.
async fn resolve_platform(
    reference: &str,
    addr: &str,
    platform: &str,
) -> Result<ResolvedImage, SourceError> {
    let opts = SourceOptions {
        platform: Some(platform.into()),
        ..insecure(addr)
    };
    Source::parse(reference, opts).unwrap().resolve().await
}

#[tokio::test]
async fn basic_auth_is_used_and_failures_are_auth_errors() {
    let Some(private) = PrivateImage::start(RegistryAuth::Basic, "private/img", 5) else {
        return;
    };
    let (registry, info, reference) = (&private.registry, &private.image, &private.reference);
    let with = |user, password| insecure_as(&registry.addr(), user, password);

    let source = Source::parse(reference, with(Some(TEST_USER), Some(TEST_PASSWORD))).unwrap();
    let resolved = source.resolve().await.unwrap();
    assert_eq!(resolved.root.digest.to_string(), info.manifest_digest);
    assert_blobs_stream_intact(&source, &resolved.blobs).await;

    let wrong = "definitely-wrong-password";
    let opts = with(Some(TEST_USER), Some(wrong));
    let text = auth_failure(reference, opts, &registry.addr(), wrong).await;
    assert!(
        text.contains("refused the credentials") && text.contains("401") && !text.contains('\n'),
        "{text}"
    );

    let err = Source::parse(reference, with(None, None))
        .unwrap()
        .resolve()
        .await
        .unwrap_err();
    assert!(matches!(err, SourceError::AuthFailed { .. }), "{err:?}");
}

#[tokio::test]
async fn bearer_token_auth_is_used_and_failures_are_auth_errors() {
    let Some(private) = PrivateImage::start(RegistryAuth::Token, "private/tok", 6) else {
        return;
    };
    let (registry, info, reference) = (&private.registry, &private.image, &private.reference);
    let tokens = private.tokens.as_ref().expect("a token service");
    let with = |user, password| insecure_as(&registry.addr(), user, password);

    let issued = tokens.issued();
    let source = Source::parse(reference, with(Some(TEST_USER), Some(TEST_PASSWORD))).unwrap();
    let resolved = source.resolve().await.unwrap();
    assert_eq!(resolved.root.digest.to_string(), info.manifest_digest);
    assert_blobs_stream_intact(&source, &resolved.blobs).await;
    assert!(tokens.issued() > issued, "no token was issued");
    // The registry saw bearer-authorized requests succeed (an anonymous or basic one
    // would be 401).
    let log = registry.log();
    assert!(
        log.contains("\"GET /v2/private/tok/manifests/v1 HTTP/1.1\" 200"),
        "{log}"
    );

    let wrong = "definitely-wrong-password";
    let refused = tokens.refused();
    let opts = with(Some(TEST_USER), Some(wrong));
    let text = auth_failure(reference, opts, &registry.addr(), wrong).await;
    assert!(
        text.contains("token service refused the credentials")
            && text.contains("after 4 attempts")
            && !text.contains('\n'),
        "{text}"
    );
    // The token server counts a refusal after sending it, so the last one may land just
    // after the client gave up: wait briefly for it, then check there was no extra one.
    let attempts = blobswarm_seeder::source::REGISTRY_ATTEMPTS as usize;
    blobswarm_testkit::wait_until(
        std::time::Duration::from_secs(5),
        "the token server to count every refusal",
        || tokens.refused() - refused >= attempts,
    );
    assert_eq!(tokens.refused() - refused, attempts);
}

#[tokio::test]
async fn pull_secret_file_supplies_the_credentials() {
    use base64::Engine as _;
    let Some(private) = PrivateImage::start(RegistryAuth::Basic, "private/sec", 7) else {
        return;
    };
    let (registry, info, reference) = (&private.registry, &private.image, &private.reference);
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let config = format!(
        r#"{{"auths":{{"{}":{{"auth":"{}"}}}}}}"#,
        registry.addr(),
        b64(&format!("{TEST_USER}:{TEST_PASSWORD}"))
    );
    let secret = private.root.join("pull-secret.yaml");
    std::fs::write(
        &secret,
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: regcred\n\
             type: kubernetes.io/dockerconfigjson\ndata:\n  .dockerconfigjson: {}\n",
            b64(&config)
        ),
    )
    .unwrap();
    let opts = SourceOptions {
        auth_file: Some(secret),
        ..insecure(&registry.addr())
    };
    let resolved = Source::parse(reference, opts)
        .unwrap()
        .resolve()
        .await
        .unwrap();
    assert_eq!(resolved.root.digest.to_string(), info.manifest_digest);
}

#[tokio::test]
async fn missing_tag_is_not_found() {
    if !tk::require_tools(&["docker-registry"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let registry = Registry::start(tmp.path());
    let reference = format!("{}/test/none:v9", registry.addr());
    let err = Source::parse(&reference, insecure(&registry.addr()))
        .unwrap()
        .resolve()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, SourceError::NotFound { reference: r } if r.ends_with("test/none:v9")),
        "{err:?}"
    );
}

#[test]
fn bad_references_are_refused_when_parsed() {
    for bad in [
        "",
        "Not A Reference!!",
        "127.0.0.1:5000/UPPER/case:v1",
        "127.0.0.1:5000/repo@sha256:abc",
        "127.0.0.1:5000/repo:bad tag",
    ] {
        let err = Source::parse(bad, SourceOptions::default()).unwrap_err();
        assert!(
            matches!(&err, SourceError::BadReference { reference, .. } if reference == bad),
            "{bad:?}: {err:?}"
        );
    }
    let err = Source::parse(
        "127.0.0.1:5000/repo:v1",
        SourceOptions {
            platform: Some("linux".into()),
            ..SourceOptions::default()
        },
    )
    .unwrap_err();
    assert!(matches!(err, SourceError::BadPlatform { .. }), "{err:?}");
}

#[tokio::test]
async fn closed_port_is_unreachable_quickly() {
    let addr = format!("127.0.0.1:{}", tk::free_port());
    let reference = format!("{addr}/test/img:v1");
    let source = Source::parse(&reference, insecure(&addr)).unwrap();
    let started = Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(10), source.resolve())
        .await
        .expect("resolve against a closed port must fail, not hang")
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    match &err {
        SourceError::Unreachable { registry, cause } => {
            assert_eq!(registry, &addr);
            assert!(!cause.is_empty());
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
    assert!(err.to_string().contains(&addr), "{err}");
}
