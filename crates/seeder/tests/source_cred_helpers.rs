//! Docker credential helpers (`credHelpers` in a docker config.json): small shell helpers
//! written by each test, found on the search path like on `PATH`, against a real
//! distribution registry with bearer-token and basic auth, and the ways a helper can
//! fail, each an error naming it.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use blobswarm_seeder::source::{
    CredentialHelpers, HelperError, MAX_HELPER_OUTPUT, Source, SourceError, SourceOptions,
};
use blobswarm_testkit::{
    PrivateImage, RegistryAuth, TEST_PASSWORD, TEST_USER, answering_helper, helper_runs,
    install_credential_helper, path_with,
};
use common::{assert_blobs_stream_intact, auth_failure, insecure};

/// A directory of helper scripts, a docker config naming one of them, and the file the
/// answering helpers count their runs in.
struct Helpers {
    dir: tempfile::TempDir,
}

impl Helpers {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn install(&self, name: &str, body: &str) {
        install_credential_helper(self.dir.path(), name, body);
    }

    /// Installs helper `name` answering `password` for `registry`.
    fn install_answering(&self, name: &str, registry: &str, password: &str) {
        self.install(
            name,
            &answering_helper(registry, password, &self.runs_file()),
        );
    }

    fn runs_file(&self) -> PathBuf {
        self.dir.path().join("runs")
    }

    fn runs(&self) -> usize {
        helper_runs(&self.runs_file())
    }

    /// Options reading `registry` over http, with a config.json naming helper `name` for
    /// it in `credHelpers`, helpers looked up in this directory first.
    fn options(&self, registry: &str, name: &str) -> SourceOptions {
        let config = self.dir.path().join("config.json");
        std::fs::write(
            &config,
            format!(r#"{{"auths":{{}},"credHelpers":{{"{registry}":"{name}"}}}}"#),
        )
        .unwrap();
        SourceOptions {
            auth_file: Some(config),
            credential_helpers: CredentialHelpers::default()
                .with_search_path(path_with(self.dir.path()))
                .with_timeout(Duration::from_millis(700)),
            ..insecure(registry)
        }
    }
}

#[tokio::test]
async fn helper_credentials_pull_through_the_token_service_and_are_asked_once() {
    let Some(private) = PrivateImage::start(RegistryAuth::Token, "private/helped", 21) else {
        return;
    };
    let (registry, info, reference) = (&private.registry, &private.image, &private.reference);
    let tokens = private.tokens.as_ref().expect("a token service");
    let helpers = Helpers::new();
    helpers.install_answering("testhelper", &registry.addr(), TEST_PASSWORD);
    let opts = helpers.options(&registry.addr(), "testhelper");

    let issued = tokens.issued();
    // Two sources (two seeds of one image) sharing the options' helper runner: every
    // manifest and blob request of both is authorized by one helper answer.
    for _ in 0..2 {
        let source = Source::parse(reference, opts.clone()).unwrap();
        let resolved = source.resolve().await.unwrap();
        assert_eq!(resolved.root.digest.to_string(), info.manifest_digest);
        assert_blobs_stream_intact(&source, &resolved.blobs).await;
    }
    assert!(tokens.issued() > issued, "no token was issued");
    assert_eq!(helpers.runs(), 1, "the helper ran more than once");

    // A runner that keeps nothing asks again.
    let fresh = SourceOptions {
        credential_helpers: opts.credential_helpers.clone().with_ttl(Duration::ZERO),
        ..opts.clone()
    };
    Source::parse(reference, fresh)
        .unwrap()
        .resolve()
        .await
        .unwrap();
    assert_eq!(helpers.runs(), 2);
}

#[tokio::test]
async fn a_wrong_password_from_a_helper_is_an_auth_error_naming_it() {
    let Some(private) = PrivateImage::start(RegistryAuth::Basic, "private/wrong", 22) else {
        return;
    };
    let (registry, reference) = (&private.registry, &private.reference);
    let helpers = Helpers::new();
    let wrong = "helper-wrong-password";
    helpers.install_answering("testhelper", &registry.addr(), wrong);

    let opts = helpers.options(&registry.addr(), "testhelper");
    let text = auth_failure(reference, opts, &registry.addr(), wrong).await;
    assert!(
        text.contains("refused the credentials")
            && text.contains(&format!(
                "user \"{TEST_USER}\" from docker-credential-testhelper"
            )),
        "{text}"
    );
    // Asked once, and once more after the registry refused its answer; not on every retry.
    assert_eq!(helpers.runs(), 2);
}

/// Resolving `127.0.0.1:1/img:v1` (nothing listens there) with helper `name`.
async fn resolve_with(helpers: &Helpers, name: &str) -> SourceError {
    Source::parse("127.0.0.1:1/img:v1", helpers.options("127.0.0.1:1", name))
        .unwrap()
        .resolve()
        .await
        .unwrap_err()
}

#[tokio::test]
async fn a_slow_helper_is_killed_at_the_timeout() {
    let helpers = Helpers::new();
    helpers.install("slow", "exec sleep 30");
    let started = Instant::now();
    let err = resolve_with(&helpers, "slow").await;
    assert!(started.elapsed() < Duration::from_secs(5), "{err}");
    assert!(
        matches!(&err, SourceError::CredentialHelper(HelperError::Timeout { program, registry, .. })
            if program == "docker-credential-slow" && registry == "127.0.0.1:1"),
        "{err:?}"
    );
    assert!(err.to_string().contains("docker-credential-slow"), "{err}");
}

#[tokio::test]
async fn a_flood_of_output_is_refused() {
    let helpers = Helpers::new();
    helpers.install("flood", "exec yes '{\"Username\":\"u\",\"Secret\":\"s\"}'");
    let err = resolve_with(&helpers, "flood").await;
    assert!(
        matches!(&err, SourceError::CredentialHelper(HelperError::OutputTooLarge { limit, .. })
            if *limit == MAX_HELPER_OUTPUT),
        "{err:?}"
    );
    assert!(err.to_string().contains("docker-credential-flood"), "{err}");
}

#[tokio::test]
async fn a_missing_failing_or_garbled_helper_is_an_error_naming_it() {
    let helpers = Helpers::new();
    let err = resolve_with(&helpers, "absent").await;
    assert!(
        matches!(
            &err,
            SourceError::CredentialHelper(HelperError::NotFound { .. })
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("docker-credential-absent"),
        "{err}"
    );

    helpers.install("broken", "echo 'login expired, run login'; exit 3");
    let text = resolve_with(&helpers, "broken").await.to_string();
    assert!(
        text.contains("docker-credential-broken")
            && text.contains("127.0.0.1:1")
            && text.contains("login expired"),
        "{text}"
    );

    helpers.install("garbled", "echo 'Username=u Secret=hunter2'");
    let text = resolve_with(&helpers, "garbled").await.to_string();
    assert!(
        text.contains("docker-credential-garbled") && !text.contains("hunter2"),
        "{text}"
    );

    // "Nothing stored for this server" is no error: the registry is read anonymously
    // (and here found unreachable).
    helpers.install(
        "empty",
        "echo 'credentials not found in native keychain'; exit 1",
    );
    let err = resolve_with(&helpers, "empty").await;
    assert!(matches!(err, SourceError::Unreachable { .. }), "{err:?}");
}
