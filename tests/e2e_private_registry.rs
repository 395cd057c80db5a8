//! `blobswarm seed` against private registries (real `docker-registry`, basic and
//! bearer-token auth), as an OS process: what an operator sees on stderr, with
//! credentials given, from a pull secret, or from a docker credential helper on `PATH`
//! (logging in `--log-format json`).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use blobswarm_testkit::{
    Binary, PrivateImage, RegistryAuth, TEST_PASSWORD, TEST_USER, answering_helper, helper_runs,
    install_credential_helper, path_with,
};

const BLOBSWARM: Binary = Binary::new(env!("CARGO_BIN_EXE_blobswarm"));

fn seed_command(root: &Path, reference: &str, registry: &str) -> Command {
    let mut cmd = BLOBSWARM.command();
    cmd.args(["seed", reference, "--key-file"])
        .arg(root.join("seeder.key"))
        .arg("--data-dir")
        .arg(root.join("seeder"))
        .args([
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--insecure-registry",
            registry,
        ])
        // Everything the binary logs, to prove no secret is among it.
        .env("BLOBSWARM_LOG", "debug")
        .env_remove("BLOBSWARM_REGISTRY_USERNAME")
        .env_remove("BLOBSWARM_REGISTRY_PASSWORD")
        .env("DOCKER_CONFIG", root.join("no-docker-config"))
        .stdin(Stdio::null());
    cmd
}

/// Runs `seed`, its stderr going to `log`, until it prints its `release` line (at most a
/// minute); then kills it and returns what it printed on stdout.
fn seed_until_released(seed: &mut Command, log: &Path) -> Vec<String> {
    let mut child = seed
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut printed = Vec::new();
    while !printed.iter().any(|l: &String| l.starts_with("release ")) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => printed.push(line),
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "seed never published; stdout {printed:?}\nstderr:\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    printed
}

#[test]
fn wrong_password_is_one_line_naming_the_registry_and_never_printed() {
    let Some(private) = PrivateImage::start(RegistryAuth::Basic, "private/cli", 11) else {
        return;
    };
    let (root, registry, reference) = (&private.root, &private.registry, &private.reference);

    let wrong = "Wr0ng-Pa55word-for-the-test";
    let started = Instant::now();
    let out = seed_command(root, reference, &registry.addr())
        .args(["--username", TEST_USER])
        .env("BLOBSWARM_REGISTRY_PASSWORD", wrong)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "seed succeeded with a wrong password:\n{stderr}"
    );
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    let line = errors[0];
    assert!(
        line.contains(&registry.addr())
            && line.contains("refused the credentials")
            && line.contains("401"),
        "{line}"
    );
    assert!(
        !stderr.contains(wrong) && !stdout.contains(wrong),
        "the password was printed:\n{stdout}\n{stderr}"
    );
    // Retried with back-off (0.2 + 0.4 + 0.8 s), and each retry said so.
    assert!(started.elapsed() >= Duration::from_millis(1400));
    assert_eq!(stderr.matches("retrying").count(), 3, "{stderr}");
}

#[test]
fn token_auth_from_a_pull_secret_seeds_without_printing_the_password() {
    let Some(private) = PrivateImage::start(RegistryAuth::Token, "private/tok", 12) else {
        return;
    };
    let (root, registry, reference) = (&private.root, &private.registry, &private.reference);
    let tokens = private.tokens.as_ref().expect("a token service");

    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let auth = b64(&format!("{TEST_USER}:{TEST_PASSWORD}"));
    let config = format!(
        r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#,
        registry.addr()
    );
    let secret = root.join("regcred.json");
    std::fs::write(
        &secret,
        format!(
            r#"{{"apiVersion":"v1","kind":"Secret","type":"kubernetes.io/dockerconfigjson","data":{{".dockerconfigjson":"{}"}}}}"#,
            b64(&config)
        ),
    )
    .unwrap();
    let log = root.join("seed.stderr");
    let printed = seed_until_released(
        seed_command(root, reference, &registry.addr())
            .arg("--registry-auth-file")
            .arg(&secret),
        &log,
    );
    assert!(tokens.issued() >= 1);
    let stderr = std::fs::read_to_string(&log).unwrap();
    for secret in [TEST_PASSWORD, auth.as_str()] {
        assert!(
            !stderr.contains(secret) && !printed.iter().any(|l| l.contains(secret)),
            "a credential was printed:\n{printed:?}\n{stderr}"
        );
    }
}

#[test]
fn a_credential_helper_on_path_seeds_and_json_logs_are_one_object_a_line() {
    let Some(private) = PrivateImage::start(RegistryAuth::Token, "private/helper", 13) else {
        return;
    };
    let (root, registry, reference) = (&private.root, &private.registry, &private.reference);
    let tokens = private.tokens.as_ref().expect("a token service");

    let bin = root.join("bin");
    let docker = root.join("docker");
    for dir in [&bin, &docker] {
        std::fs::create_dir_all(dir).unwrap();
    }
    let runs = root.join("helper-runs");
    let body = answering_helper(&registry.addr(), TEST_PASSWORD, &runs);
    install_credential_helper(&bin, "testhelper", &body);
    std::fs::write(
        docker.join("config.json"),
        format!(
            r#"{{"auths":{{"{0}":{{}}}},"credHelpers":{{"{0}":"testhelper"}}}}"#,
            registry.addr()
        ),
    )
    .unwrap();
    let log = root.join("seed.stderr");
    let printed = seed_until_released(
        seed_command(root, reference, &registry.addr())
            .args(["--log-format", "json"])
            .env("DOCKER_CONFIG", &docker)
            .env("PATH", path_with(&bin)),
        &log,
    );
    assert!(tokens.issued() >= 1);
    assert_eq!(helper_runs(&runs), 1);

    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(
        !stderr.contains(TEST_PASSWORD) && !printed.iter().any(|l| l.contains(TEST_PASSWORD)),
        "the password was printed:\n{printed:?}\n{stderr}"
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(lines.len() > 3, "{stderr}");
    let mut seen_resolved = false;
    for line in lines {
        let object: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        // Always there; `message` only when the event has one (some of libp2p's do not).
        for field in ["timestamp", "level", "target"] {
            assert!(object[field].is_string(), "no {field:?} in {line}");
        }
        // Event fields sit at the top level under their own names.
        if object["message"] == "resolved" {
            seen_resolved = object["reference"] == reference.as_str()
                && object["blobs"].is_number()
                && object["target"] == "blobswarm_seeder::service";
        }
    }
    assert!(seen_resolved, "no resolved line with its fields:\n{stderr}");

    // The error that ends a process is a JSON line too (format from the environment).
    let out = BLOBSWARM
        .command()
        .args(["status", "--api", "http://127.0.0.1:1"])
        .env("BLOBSWARM_LOG_FORMAT", "json")
        .env("BLOBSWARM_API_TOKEN", "t")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last: serde_json::Value = serde_json::from_str(stderr.trim())
        .unwrap_or_else(|e| panic!("not one JSON line ({e}): {stderr}"));
    assert_eq!(last["level"], "ERROR", "{stderr}");
    assert!(
        last["message"]
            .as_str()
            .is_some_and(|m| m.contains("cannot reach the seeder")),
        "{stderr}"
    );
}
