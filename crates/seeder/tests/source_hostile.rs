//! The registry source against a hostile registry: a tiny HTTP server on
//! 127.0.0.1 that lies in ways a real registry cannot be made to.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use blobswarm_core::Digest;
use blobswarm_seeder::source::{MAX_DOCUMENT_BYTES, Source, SourceError, media_type};
use common::insecure;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

/// What the fake registry answers to a request path.
enum Answer {
    /// Status, extra headers, body (with Content-Length).
    Full(u16, Vec<(String, String)>, Vec<u8>),
    /// 200 with a body of `len` zero bytes, no Content-Length (ends at close).
    Endless(u64),
    /// Accepts the request and never answers (holds the connection open).
    Stall,
}

/// Serves `answer(path)` for every request, one connection per request.
async fn fake_registry(answer: impl Fn(&str) -> Answer + Send + Sync + 'static) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let answer = Arc::new(answer);
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let answer = Arc::clone(&answer);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
                match answer(&path) {
                    Answer::Stall => {
                        tokio::time::sleep(std::time::Duration::from_secs(600)).await;
                    }
                    Answer::Full(status, headers, body) => {
                        let mut out = format!(
                            "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                            body.len()
                        );
                        for (k, v) in headers {
                            out.push_str(&format!("{k}: {v}\r\n"));
                        }
                        out.push_str("\r\n");
                        let _ = conn.write_all(out.as_bytes()).await;
                        let _ = conn.write_all(&body).await;
                    }
                    Answer::Endless(len) => {
                        let out = format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nConnection: close\r\n\r\n",
                            media_type::OCI_MANIFEST
                        );
                        let _ = conn.write_all(out.as_bytes()).await;
                        let chunk = vec![b' '; 64 * 1024];
                        let mut sent = 0;
                        while sent < len {
                            if conn.write_all(&chunk).await.is_err() {
                                return;
                            }
                            sent += chunk.len() as u64;
                        }
                    }
                }
                let _ = conn.shutdown().await;
            });
        }
    });
    addr
}

/// A [`fake_registry`] that answers `/v2/` itself and every other request with
/// `answer(n)`, `n` counting those requests from 0; returns its address and the count.
async fn counting_registry(
    answer: impl Fn(usize) -> Answer + Send + Sync + 'static,
) -> (String, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&calls);
    let addr = fake_registry(move |path| {
        ok_v2(path).unwrap_or_else(|| answer(seen.fetch_add(1, Ordering::SeqCst)))
    })
    .await;
    (addr, calls)
}

/// Checks that the source made every attempt (`calls`) and that `err` says so on one
/// line naming the registry at `addr`.
fn assert_gave_up(err: &SourceError, calls: &AtomicUsize, addr: &str) {
    assert_eq!(
        calls.load(Ordering::SeqCst),
        blobswarm_seeder::source::REGISTRY_ATTEMPTS as usize
    );
    let text = err.to_string();
    assert!(
        text.contains(addr) && text.contains("after 4 attempts") && !text.contains('\n'),
        "{text}"
    );
}

fn ok_v2(path: &str) -> Option<Answer> {
    (path == "/v2/").then(|| Answer::Full(200, vec![], b"{}".to_vec()))
}

fn manifest_bytes() -> Vec<u8> {
    format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":2}},"layers":[]}}"#,
        media_type::OCI_MANIFEST,
        Digest::of(b"{}")
    )
    .into_bytes()
}

fn manifest_headers() -> Vec<(String, String)> {
    vec![("Content-Type".into(), media_type::OCI_MANIFEST.into())]
}

async fn resolve(reference: &str, addr: &str) -> Result<(), SourceError> {
    Source::parse(reference, insecure(addr))?
        .resolve()
        .await
        .map(|_| ())
}

#[tokio::test]
async fn oversized_manifest_is_refused_by_its_content_length() {
    let addr = fake_registry(|path| {
        ok_v2(path).unwrap_or_else(|| {
            Answer::Full(
                200,
                manifest_headers(),
                vec![b' '; MAX_DOCUMENT_BYTES as usize + 1],
            )
        })
    })
    .await;
    let err = resolve(&format!("{addr}/big/img:v1"), &addr)
        .await
        .unwrap_err();
    assert!(
        matches!(err, SourceError::ManifestTooLarge { size: Some(s), .. } if s == MAX_DOCUMENT_BYTES + 1),
        "{err:?}"
    );
}

