//! The bounded manifest/index parser.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::media_type::{self, DOCKER_SCHEMA1, OCI_INDEX, OCI_MANIFEST};
use super::{MAX_DOCUMENT_BYTES, MAX_LAYERS, Platform};
use crate::{Digest, DigestParseError};

/// How much of a document [`parse`] accepts; checked before anything is parsed or
/// allocated per entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest document, in bytes.
    pub max_bytes: u64,
    /// Most layers a manifest may list.
    pub max_layers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bytes: MAX_DOCUMENT_BYTES,
            max_layers: MAX_LAYERS,
        }
    }
}

/// A content descriptor as a manifest or index lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    /// Media type, as the document declares it.
    pub media_type: String,
    /// Digest of the content it names.
    pub digest: Digest,
    /// Size in bytes, as the document declares it.
    pub size: u64,
    /// The platform an index entry is for, if it says.
    pub platform: Option<Platform>,
    /// Annotations (`org.opencontainers.image.ref.name`, …).
    pub annotations: BTreeMap<String, String>,
}

/// An image manifest's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The image config.
    pub config: Descriptor,
    /// The layers, bottom first.
    pub layers: Vec<Descriptor>,
}

/// An image index's (or manifest list's) content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Index {
    /// The manifests (or nested indexes, or artifacts) it lists, in order.
    pub manifests: Vec<Descriptor>,
}

/// What a document lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// An image manifest.
    Manifest(Manifest),
    /// An image index or manifest list.
    Index(Index),
}

/// A parsed manifest or index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// The media type: the document's own `mediaType` field, else the hint, else
    /// inferred from its fields. Always a manifest or index type of [`media_type`].
    pub media_type: String,
    /// What it lists.
    pub body: Body,
}

/// Why a document was refused; every variant names the document's digest.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// Larger than [`Limits::max_bytes`]; refused before parsing.
    #[error("document {digest} is {read} bytes, more than the limit of {limit} bytes")]
    TooLarge {
        /// The document.
        digest: Digest,
        /// The limit.
        limit: u64,
        /// How many bytes were read.
        read: u64,
    },
    /// Not JSON, or JSON whose fields have the wrong types (also: empty input).
    #[error("document {digest} is not a JSON manifest or index: {source}")]
    NotJson {
        /// The document.
        digest: Digest,
        /// The JSON error, with line and column.
        #[source]
        source: serde_json::Error,
    },
    /// A Docker schema 1 manifest (unsigned content, no content-addressed config).
    #[error("document {digest} is a Docker schema 1 manifest, which is not supported")]
    Schema1 {
        /// The document.
        digest: Digest,
    },
    /// `schemaVersion` is missing or not 2.
    #[error("document {digest} has schemaVersion {found:?}; only 2 is supported")]
    SchemaVersion {
        /// The document.
        digest: Digest,
        /// The value found, if any.
        found: Option<u64>,
    },
    /// Not an image manifest or index (an artifact, a nested type we do not handle).
    #[error("document {digest} has unsupported media type {media_type:?}")]
    UnsupportedMediaType {
        /// The document.
        digest: Digest,
        /// Its media type.
        media_type: String,
    },
    /// Structurally wrong for its kind.
    #[error("document {digest} {problem}")]
    Malformed {
        /// The document.
        digest: Digest,
        /// What is wrong, e.g. "is a manifest without config".
        problem: &'static str,
    },
    /// A descriptor's digest is not a sha256 digest.
    #[error("document {digest} has a descriptor with an unusable digest: {source}")]
    BadDescriptorDigest {
        /// The document.
        digest: Digest,
        /// Why the digest was refused.
        #[source]
        source: DigestParseError,
    },
    /// A manifest lists more layers than [`Limits::max_layers`].
    #[error("manifest {digest} lists {count} layers, more than the limit of {limit}")]
    TooManyLayers {
        /// The document.
        digest: Digest,
        /// How many it lists.
        count: usize,
        /// The limit.
        limit: usize,
    },
}

