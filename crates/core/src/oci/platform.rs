//! Platforms (`os/architecture[/variant]`) and the one rule for whether two match.

use std::fmt;
use std::str::FromStr;

/// An OCI platform: which machines an image (or an index entry) is for.
///
/// Index entries keep the spelling the document uses (so errors list what the index
/// says); [`Platform::parse`] normalises what a user typed. [`Platform::matches`] is
/// the only matching rule in blobswarm: the seeder selects `--platform` from an index
/// with it and the importers pick the manifest to unpack with it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Platform {
    /// Operating system, e.g. `linux`.
    pub os: String,
    /// CPU architecture in OCI's (Go's) spelling, e.g. `amd64`, `arm64`.
    pub architecture: String,
    /// CPU variant, e.g. `v7` for `arm`; `None` when not given (never `Some("")`).
    pub variant: Option<String>,
}

/// A platform string that is not `os/arch[/variant]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid platform {platform:?}: expected os/arch[/variant], e.g. linux/amd64")]
pub struct PlatformError {
    /// The platform as given.
    pub platform: String,
}

impl Platform {
    /// A platform as a document spells it; an empty variant counts as none.
    pub fn new(
        os: impl Into<String>,
        architecture: impl Into<String>,
        variant: Option<&str>,
    ) -> Self {
        Self {
            os: os.into(),
            architecture: architecture.into(),
            variant: variant.filter(|v| !v.is_empty()).map(str::to_owned),
        }
    }

    /// Parses `os/arch[/variant]` as a user writes it (`linux/arm64/v8`); lowercases it
    /// and spells architecture aliases the OCI way (`x86_64` → `amd64`, `aarch64` → `arm64`).
    ///
    /// # Errors
    /// [`PlatformError`] when there are not two or three non-empty parts of ASCII letters,
    /// digits and `_`.
    pub fn parse(s: &str) -> Result<Self, PlatformError> {
        let parts: Vec<&str> = s.split('/').collect();
        if !(2..=3).contains(&parts.len())
            || parts
                .iter()
                .any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        {
            return Err(PlatformError {
                platform: s.to_owned(),
            });
        }
        Ok(Self {
            os: parts[0].to_ascii_lowercase(),
            architecture: normalize_arch(parts[1]),
            variant: parts.get(2).map(|v| v.to_ascii_lowercase()),
        })
    }

    /// The platform of this machine, in OCI's spelling (Go's GOOS/GOARCH).
    pub fn host() -> Self {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "x86" => "386",
            "aarch64" => "arm64",
            "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
            "loongarch64" => "loong64",
            other => other,
        };
        Self {
            os: std::env::consts::OS.to_owned(),
            architecture: architecture.to_owned(),
            variant: (architecture == "arm64").then(|| "v8".to_owned()),
        }
    }

    /// Whether `self` and `other` name the same platform — containerd's rule: os and
    /// architecture equal (case-insensitive, architecture aliases normalised) and variant
    /// equal, except that `arm64` without a variant is `arm64/v8` (both ways). Symmetric.
    pub fn matches(&self, other: &Self) -> bool {
        self.key() == other.key()
    }

    /// The normalised `(os, architecture, variant)` [`Self::matches`] compares.
    fn key(&self) -> (String, String, Option<String>) {
        let architecture = normalize_arch(&self.architecture);
        let variant = self
            .variant
            .as_deref()
            .filter(|v| !v.is_empty())
            .map(str::to_ascii_lowercase)
            .or_else(|| (architecture == "arm64").then(|| "v8".to_owned()));
        (self.os.to_ascii_lowercase(), architecture, variant)
    }
}