#[tokio::test]
async fn oversized_manifest_without_length_is_cut_off() {
    let addr = fake_registry(|path| {
        // 64 MiB offered; the source must stop at 4 MiB.
        ok_v2(path).unwrap_or(Answer::Endless(64 << 20))
    })
    .await;
    let err = resolve(&format!("{addr}/big/img:v1"), &addr)
        .await
        .unwrap_err();
    assert!(
        matches!(err, SourceError::ManifestTooLarge { size: None, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn manifest_not_matching_the_requested_digest_is_refused() {
    let addr = fake_registry(|path| {
        ok_v2(path).unwrap_or_else(|| Answer::Full(200, manifest_headers(), manifest_bytes()))
    })
    .await;
    let wanted = Digest::of(b"some other manifest");
    let err = resolve(&format!("{addr}/x/img@{wanted}"), &addr)
        .await
        .unwrap_err();
    assert!(
        matches!(err, SourceError::ManifestDigestMismatch { expected, actual }
            if expected == wanted && actual == Digest::of(&manifest_bytes())),
        "{err:?}"
    );
}

#[tokio::test]
async fn tag_whose_announced_digest_differs_is_refused() {
    let lie = Digest::of(b"not these bytes");
    let addr = fake_registry(move |path| {
        ok_v2(path).unwrap_or_else(|| {
            let mut headers = manifest_headers();
            headers.push(("Docker-Content-Digest".into(), lie.to_string()));
            Answer::Full(200, headers, manifest_bytes())
        })
    })
    .await;
    let err = resolve(&format!("{addr}/x/img:v1"), &addr)
        .await
        .unwrap_err();
    assert!(
        matches!(err, SourceError::ManifestDigestMismatch { expected, .. } if expected == lie),
        "{err:?}"
    );
}

#[tokio::test]
async fn index_with_too_many_manifests_is_refused() {
    let entries: Vec<String> = (0..65)
        .map(|i| {
            format!(
                r#"{{"mediaType":"{}","digest":"{}","size":10}}"#,
                media_type::OCI_MANIFEST,
                Digest::of(format!("m{i}").as_bytes())
            )
        })
        .collect();
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{}]}}"#,
        media_type::OCI_INDEX,
        entries.join(",")
    );
    let addr = fake_registry(move |path| {
        ok_v2(path).unwrap_or_else(|| Answer::Full(200, vec![], index.clone().into_bytes()))
    })
    .await;
    let err = resolve(&format!("{addr}/x/img:v1"), &addr)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            SourceError::TooManyManifests {
                count: 65,
                limit: 64
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn blob_with_wrong_length_is_refused_before_streaming() {
    let manifest = manifest_bytes();
    let addr = fake_registry(move |path| {
        if let Some(a) = ok_v2(path) {
            a
        } else if path.contains("/manifests/") {
            Answer::Full(200, manifest_headers(), manifest.clone())
        } else {
            // The config is declared as 2 bytes; send 3.
            Answer::Full(200, vec![], b"{} ".to_vec())
        }
    })
    .await;
    let source = Source::parse(&format!("{addr}/x/img:v1"), insecure(&addr)).unwrap();
    let resolved = source.resolve().await.unwrap();
    let err = source.open_blob(&resolved.blobs[0]).await.err().unwrap();
    assert!(
        matches!(
            err,
            SourceError::BlobSizeMismatch {
                expected: 2,
                actual: 3,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn server_errors_are_retried_with_back_off_then_succeed() {
    let (addr, calls) = counting_registry(|n| {
        // Two 503s, then the manifest.
        if n < 2 {
            Answer::Full(503, vec![], b"busy".to_vec())
        } else {
            Answer::Full(200, manifest_headers(), manifest_bytes())
        }
    })
    .await;
    let started = std::time::Instant::now();
    resolve(&format!("{addr}/x/y:v1"), &addr).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    // Back-off of 0.2 s then 0.4 s.
    assert!(started.elapsed() >= std::time::Duration::from_millis(600));
}

#[tokio::test]
async fn persistent_server_errors_fail_after_every_attempt_on_one_line() {
    let (addr, calls) =
        counting_registry(|_| Answer::Full(502, vec![], b"bad\ngateway".to_vec())).await;
    let err = resolve(&format!("{addr}/x/y:v1"), &addr).await.unwrap_err();
    assert_gave_up(&err, &calls, &addr);
    assert!(matches!(err, SourceError::Registry { .. }), "{err:?}");
    assert!(err.to_string().contains("502"), "{err}");
}

/// Resolves with a short read timeout, so a stalled registry fails fast.
async fn resolve_impatient(reference: &str, addr: &str) -> Result<(), SourceError> {
    let opts = blobswarm_seeder::source::SourceOptions {
        read_timeout: Some(std::time::Duration::from_millis(500)),
        ..insecure(addr)
    };
    Source::parse(reference, opts)?.resolve().await.map(|_| ())
}

#[tokio::test]
async fn a_stalled_request_times_out_and_is_retried_with_back_off() {
    let (addr, calls) = counting_registry(|n| {
        // The first manifest request hangs; the retry gets an answer.
        if n == 0 {
            Answer::Stall
        } else {
            Answer::Full(200, manifest_headers(), manifest_bytes())
        }
    })
    .await;
    let started = std::time::Instant::now();
    resolve_impatient(&format!("{addr}/x/y:v1"), &addr)
        .await
        .unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // The 0.5 s timeout, then 0.2 s of back-off.
    assert!(started.elapsed() >= std::time::Duration::from_millis(700));
}

#[tokio::test]
async fn a_registry_that_always_stalls_fails_after_every_attempt_naming_it() {
    let (addr, calls) = counting_registry(|_| Answer::Stall).await;
    let err = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        resolve_impatient(&format!("{addr}/x/y:v1"), &addr),
    )
    .await
    .expect("gives up on its own, within the attempts' timeouts and back-off")
    .unwrap_err();
    assert_gave_up(&err, &calls, &addr);
    assert!(matches!(err, SourceError::Unreachable { .. }), "{err:?}");
}
