//! Image references in the fully qualified form the CRI plugin looks images up by.
//!
//! The kubelet may say `busybox:1`; the CRI plugin normalises that to
//! `docker.io/library/busybox:1` before looking for an image record. A record named
//! `busybox:1` would never be found, so names are normalised the same way here.

use super::ContainerdError;

/// A normalised reference: `domain/path[:tag][@digest]` and its repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reference {
    /// The full normalised reference, the name recorded for the image.
    pub(crate) full: String,
    /// `domain/path`, to which `@sha256:…` is appended for the digest record.
    pub(crate) repo: String,
}

const DEFAULT_DOMAIN: &str = "docker.io";

pub(crate) fn normalize(reference: &str) -> Result<Reference, ContainerdError> {
    let bad = |reason| {
        Err(ContainerdError::BadReference {
            reference: reference.chars().take(300).collect(),
            reason,
        })
    };
    if reference.is_empty() || reference.len() > 1024 {
        return bad("must be 1 to 1024 characters");
    }
    if reference
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return bad("contains whitespace or control characters");
    }
    let (name, digest) = match reference.split_once('@') {
        Some((n, d)) => {
            if d.parse::<blobswarm_core::Digest>().is_err() {
                return bad("the part after '@' is not a sha256 digest");
            }
            (n, Some(d))
        }
        None => (reference, None),
    };
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    let (repo, tag) = match name[last_slash..].rfind(':') {
        Some(i) => (&name[..last_slash + i], Some(&name[last_slash + i + 1..])),
        None => (name, None),
    };
    if let Some(t) = tag {
        let ok = !t.is_empty()
            && t.len() <= 128
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
            && !t.starts_with(['.', '-']);
        if !ok {
            return bad("tag must be 1-128 of [A-Za-z0-9_.-], not starting with '.' or '-'");
        }
    }
    let (domain, path) = match repo.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (first, rest.to_owned())
        }
        _ if !repo.contains('/') => (DEFAULT_DOMAIN, format!("library/{repo}")),
        _ => (DEFAULT_DOMAIN, repo.to_owned()),
    };
    let domain = if domain == "index.docker.io" {
        DEFAULT_DOMAIN
    } else {
        domain
    };
    let path_ok = !path.is_empty()
        && path.split('/').all(|c| {
            !c.is_empty()
                && c.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
                })
                && c.as_bytes()[0].is_ascii_alphanumeric()
        });
    if !path_ok {
        return bad("repository path must be lowercase letters, digits and . _ - separated by '/'");
    }
    let repo = format!("{domain}/{path}");
    let mut full = repo.clone();
    match (tag, digest) {
        (Some(t), _) => {
            full.push(':');
            full.push_str(t);
        }
        (None, None) => full.push_str(":latest"),
        (None, Some(_)) => {}
    }
    if let Some(d) = digest {
        full.push('@');
        full.push_str(d);
    }
    Ok(Reference { full, repo })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_like_the_cri() {
        let d = format!("sha256:{}", "a".repeat(64));
        for (input, full, repo) in [
            (
                "busybox",
                "docker.io/library/busybox:latest",
                "docker.io/library/busybox",
            ),
            (
                "busybox:1.36",
                "docker.io/library/busybox:1.36",
                "docker.io/library/busybox",
            ),
            ("user/app:v1", "docker.io/user/app:v1", "docker.io/user/app"),
            (
                "index.docker.io/user/app:v1",
                "docker.io/user/app:v1",
                "docker.io/user/app",
            ),
            (
                "127.0.0.1:5000/a/b:v1",
                "127.0.0.1:5000/a/b:v1",
                "127.0.0.1:5000/a/b",
            ),
            ("localhost/app", "localhost/app:latest", "localhost/app"),
            ("reg.local/app:v1", "reg.local/app:v1", "reg.local/app"),
        ] {
            let r = normalize(input).unwrap();
            assert_eq!((r.full.as_str(), r.repo.as_str()), (full, repo), "{input}");
        }
        let r = normalize(&format!("reg.local/app@{d}")).unwrap();
        assert_eq!(r.full, format!("reg.local/app@{d}"));
        assert_eq!(r.repo, "reg.local/app");
        let r = normalize(&format!("reg.local:5000/app:v1@{d}")).unwrap();
        assert_eq!(r.full, format!("reg.local:5000/app:v1@{d}"));
    }

    #[test]
    fn refuses_malformed_references() {
        for bad in [
            "",
            "Reg.local/App:v1",
            "app:",
            "app@sha256:zz",
            "a b",
            "reg.local//app",
            "app:-x",
        ] {
            assert!(
                matches!(normalize(bad), Err(ContainerdError::BadReference { .. })),
                "{bad:?}"
            );
        }
    }
}
