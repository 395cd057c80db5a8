//! The API called in-process through `tower::ServiceExt::oneshot`: no port is bound.
//! Seeding goes to the in-memory backend, node reports to a bare aggregator.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use blobswarm_core::wire::ProgressState;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};
use tower::ServiceExt;

use super::{AutoSeed, MIN_TOKEN_LEN, Token, router};
use crate::fake::{FakeBackend, aggregator, image, report, report_unenrolled};
use crate::service::Service;

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

struct App {
    router: Router,
    service: Arc<Service<FakeBackend>>,
    resolved: mpsc::Receiver<String>,
    agg: crate::SharedAggregator,
    /// Publishing waits on it (open unless a test closes it).
    gate: Arc<Semaphore>,
    /// The bans the seeder's agent holds.
    banned: Arc<std::sync::Mutex<Vec<blobswarm_peer::Ban>>>,
}

/// The API over a fake registry holding `app` (→ `reg/app:v1`) and the images of
/// `reg:5000/team/app:v1` and `reg:5000/ops/tool:v2`, auto-seeding per `auto`.
fn app(auto: AutoSeed) -> App {
    let (backend, resolved) = FakeBackend::new(&[
        ("app", image("reg/app:v1", "one")),
        ("reg:5000/team/app:v1", image("reg:5000/team/app:v1", "two")),
        (
            "reg:5000/ops/tool:v2",
            image("reg:5000/ops/tool:v2", "three"),
        ),
        ("reg:5000/other/x:v1", image("reg:5000/other/x:v1", "four")),
    ]);
    let gate = Arc::clone(&backend.gate);
    let banned = Arc::clone(&backend.banned);
    let agg = aggregator();
    let service = Arc::new(Service::new(backend, Arc::clone(&agg)));
    let token = Token::new(TOKEN.into()).expect("long enough");
    // The fake's unqualified `app` is a Docker Hub name.
    let auto = AutoSeed {
        allowed_registries: vec!["docker.io".into()],
        ..auto
    };
    App {
        router: router(Arc::clone(&service), token, auto),
        service,
        resolved,
        agg,
        gate,
        banned,
    }
}

fn auto_seed() -> AutoSeed {
    AutoSeed {
        registry: Some("reg:5000".into()),
        repos: vec!["team/app".into(), "ops/*".into()],
        allowed_registries: vec![],
    }
}

fn request(method: &str, uri: &str, auth: Option<&str>, body: impl Into<Body>) -> Request<Body> {
    let mut r = Request::builder().method(method).uri(uri);
    if let Some(a) = auth {
        r = r.header(header::AUTHORIZATION, a);
    }
    r.header(header::CONTENT_TYPE, "application/json")
        .body(body.into())
        .expect("valid request")
}

fn authed(method: &str, uri: &str, body: impl Into<Body>) -> Request<Body> {
    request(method, uri, Some(&format!("Bearer {TOKEN}")), body)
}

/// Status, content type and body (JSON, or a string for other bodies).
async fn call(router: &Router, req: Request<Body>) -> (StatusCode, String, Value) {
    let res = router.clone().oneshot(req).await.expect("infallible");
    let status = res.status();
    let content_type = res
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .expect("body");
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, content_type, body)
}

fn push(repository: &str, tag: &str, media_type: &str) -> Value {
    json!({
        "action": "push",
        "target": { "mediaType": media_type, "repository": repository, "tag": tag }
    })
}

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

#[test]
fn tokens_shorter_than_the_minimum_are_refused() {
    let err = Token::new("changeme".into()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "API token is 8 characters; at least 32 are required (e.g. openssl rand -hex 32)"
    );
    assert!(Token::new("x".repeat(MIN_TOKEN_LEN - 1)).is_err());
    assert!(Token::new("x".repeat(MIN_TOKEN_LEN)).is_ok());
}

