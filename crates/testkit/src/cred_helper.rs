//! Docker credential helpers for tests: small `sh` scripts speaking the helper protocol
//! (`docker-credential-NAME get`, the server on stdin, JSON on stdout), installed into a
//! directory the test puts on `PATH`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::credentials::TEST_USER;

/// Installs `dir/docker-credential-NAME`: an `sh` script that reads the server it is
/// asked about into `$server`, then runs `body`. Returns its path.
///
/// # Panics
/// If the script cannot be written.
pub fn install_credential_helper(dir: &Path, name: &str, body: &str) -> PathBuf {
    let draft = dir.join(format!("{name}.sh"));
    std::fs::write(
        &draft,
        format!("#!/bin/sh\nIFS= read -r server || true\n{body}\n"),
    )
    .unwrap_or_else(|e| panic!("writing {}: {e}", draft.display()));
    // `install` writes the executable in its own process: no write handle of the
    // (multi-threaded) test process can leak into a concurrent fork, which would make
    // running the script fail with ETXTBSY.
    let program = dir.join(format!("docker-credential-{name}"));
    crate::run(
        Command::new("install")
            .args(["-m", "0755"])
            .arg(&draft)
            .arg(&program),
    );
    program
}

/// The body of a helper that appends every server it is asked about to `runs` and
/// answers [`TEST_USER`] with `password` for `registry` only (failing for any other).
pub fn answering_helper(registry: &str, password: &str, runs: &Path) -> String {
    format!(
        r#"echo "$server" >> '{}'
[ "$server" = '{registry}' ] || {{ echo "no credentials for $server"; exit 1; }}
printf '{{"ServerURL":"%s","Username":"{TEST_USER}","Secret":"{password}"}}' "$server""#,
        runs.display()
    )
}

/// How many times a helper from [`answering_helper`] logging to `runs` ran.
pub fn helper_runs(runs: &Path) -> usize {
    std::fs::read_to_string(runs)
        .unwrap_or_default()
        .lines()
        .count()
}

/// `dir` followed by this process's `PATH`: a search path finding the helpers in `dir`
/// and the tools they run.
pub fn path_with(dir: &Path) -> OsString {
    let mut dirs = vec![dir.to_owned()];
    dirs.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(dirs).expect("a PATH-compatible directory")
}