impl ParseError {
    /// The digest of the document that was refused.
    pub const fn digest(&self) -> &Digest {
        match self {
            Self::TooLarge { digest, .. }
            | Self::NotJson { digest, .. }
            | Self::Schema1 { digest }
            | Self::SchemaVersion { digest, .. }
            | Self::UnsupportedMediaType { digest, .. }
            | Self::Malformed { digest, .. }
            | Self::BadDescriptorDigest { digest, .. }
            | Self::TooManyLayers { digest, .. } => digest,
        }
    }
}

#[derive(Deserialize)]
struct RawPlatform {
    architecture: String,
    os: String,
    #[serde(default)]
    variant: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDescriptor {
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default)]
    platform: Option<RawPlatform>,
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDocument {
    #[serde(default)]
    schema_version: Option<u64>,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<RawDescriptor>,
    #[serde(default)]
    layers: Option<Vec<RawDescriptor>>,
    #[serde(default)]
    manifests: Option<Vec<RawDescriptor>>,
}

fn descriptor(parent: &Digest, raw: RawDescriptor) -> Result<Descriptor, ParseError> {
    let digest =
        raw.digest
            .parse::<Digest>()
            .map_err(|source| ParseError::BadDescriptorDigest {
                digest: *parent,
                source,
            })?;
    Ok(Descriptor {
        media_type: raw.media_type,
        digest,
        size: raw.size,
        platform: raw
            .platform
            .map(|p| Platform::new(p.os, p.architecture, p.variant.as_deref())),
        annotations: raw.annotations.unwrap_or_default(),
    })
}