#[tokio::test]
async fn dashboard_is_html_and_needs_no_token() {
    let a = app(AutoSeed::default());
    for uri in ["/", "/dashboard"] {
        let (status, content_type, body) = call(&a.router, request("GET", uri, None, "")).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
        assert_eq!(content_type, "text/html; charset=utf-8", "{uri}");
        let page = body.as_str().expect("not JSON");
        assert!(page.contains("id=\"swarm-size\""), "{uri}: {page:.200}");
    }
}

#[tokio::test]
async fn every_v1_route_refuses_a_missing_or_wrong_token() {
    let mut a = app(auto_seed());
    let wrong_same_length = format!("Bearer {}", "f".repeat(TOKEN.len()));
    let prefix = format!("Bearer {}", &TOKEN[..TOKEN.len() - 1]);
    let longer = format!("Bearer {TOKEN}0");
    let basic = format!("Basic {TOKEN}");
    let notification = json!({ "events": [push("team/app", "v1", MANIFEST)] }).to_string();
    let routes = [
        (
            "POST",
            "/v1/releases",
            json!({ "image": "app" }).to_string(),
        ),
        ("GET", "/v1/releases", String::new()),
        ("GET", "/v1/releases/app", String::new()),
        ("POST", "/v1/notifications", notification),
    ];
    for (method, uri, body) in routes {
        for auth in [
            None,
            Some(wrong_same_length.as_str()),
            Some(prefix.as_str()),
            Some(longer.as_str()),
            Some(basic.as_str()),
            Some(TOKEN),
        ] {
            let (status, _, body) = call(&a.router, request(method, uri, auth, body.clone())).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri} {auth:?}");
            assert_eq!(body, json!({ "error": "missing or wrong bearer token" }));
        }
    }
    assert!(a.resolved.try_recv().is_err(), "nothing was seeded");
    assert!(a.service.swarm().releases.is_empty());
}

#[tokio::test]
async fn trigger_seeds_and_answers_created_with_the_release() {
    let a = app(AutoSeed::default());
    let (status, v) = trigger(&a, "app").await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("sha256:"), "{v}");
    assert_eq!(v["state"], "published");
    assert_eq!(v["reference"], "reg/app:v1");
    assert_eq!(v["image"], "app");
    assert_eq!(v["total_bytes"], 100);

    report(
        &a.agg,
        "node-1",
        id.parse().unwrap(),
        ProgressState::Done,
        100,
        0,
    );
    report_unenrolled(&a.agg, "minted", id.parse().unwrap());
    for key in [id.as_str(), "app"] {
        let (status, _, one) =
            call(&a.router, authed("GET", &format!("/v1/releases/{key}"), "")).await;
        assert_eq!(status, StatusCode::OK, "{key}");
        assert_eq!(one["id"], id.as_str());
        assert_eq!(one["nodes"][0]["node"], "node-1");
        assert_eq!(one["nodes"][0]["state"], "done");
        assert_eq!(one["nodes"].as_array().unwrap().len(), 1);
        assert_eq!(one["ignored"][0]["node"], "minted");
    }
    let (status, _, swarm) = call(&a.router, authed("GET", "/v1/releases", "")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(swarm["nodes"], 1);
    assert_eq!(swarm["lost"], 0);
    assert_eq!(swarm["ignored_total"], 1);
    assert_eq!(swarm["releases"].as_array().unwrap().len(), 1);
    assert_eq!(swarm["releases"][0]["id"], id.as_str());
}

