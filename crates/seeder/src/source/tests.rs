//! Unit tests of the parent module.

use super::*;
use futures::TryStreamExt as _;

fn d(s: &str) -> String {
    Digest::of(s.as_bytes()).to_string()
}

#[test]
fn source_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Source>();
    check::<SourceError>();
}

#[test]
fn parses_manifests_of_both_families() {
    let oci = format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"c","digest":"{}","size":3}},"layers":[{{"mediaType":"l","digest":"{}","size":5}}]}}"#,
        media_type::OCI_MANIFEST,
        d("cfg"),
        d("layer")
    );
    let (doc, parsed) = verify_document(None, None, oci.into_bytes(), None).unwrap();
    assert_eq!(doc.media_type, media_type::OCI_MANIFEST);
    assert!(matches!(parsed, Body::Manifest(ref m) if m.layers.len() == 1));

    // No mediaType field: the announced type is used.
    let docker = format!(
        r#"{{"schemaVersion":2,"config":{{"mediaType":"c","digest":"{}","size":3}},"layers":[]}}"#,
        d("cfg")
    );
    let (doc, _) = verify_document(
        None,
        None,
        docker.into_bytes(),
        Some("application/vnd.docker.distribution.manifest.v2+json; charset=utf-8"),
    )
    .unwrap();
    assert_eq!(doc.media_type, media_type::DOCKER_MANIFEST);

    let list = format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{{"mediaType":"{}","digest":"{}","size":7,"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#,
        media_type::DOCKER_MANIFEST_LIST,
        media_type::DOCKER_MANIFEST,
        d("m")
    );
    let (doc, parsed) = verify_document(None, None, list.into_bytes(), None).unwrap();
    assert_eq!(doc.media_type, media_type::DOCKER_MANIFEST_LIST);
    assert!(matches!(parsed, Body::Index(ref i) if i.manifests.len() == 1));
}

#[test]
fn refuses_bad_documents_with_reasons() {
    let bytes = b"{\"schemaVersion\":1,\"name\":\"x\"}".to_vec();
    assert!(matches!(
        verify_document(None, None, bytes, None),
        Err(SourceError::UnsupportedMediaType { .. })
    ));
    let bytes = b"not json".to_vec();
    assert!(matches!(
        verify_document(None, None, bytes, None),
        Err(SourceError::InvalidDocument { .. })
    ));
    let artifact = br#"{"schemaVersion":2,"mediaType":"application/x-foo","config":{"mediaType":"c","digest":"sha256:00","size":1}}"#.to_vec();
    assert!(matches!(
        verify_document(None, None, artifact, None),
        Err(SourceError::UnsupportedMediaType { media_type, .. }) if media_type == "application/x-foo"
    ));
    let bad_digest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"c","digest":"md5:00","size":1}},"layers":[]}}"#,
        media_type::OCI_MANIFEST
    );
    assert!(matches!(
        verify_document(None, None, bad_digest.into_bytes(), None),
        Err(SourceError::InvalidDocument { .. })
    ));
    let expected = Digest::of(b"other");
    let err = verify_document(Some(&expected), None, b"{}".to_vec(), None).unwrap_err();
    assert!(
        matches!(err, SourceError::ManifestDigestMismatch { expected: e, .. } if e == expected)
    );
    let doc = br#"{"schemaVersion":2,"manifests":[]}"#.to_vec();
    let err = verify_document(None, Some(3), doc, None).unwrap_err();
    assert!(matches!(
        err,
        SourceError::DocumentSizeMismatch { expected: 3, .. }
    ));
}

#[test]
fn blob_set_dedups_and_bounds() {
    let b = |s: &str, size| BlobDescriptor {
        digest: Digest::of(s.as_bytes()),
        size,
        media_type: "x".into(),
    };
    let mut set = BlobSet::default();
    set.add_manifest(b("c1", 1), vec![b("l1", 2), b("l2", 3)])
        .unwrap();
    set.add_manifest(b("c2", 1), vec![b("l1", 2), b("l2", 3)])
        .unwrap();
    let names: Vec<_> = set.list.iter().map(|x| x.digest).collect();
    assert_eq!(
        names,
        ["c1", "l1", "l2", "c2"].map(|s| Digest::of(s.as_bytes()))
    );
    assert!(matches!(
        set.add(b("l1", 9)),
        Err(SourceError::InconsistentBlobSize {
            first: 2,
            second: 9,
            ..
        })
    ));
    let mut big = BlobSet::default();
    for i in 0..MAX_BLOBS {
        big.add(b(&i.to_string(), 1)).unwrap();
    }
    assert!(matches!(
        big.add(b("one more", 1)),
        Err(SourceError::TooManyBlobs { .. })
    ));
}

#[tokio::test]
async fn exact_size_catches_short_and_long_streams() {
    let blob = BlobDescriptor {
        digest: Digest::of(b"abc"),
        size: 3,
        media_type: "x".into(),
    };
    let chunks = |parts: Vec<&'static [u8]>| -> BlobStream {
        Box::pin(futures::stream::iter(
            parts.into_iter().map(|p| Ok(bytes::Bytes::from_static(p))),
        ))
    };
    let ok: Vec<_> = exact_size(chunks(vec![b"a", b"bc"]), &blob)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(ok.concat(), b"abc");
    let short = exact_size(chunks(vec![b"ab"]), &blob)
        .try_collect::<Vec<_>>()
        .await
        .unwrap_err();
    assert_eq!(short.kind(), std::io::ErrorKind::UnexpectedEof);
    let long = exact_size(chunks(vec![b"ab", b"cd"]), &blob)
        .try_collect::<Vec<_>>()
        .await
        .unwrap_err();
    assert_eq!(long.kind(), std::io::ErrorKind::InvalidData);
}

#[test]
fn options_debug_hides_password() {
    let opts = SourceOptions {
        password: Some("hunter2".into()),
        ..SourceOptions::default()
    };
    assert!(!format!("{opts:?}").contains("hunter2"));
}
