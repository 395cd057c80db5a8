//! Unit tests of the parent module.

use super::*;

fn opts() -> SourceOptions {
    SourceOptions {
        insecure_registries: vec!["127.0.0.1:5000".into()],
        username: Some("u".into()),
        password: Some("p".into()),
        ..SourceOptions::default()
    }
}

#[test]
fn builds_urls_and_canonical_names() {
    let s = RegistrySource::new("127.0.0.1:5000/test/img:v1", None, opts()).unwrap();
    assert_eq!(s.inner.base_url, "http://127.0.0.1:5000/v2/test/img");
    assert_eq!(s.reference(), "127.0.0.1:5000/test/img:v1");
    let s = RegistrySource::new("example.com/a/b", None, opts()).unwrap();
    assert_eq!(s.inner.base_url, "https://example.com/v2/a/b");
    assert_eq!(s.reference(), "example.com/a/b:latest");
    let d = Digest::of(b"x");
    let s = RegistrySource::new(&format!("example.com/a@{d}"), None, opts()).unwrap();
    assert_eq!(s.reference(), format!("example.com/a@{d}"));
    let s = RegistrySource::new("busybox", None, opts()).unwrap();
    assert_eq!(
        s.inner.base_url,
        "https://index.docker.io/v2/library/busybox"
    );
    assert_eq!(s.registry(), "docker.io");
}

#[test]
fn refuses_bad_references_and_half_credentials() {
    for bad in [
        "",
        "example.com/UPPER:v1",
        "a b",
        "repo@md5:0123456789abcdef0123456789abcdef",
    ] {
        assert!(
            matches!(
                RegistrySource::new(bad, None, opts()),
                Err(SourceError::BadReference { .. })
            ),
            "{bad:?}"
        );
    }
    let half = SourceOptions {
        username: Some("u".into()),
        ..SourceOptions::default()
    };
    assert!(matches!(
        RegistrySource::new("example.com/a:b", None, half),
        Err(SourceError::Credentials { .. })
    ));
}

#[test]
fn credentials_are_sent_only_to_the_registry_they_belong_to() {
    // Issue #18 finding 7: a seed triggered over the API must not hand the seeder's
    // registry password to whatever registry the request names.
    let dir = tempfile::tempdir().unwrap();
    let no_auths = dir.path().join("config.json");
    std::fs::write(&no_auths, r#"{"auths":{}}"#).unwrap();
    let scoped = SourceOptions {
        credentials_for: Some("127.0.0.1:5000".into()),
        auth_file: Some(no_auths),
        ..opts()
    };
    let own = RegistrySource::new("127.0.0.1:5000/test/img:v1", None, scoped.clone()).unwrap();
    assert!(matches!(own.inner.credential, Some(Credential::Basic(ref u, _)) if u == "u"));
    // Another registry gets what the auth file holds for it (nothing), never the password.
    let other = RegistrySource::new("evil.example/x:1", None, scoped).unwrap();
    assert!(other.inner.credential.is_none());
    let open = RegistrySource::new("evil.example/x:1", None, opts()).unwrap();
    assert!(
        matches!(open.inner.credential, Some(Credential::Basic(..))),
        "unscoped credentials go everywhere (one-shot use)"
    );
}

#[test]
fn debug_does_not_show_the_password() {
    let s = RegistrySource::new("127.0.0.1:5000/test/img:v1", None, opts()).unwrap();
    let shown = format!("{s:?}");
    assert!(!shown.contains("\"p\""), "{shown}");
    assert!(shown.contains("basic"), "{shown}");
}