#[tokio::test]
async fn trigger_with_a_bad_body_is_400() {
    let mut a = app(AutoSeed::default());
    for body in ["not json", "{}", r#"{"image": 5}"#, r#"{"img": "app"}"#] {
        let (status, _, v) = call(&a.router, authed("POST", "/v1/releases", body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let msg = v["error"].as_str().unwrap();
        assert!(
            msg.starts_with(r#"body must be {"image": "REF"}: "#),
            "{msg}"
        );
    }
    assert!(a.resolved.try_recv().is_err(), "nothing was seeded");
}

#[tokio::test]
async fn failed_seeding_is_502_and_listed_as_failed() {
    let a = app(AutoSeed::default());
    let (status, v) = trigger(&a, "nope").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let want = "resolving nope: registry fake is unreachable: connection refused";
    assert_eq!(v, json!({ "error": want }));
    let (status, _, job) = call(&a.router, authed("GET", "/v1/releases/nope", "")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(job["state"], "failed");
    assert_eq!(job["error"], want);
}

#[tokio::test]
async fn unknown_release_or_image_is_404() {
    let a = app(AutoSeed::default());
    let unknown = format!("sha256:{}", "0".repeat(64));
    let (status, _, v) = call(
        &a.router,
        authed("GET", &format!("/v1/releases/{unknown}"), ""),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        v,
        json!({ "error": format!("no release or image {unknown}") })
    );
}

#[tokio::test]
async fn a_body_over_one_mib_is_refused_before_parsing() {
    let mut a = app(auto_seed());
    let huge = format!(r#"{{"image": "{}"}}"#, "a".repeat(1 << 20));
    for uri in ["/v1/releases", "/v1/notifications"] {
        let (status, _, _) = call(&a.router, authed("POST", uri, huge.clone())).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{uri}");
    }
    assert!(a.resolved.try_recv().is_err());
}

#[tokio::test]
async fn notification_seeds_allow_listed_manifest_pushes_only() {
    let mut a = app(auto_seed());
    let envelope = json!({ "events": [
        push("team/app", "v1", MANIFEST),
        push("ops/tool", "v2", "application/vnd.oci.image.index.v1+json"),
        push("other/x", "v1", MANIFEST),
        push("team/app", "", MANIFEST),
        push("team/app", "v1", "application/octet-stream"),
        { "action": "pull", "target": { "mediaType": MANIFEST, "repository": "team/app", "tag": "v1" } },
        { "action": "push", "target": { "mediaType": MANIFEST, "repository": "team/app" } },
    ]});
    let (status, _, v) = call(
        &a.router,
        authed("POST", "/v1/notifications", envelope.to_string()),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let want = ["reg:5000/team/app:v1", "reg:5000/ops/tool:v2"];
    assert_eq!(v, json!({ "seeding": want }));
    let mut seen = Vec::new();
    for _ in 0..2 {
        let image = tokio::time::timeout(Duration::from_secs(10), a.resolved.recv())
            .await
            .expect("background seeding started")
            .unwrap();
        seen.push(image);
    }
    seen.sort();
    assert_eq!(seen, ["reg:5000/ops/tool:v2", "reg:5000/team/app:v1"]);
    // Both published in the background; the other repository never asked for.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while a
        .service
        .swarm()
        .releases
        .iter()
        .any(|r| r.state != "published")
    {
        assert!(tokio::time::Instant::now() < deadline, "not published");
        tokio::task::yield_now().await;
    }
    assert_eq!(a.service.swarm().releases.len(), 2);
    assert!(a.resolved.try_recv().is_err());
}

#[tokio::test]
async fn notification_of_a_repository_not_allow_listed_seeds_nothing() {
    let mut a = app(auto_seed());
    let envelope =
        json!({ "events": [push("other/x", "v1", MANIFEST), push("team/app2", "v1", MANIFEST)] });
    let (status, _, v) = call(
        &a.router,
        authed("POST", "/v1/notifications", envelope.to_string()),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v, json!({ "seeding": [] }));
    tokio::task::yield_now().await;
    assert!(a.resolved.try_recv().is_err());
    assert!(a.service.swarm().releases.is_empty());
}

#[tokio::test]
async fn notification_retry_while_seeding_is_a_no_op() {
    let mut a = app(auto_seed());
    a.gate.forget_permits(usize::MAX);
    let envelope = json!({ "events": [push("team/app", "v1", MANIFEST)] }).to_string();
    let (_, _, first) = call(
        &a.router,
        authed("POST", "/v1/notifications", envelope.clone()),
    )
    .await;
    assert_eq!(first, json!({ "seeding": ["reg:5000/team/app:v1"] }));
    assert_eq!(
        a.resolved.recv().await.as_deref(),
        Some("reg:5000/team/app:v1")
    );
    assert!(a.service.in_flight("reg:5000/team/app:v1"));
    let (_, _, retry) = call(&a.router, authed("POST", "/v1/notifications", envelope)).await;
    assert_eq!(retry, json!({ "seeding": [] }));
    a.gate.add_permits(1);
}

#[tokio::test]
async fn notification_needs_a_registry_and_an_envelope() {
    let off = app(AutoSeed::default());
    let envelope = json!({ "events": [push("team/app", "v1", MANIFEST)] }).to_string();
    let (status, _, v) = call(&off.router, authed("POST", "/v1/notifications", envelope)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        v,
        json!({ "error": "auto-seeding is off (no --notify-registry)" })
    );
    let on = app(auto_seed());
    for body in ["nope", "{}", r#"{"events": [{"action": "push"}]}"#] {
        let (status, _, v) = call(&on.router, authed("POST", "/v1/notifications", body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let msg = v["error"].as_str().unwrap();
        assert!(msg.starts_with("not a notification: "), "{msg}");
    }
}

#[tokio::test]
async fn trigger_refuses_local_paths_and_registries_not_allowed() {
    // Issue #18 finding 7: the API must not make the seeder read local files or reach
    // hosts the operator did not allow (with the seeder's credentials).
    let mut a = app(auto_seed());
    for (image, why) in [
        ("oci-layout:/etc:passwd", "no oci-layout: paths"),
        (
            "evil.example:443/x/y:1",
            "registry evil.example:443 is not allowed",
        ),
        (
            "169.254.169.254/latest:meta",
            "registry 169.254.169.254 is not allowed",
        ),
    ] {
        let (status, v) = trigger(&a, image).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{image}");
        let msg = v["error"].as_str().unwrap();
        assert!(msg.contains(image) && msg.contains(why), "{image}: {msg}");
    }
    assert!(a.resolved.try_recv().is_err(), "nothing was seeded");
    // The notification registry and an allow-listed one are seeded.
    for image in ["reg:5000/team/app:v1", "app"] {
        let (status, _) = trigger(&a, image).await;
        assert_eq!(status, StatusCode::CREATED, "{image}");
    }
}

#[tokio::test]
async fn the_dashboard_runs_only_its_own_script() {
    // Issue #18 finding 11: a Content-Security-Policy pinning the one inline script.
    let a = app(AutoSeed::default());
    let res = a
        .router
        .clone()
        .oneshot(request("GET", "/dashboard", None, ""))
        .await
        .unwrap();
    let csp = res.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .to_owned();
    let page = String::from_utf8(
        axum::body::to_bytes(res.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    let script = page
        .split_once("<script>")
        .and_then(|(_, r)| r.split_once("</script>"))
        .unwrap()
        .0;
    use base64::Engine as _;
    use sha2::Digest as _;
    let hash = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(script));
    assert!(
        csp.contains(&format!("script-src 'sha256-{hash}'")),
        "{csp}"
    );
    for part in [
        "default-src 'none'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(part), "{part} missing from {csp}");
    }
    assert_eq!(
        page.matches("<script").count(),
        1,
        "one script, pinned by its hash"
    );
}

/// Asks the API to seed `image` (authorised); its status and JSON answer.
async fn trigger(a: &App, image: &str) -> (StatusCode, Value) {
    let body = json!({ "image": image }).to_string();
    let (status, _, v) = call(&a.router, authed("POST", "/v1/releases", body)).await;
    (status, v)
}

/// Seeds `app` through the API; returns its release id.
async fn seeded(a: &App) -> String {
    let (status, v) = trigger(a, "app").await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    v["id"].as_str().unwrap().to_owned()
}

/// The raw body and its length.
async fn raw(router: &Router, uri: &str) -> (StatusCode, Value, usize) {
    let res = router
        .clone()
        .oneshot(authed("GET", uri, ""))
        .await
        .unwrap();
    let status = res.status();
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, serde_json::from_slice(&bytes).unwrap(), bytes.len())
}

#[tokio::test]
async fn views_stay_bounded_and_counts_stay_right_with_thousands_of_nodes() {
    // Issue #18 finding 5: what one answer holds does not grow with the nodes.
    let a = app(AutoSeed::default());
    let id = seeded(&a).await;
    let release = id.parse().unwrap();
    let other = blobswarm_core::Digest::of(b"another release");
    for i in 0..4_000 {
        let (rel, state) = match i % 4 {
            0 => (release, ProgressState::Done),
            1 => (release, ProgressState::Downloading),
            2 => (release, ProgressState::Failed("disk full".into())),
            _ => (other, ProgressState::Done),
        };
        report(&a.agg, &format!("node-{i:05}"), rel, state, 50, 0);
    }
    for i in 0..2 {
        report(
            &a.agg,
            &format!("quiet-{i}"),
            release,
            ProgressState::Done,
            100,
            20_000,
        );
    }
    for i in 0..300 {
        report_unenrolled(&a.agg, &format!("minted-{i}"), release);
    }
    let want =
        json!({ "done": 1000, "downloading": 1000, "failed": 1000, "missing": 1000, "lost": 2 });

    // The list: LIST_NODES nodes a release, the counts over all 4,002.
    const LIST_BOUND: usize = 128 << 10;
    let (status, swarm, len) = raw(&a.router, "/v1/releases").await;
    assert_eq!(status, StatusCode::OK);
    assert!(len < LIST_BOUND, "{len} bytes");
    assert_eq!(swarm["nodes"], 4_000);
    assert_eq!(swarm["lost"], 2);
    assert_eq!(
        swarm["ignored"].as_array().unwrap().len(),
        crate::MAX_IGNORED
    );
    assert_eq!(swarm["ignored_total"], 300);
    let r = &swarm["releases"][0];
    assert_eq!(r["counts"], want);
    assert_eq!(
        r["nodes"].as_array().unwrap().len(),
        crate::service::LIST_NODES
    );
    assert_eq!(r["nodes"][0]["node"], "node-00000");
    let repeated = r["ignored"].as_array().unwrap().len();
    assert_eq!(
        repeated,
        crate::rollout::SHOW_IGNORED,
        "the newest, per release"
    );
    let (_, capped, _) = raw(&a.router, "/v1/releases?limit=100000").await;
    let listed = capped["releases"][0]["nodes"].as_array().unwrap().len();
    assert_eq!(listed, crate::service::MAX_LIST_NODES);

    // One release: MAX_PAGE_NODES nodes at most, paged by name, the counts over all.
    const PAGE_BOUND: usize = 512 << 10;
    let (status, one, len) = raw(&a.router, &format!("/v1/releases/{id}?limit=100000")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(len < PAGE_BOUND, "{len} bytes");
    assert_eq!(
        one["nodes"].as_array().unwrap().len(),
        crate::service::MAX_PAGE_NODES
    );
    assert_eq!(one["counts"], want);
    let view: crate::rollout::ReleaseView = serde_json::from_value(one).unwrap();
    let t = view.tally();
    assert_eq!((t.total, t.done, t.failed), (4_002, 1_000, 1_000));
    assert_eq!(
        crate::rollout::verdict(&view, crate::rollout::Expect::Count(1_001)),
        crate::rollout::Verdict::Pending,
        "the gate counts every node, not the page"
    );
    assert_eq!(
        crate::rollout::verdict(&view, crate::rollout::Expect::Count(1_000)),
        crate::rollout::Verdict::Done
    );
    let (_, tail, _) = raw(
        &a.router,
        &format!("/v1/releases/{id}?offset=3990&limit=50"),
    )
    .await;
    let names: Vec<&str> = tail["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 12);
    assert_eq!(names[..2], ["node-03990", "node-03991"]);
    assert_eq!(names[10..], ["quiet-0", "quiet-1"]);
    assert_eq!(tail["nodes_offset"], 3990);
    assert_eq!(tail["counts"], want);

    let (status, _, v) = call(&a.router, authed("GET", "/v1/releases?limit=many", "")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        v["error"].as_str().unwrap().starts_with("bad query: "),
        "{v}"
    );
}

#[tokio::test]
async fn strings_from_nodes_reach_people_escaped() {
    // Issue #18 finding 10: a node name and a failure reason with a terminal escape, a
    // newline and markup, read through the API by the gate, `status` and the dashboard.
    let a = app(AutoSeed::default());
    let id = seeded(&a).await;
    let evil = "evil\u{1b}[2J\n<script>alert(1)</script>";
    let reason = "disk\r\nfull\u{1b}]0;pwned\u{7}<img src=x onerror=alert(1)>";
    let failed = ProgressState::Failed(reason.into());
    report(&a.agg, evil, id.parse().unwrap(), failed, 50, 0);
    report_unenrolled(&a.agg, evil, id.parse().unwrap());
    let res = a
        .router
        .clone()
        .oneshot(authed("GET", &format!("/v1/releases/{id}"), ""))
        .await
        .unwrap();
    assert_eq!(res.headers()[header::CONTENT_TYPE], "application/json");
    assert_eq!(res.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
    let view: crate::rollout::ReleaseView = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        view.nodes[0].node, evil,
        "the API hands the data over as it is"
    );
    // The gate's report: one line per node, nothing a terminal would act on.
    let text = crate::rollout::missing_report(&view, crate::rollout::Expect::AllNodes);
    for c in ['\u{1b}', '\r', '\u{7}'] {
        assert!(!text.contains(c), "{c:?} in {text}");
    }
    assert!(
        text.contains("evil\\u{1b}[2J\\n<script>alert(1)</script>: failed (disk\\r\\nfull"),
        "{text}"
    );
    assert_eq!(text.lines().count(), 4, "{text}");
    // The dashboard only ever sets text: no markup is built from data.
    let (_, _, page) = call(&a.router, request("GET", "/dashboard", None, "")).await;
    let page = page.as_str().unwrap();
    for sink in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
    ] {
        assert!(!page.contains(sink), "the dashboard uses {sink}");
    }
    assert!(
        page.contains("e.textContent = text"),
        "text goes in as text"
    );
    assert!(
        page.contains("id=\"ignored\""),
        "ignored reports have a place"
    );
}

#[tokio::test]
async fn the_swarm_view_and_the_dashboard_show_banned_peers() {
    // Issue #18 acceptance: operators see who was banned and why.
    let a = app(AutoSeed::default());
    *a.banned.lock().unwrap() = vec![blobswarm_peer::Ban {
        peer: "12D3KooWrogue".into(),
        kind: blobswarm_peer::BanKind::BadChunk,
        reason: "chunk 3 of blob sha256:ab failed its hash".into(),
        remaining: Duration::from_secs(599),
    }];
    let (status, _, swarm) = call(&a.router, authed("GET", "/v1/releases", "")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        swarm["banned"],
        json!([{
            "by": "seeder",
            "peer": "12D3KooWrogue",
            "kind": "bad_chunk",
            "reason": "chunk 3 of blob sha256:ab failed its hash",
            "remaining_secs": 599
        }])
    );
    let view: crate::rollout::SwarmView = serde_json::from_value(swarm).unwrap();
    let text = crate::rollout::banned_report(&view.banned);
    assert!(
        text.contains("seeder banned 12D3KooWrogue (bad_chunk): chunk 3 of blob"),
        "{text}"
    );
    let (_, _, page) = call(&a.router, request("GET", "/dashboard", None, "")).await;
    let page = page.as_str().unwrap();
    assert!(
        page.contains("id=\"banned\"") && page.contains("s.banned"),
        "{page:.100}"
    );
}