impl FromStr for Platform {
    type Err = PlatformError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

fn normalize_arch(arch: &str) -> String {
    match arch.to_ascii_lowercase().as_str() {
        "x86_64" | "x86-64" => "amd64".to_owned(),
        "aarch64" => "arm64".to_owned(),
        other => other.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(os: &str, arch: &str, variant: Option<&str>) -> Platform {
        Platform::new(os, arch, variant)
    }

    /// The rule table: (a, b, whether they match). Every row is checked both ways.
    #[test]
    fn matching_rule_table() {
        let rows = [
            // amd64
            (p("linux", "amd64", None), p("linux", "amd64", None), true),
            (p("linux", "amd64", None), p("linux", "x86_64", None), true),
            (p("linux", "amd64", None), p("linux", "arm64", None), false),
            (
                p("linux", "amd64", None),
                p("linux", "amd64", Some("v2")),
                false,
            ),
            // arm64: no variant is v8
            (
                p("linux", "arm64", None),
                p("linux", "arm64", Some("v8")),
                true,
            ),
            (
                p("linux", "arm64", Some("")),
                p("linux", "arm64", Some("v8")),
                true,
            ),
            (p("linux", "arm64", None), p("linux", "arm64", None), true),
            (
                p("linux", "arm64", Some("v8")),
                p("linux", "arm64", Some("v8")),
                true,
            ),
            (p("linux", "arm64", None), p("linux", "aarch64", None), true),
            (
                p("linux", "arm64", None),
                p("linux", "arm64", Some("v7")),
                false,
            ),
            (
                p("linux", "arm64", Some("v8")),
                p("linux", "arm64", Some("v7")),
                false,
            ),
            (
                p("linux", "arm64", Some("v8")),
                p("linux", "arm", Some("v7")),
                false,
            ),
            // arm: variants are distinct, and no variant is not v7
            (
                p("linux", "arm", Some("v7")),
                p("linux", "arm", Some("v7")),
                true,
            ),
            (
                p("linux", "arm", Some("v7")),
                p("linux", "arm", Some("v6")),
                false,
            ),
            (
                p("linux", "arm", Some("v7")),
                p("linux", "arm", None),
                false,
            ),
            (
                p("linux", "arm", Some("V7")),
                p("linux", "arm", Some("v7")),
                true,
            ),
            // os
            (
                p("linux", "amd64", None),
                p("windows", "amd64", None),
                false,
            ),
            (p("Linux", "amd64", None), p("linux", "amd64", None), true),
            (
                p("linux", "amd64", None),
                p("unknown", "unknown", None),
                false,
            ),
        ];
        for (a, b, want) in rows {
            assert_eq!(a.matches(&b), want, "{a} vs {b}");
            assert_eq!(b.matches(&a), want, "{b} vs {a}");
        }
    }

    #[test]
    fn parsing_normalises_and_refuses_malformed() {
        assert_eq!(
            Platform::parse("linux/x86_64").unwrap().to_string(),
            "linux/amd64"
        );
        assert_eq!(
            Platform::parse("Linux/AArch64/V8").unwrap(),
            p("linux", "arm64", Some("v8"))
        );
        assert_eq!(
            "linux/arm/v7".parse::<Platform>().unwrap().to_string(),
            "linux/arm/v7"
        );
        for bad in ["linux", "linux/", "/amd64", "a/b/c/d", "linux/amd 64", ""] {
            assert_eq!(
                Platform::parse(bad),
                Err(PlatformError {
                    platform: bad.to_owned()
                }),
                "{bad}"
            );
        }
    }

    /// The seeder's selection cases (moved here with the rule they test).
    #[test]
    fn seeder_selection_cases() {
        let want = Platform::parse("linux/arm64").unwrap();
        assert!(want.matches(&p("linux", "arm64", Some("v8"))));
        assert!(want.matches(&p("linux", "aarch64", None)));
        assert!(!want.matches(&p("linux", "amd64", None)));
        let v8 = Platform::parse("linux/arm64/v8").unwrap();
        assert!(v8.matches(&p("linux", "arm64", None)));
        let v7 = Platform::parse("linux/arm/v7").unwrap();
        assert!(!v7.matches(&p("linux", "arm", Some("v6"))));
        assert!(v7.matches(&p("linux", "arm", Some("v7"))));
    }

    #[test]
    fn host_is_in_oci_spelling() {
        let host = Platform::host();
        if cfg!(all(target_os = "linux", target_arch = "x86_64")) {
            assert_eq!(host, p("linux", "amd64", None));
        }
        if cfg!(all(target_os = "linux", target_arch = "aarch64")) {
            assert!(host.matches(&p("linux", "arm64", None)));
        }
        assert!(host.matches(&host.clone()));
    }
}