/// Parses the manifest or index `bytes`, whose digest is `digest` (used in errors; the
/// caller verifies it).
///
/// `hint` is the media type the transport announced (Content-Type, or the descriptor the
/// document was found by); the document's own `mediaType` field wins because the digest
/// covers it. Without either, a document with `manifests` is an OCI index and one with
/// `config` an OCI manifest.
///
/// # Errors
/// [`ParseError::TooLarge`] before anything is parsed when `bytes` exceeds
/// `limits.max_bytes`; otherwise the first problem found, naming `digest`.
pub fn parse(
    digest: &Digest,
    bytes: &[u8],
    hint: Option<&str>,
    limits: Limits,
) -> Result<Parsed, ParseError> {
    let digest = *digest;
    if bytes.len() as u64 > limits.max_bytes {
        return Err(ParseError::TooLarge {
            digest,
            limit: limits.max_bytes,
            read: bytes.len() as u64,
        });
    }
    let malformed = |problem| ParseError::Malformed { digest, problem };
    let raw: RawDocument =
        serde_json::from_slice(bytes).map_err(|source| ParseError::NotJson { digest, source })?;
    match raw.schema_version {
        Some(2) => {}
        Some(1) => return Err(ParseError::Schema1 { digest }),
        found => return Err(ParseError::SchemaVersion { digest, found }),
    }
    let hint = hint
        .map(media_type::essence)
        .filter(|h| media_type::document_kind(h).is_some());
    let media_type = match (raw.media_type, hint) {
        (Some(m), _) => m,
        (None, Some(h)) => h.to_owned(),
        (None, None) if raw.manifests.is_some() => OCI_INDEX.to_owned(),
        (None, None) if raw.config.is_some() => OCI_MANIFEST.to_owned(),
        (None, None) => return Err(malformed("is neither a manifest nor an index")),
    };
    let body = match media_type::document_kind(&media_type) {
        Some(media_type::DocumentKind::Index) => {
            if raw.config.is_some() || raw.layers.is_some() {
                return Err(malformed("is an index with config or layers"));
            }
            let manifests = raw
                .manifests
                .ok_or_else(|| malformed("is an index without manifests"))?
                .into_iter()
                .map(|d| descriptor(&digest, d))
                .collect::<Result<_, _>>()?;
            Body::Index(Index { manifests })
        }
        Some(media_type::DocumentKind::Manifest) => {
            if raw.manifests.is_some() {
                return Err(malformed("is a manifest that lists manifests"));
            }
            let config = raw
                .config
                .ok_or_else(|| malformed("is a manifest without config"))?;
            let layers = raw
                .layers
                .ok_or_else(|| malformed("is a manifest without layers"))?;
            if layers.len() > limits.max_layers {
                return Err(ParseError::TooManyLayers {
                    digest,
                    count: layers.len(),
                    limit: limits.max_layers,
                });
            }
            Body::Manifest(Manifest {
                config: descriptor(&digest, config)?,
                layers: layers
                    .into_iter()
                    .map(|d| descriptor(&digest, d))
                    .collect::<Result<_, _>>()?,
            })
        }
        None if media_type == DOCKER_SCHEMA1 => return Err(ParseError::Schema1 { digest }),
        None => {
            return Err(ParseError::UnsupportedMediaType { digest, media_type });
        }
    };
    Ok(Parsed { media_type, body })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::media_type::{DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_CONFIG};

    fn d(s: &str) -> String {
        Digest::of(s.as_bytes()).to_string()
    }

    fn manifest_json(layers: usize) -> String {
        let layer = format!(
            r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}","size":5}}"#,
            d("layer")
        );
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"{OCI_CONFIG}","digest":"{}","size":3}},"layers":[{}]}}"#,
            d("cfg"),
            vec![layer; layers].join(",")
        )
    }

    fn parse_default(bytes: &[u8], hint: Option<&str>) -> Result<Parsed, ParseError> {
        parse(&Digest::of(bytes), bytes, hint, Limits::default())
    }

    #[test]
    fn size_limit_is_checked_before_parsing() {
        let doc = manifest_json(1);
        let limit = doc.len() as u64;
        let at = Limits {
            max_bytes: limit,
            ..Limits::default()
        };
        let parsed = parse(&Digest::of(doc.as_bytes()), doc.as_bytes(), None, at).unwrap();
        assert_eq!(parsed.media_type, OCI_MANIFEST);

        // One byte more (trailing whitespace is valid JSON): refused, naming both numbers.
        let over = format!("{doc} ");
        let digest = Digest::of(over.as_bytes());
        let err = parse(&digest, over.as_bytes(), None, at).unwrap_err();
        assert!(
            matches!(err, ParseError::TooLarge { limit: l, read, digest: e } if l == limit && read == limit + 1 && e == digest),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains(&limit.to_string()) && msg.contains(&(limit + 1).to_string()));

        // Garbage over the limit is refused as too large, not as bad JSON: not parsed.
        let junk = vec![b'x'; 11];
        let small = Limits {
            max_bytes: 10,
            ..Limits::default()
        };
        assert!(matches!(
            parse(&Digest::of(&junk), &junk, None, small),
            Err(ParseError::TooLarge { read: 11, .. })
        ));
    }

    #[test]
    fn empty_and_non_json_are_refused() {
        for bad in [&b""[..], b"not json", b"{\"schemaVersion\":\"2\"}"] {
            assert!(
                matches!(parse_default(bad, None), Err(ParseError::NotJson { .. })),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // serde reads a struct from an array too; an empty one has no schemaVersion.
        assert!(matches!(
            parse_default(b"[]", None),
            Err(ParseError::SchemaVersion { found: None, .. })
        ));
    }

    #[test]
    fn media_type_comes_from_field_then_hint_then_shape() {
        let docker = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"c","digest":"{}","size":3}},"layers":[]}}"#,
            d("cfg")
        );
        let parsed = parse_default(
            docker.as_bytes(),
            Some("application/vnd.docker.distribution.manifest.v2+json; charset=utf-8"),
        )
        .unwrap();
        assert_eq!(parsed.media_type, DOCKER_MANIFEST);
        // An unknown hint is ignored; the shape decides.
        let parsed = parse_default(docker.as_bytes(), Some("text/plain")).unwrap();
        assert_eq!(parsed.media_type, OCI_MANIFEST);
        // The field wins over the hint.
        let parsed = parse_default(manifest_json(0).as_bytes(), Some(DOCKER_MANIFEST)).unwrap();
        assert_eq!(parsed.media_type, OCI_MANIFEST);

        let list = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST_LIST}","manifests":[{{"mediaType":"{DOCKER_MANIFEST}","digest":"{}","size":7,"platform":{{"architecture":"arm64","os":"linux","variant":""}},"annotations":{{"a":"b"}}}}]}}"#,
            d("m")
        );
        let parsed = parse_default(list.as_bytes(), None).unwrap();
        assert_eq!(parsed.media_type, DOCKER_MANIFEST_LIST);
        let Body::Index(index) = parsed.body else {
            panic!("not an index")
        };
        let entry = &index.manifests[0];
        assert_eq!(entry.digest.to_string(), d("m"));
        assert_eq!(
            (entry.size, entry.media_type.as_str()),
            (7, DOCKER_MANIFEST)
        );
        assert_eq!(entry.platform, Some(Platform::new("linux", "arm64", None)));
        assert_eq!(entry.annotations["a"], "b");
    }

    #[test]
    fn wrong_media_types_and_shapes_are_refused() {
        let artifact = br#"{"schemaVersion":2,"mediaType":"application/x-foo","config":{"mediaType":"c","digest":"sha256:00","size":1}}"#;
        assert!(matches!(
            parse_default(artifact, None),
            Err(ParseError::UnsupportedMediaType { media_type, .. }) if media_type == "application/x-foo"
        ));
        let schema1 = br#"{"schemaVersion":1,"name":"x"}"#;
        assert!(matches!(
            parse_default(schema1, None),
            Err(ParseError::Schema1 { .. })
        ));
        let tagged1 = format!(r#"{{"schemaVersion":2,"mediaType":"{DOCKER_SCHEMA1}"}}"#);
        assert!(matches!(
            parse_default(tagged1.as_bytes(), None),
            Err(ParseError::Schema1 { .. })
        ));
        assert!(matches!(
            parse_default(
                br#"{"config":{"mediaType":"c","digest":"x","size":1}}"#,
                None
            ),
            Err(ParseError::SchemaVersion { found: None, .. })
        ));
        for (doc, problem) in [
            (r#"{"schemaVersion":2}"#.to_owned(), "neither"),
            (
                format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}"}}"#),
                "without manifests",
            ),
            (
                format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","layers":[]}}"#),
                "without config",
            ),
            (
                format!(
                    r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[],"layers":[]}}"#
                ),
                "with config or layers",
            ),
        ] {
            let err = parse_default(doc.as_bytes(), None).unwrap_err();
            assert!(
                matches!(&err, ParseError::Malformed { problem: p, .. } if p.contains(problem)),
                "{doc}: {err:?}"
            );
        }
        let bad_digest = manifest_json(0).replace(&d("cfg"), "md5:00");
        let err = parse_default(bad_digest.as_bytes(), None).unwrap_err();
        assert!(
            matches!(err, ParseError::BadDescriptorDigest { .. }),
            "{err:?}"
        );
        assert_eq!(*err.digest(), Digest::of(bad_digest.as_bytes()));
    }

    #[test]
    fn layer_count_is_bounded() {
        let limits = Limits {
            max_layers: 3,
            ..Limits::default()
        };
        let ok = manifest_json(3);
        let parsed = parse(&Digest::of(ok.as_bytes()), ok.as_bytes(), None, limits).unwrap();
        assert!(matches!(parsed.body, Body::Manifest(m) if m.layers.len() == 3));
        let over = manifest_json(4);
        assert!(matches!(
            parse(&Digest::of(over.as_bytes()), over.as_bytes(), None, limits),
            Err(ParseError::TooManyLayers {
                count: 4,
                limit: 3,
                ..
            })
        ));
    }
}
