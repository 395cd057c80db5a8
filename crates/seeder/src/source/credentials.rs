//! Registry credentials from the docker CLI's `config.json` or a Kubernetes
//! image pull secret.
//!
//! Which credentials a registry gets follows docker's precedence: a helper named for the
//! registry in `credHelpers`, else the default helper `credsStore`, else the `auths`
//! entry (`auth` = base64 `user:password`, or `username`/`password`). A helper is run
//! later, when the registry is first asked (see `cred_helper`); here it is only chosen.
//!
//! An auth file ([`from_auth_file`]) may be any of: a docker `config.json`; the file a
//! `kubernetes.io/dockerconfigjson` Secret mounts for its `.dockerconfigjson` key
//! (the same JSON); or the Secret object itself, as JSON or YAML
//! (`kubectl get secret NAME -o yaml`), whose `data` holds `.dockerconfigjson` in
//! base64 (or `stringData` holds it as plain JSON).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;

use super::SourceError;
use super::cred_helper::Helper;

/// Where a registry's credentials come from.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Credential {
    /// A user name and password.
    Basic(String, String),
    /// A credential helper to ask.
    Helper(Helper),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Basic(user, _) => write!(f, "Basic({user:?}, <redacted>)"),
            Self::Helper(h) => write!(f, "Helper({})", h.program()),
        }
    }
}

/// The largest config file read; anything bigger is not a docker config.
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DockerConfig {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
    #[serde(default)]
    creds_store: Option<String>,
    #[serde(default)]
    cred_helpers: HashMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

/// `$DOCKER_CONFIG/config.json`, else `$HOME/.docker/config.json`.
fn config_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|home| PathBuf::from(home).join(".docker").join("config.json"))
}

/// Credentials for `registry` (as written in the reference, e.g. `host:5000` or
/// `docker.io`) from the docker config, if it exists and has an entry or a helper.
pub(super) fn lookup(registry: &str) -> Result<Option<Credential>, SourceError> {
    let Some(path) = config_path() else {
        return Ok(None);
    };
    let bytes = match std::fs::metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(unreadable(&path, &e.to_string())),
        Ok(m) if m.len() > MAX_CONFIG_BYTES => {
            return Err(unreadable(&path, "file is larger than 1 MiB"));
        }
        Ok(_) => std::fs::read(&path).map_err(|e| unreadable(&path, &e.to_string()))?,
    };
    from_config(&bytes, &path, registry)
}

/// Credentials for `registry` from an auth file (see the module docs); `None` when the
/// file has neither an entry nor a helper for it.
pub(super) fn from_auth_file(
    path: &Path,
    registry: &str,
) -> Result<Option<Credential>, SourceError> {
    let bad = |reason: &str| SourceError::Credentials {
        reason: format!("registry auth file {}: {reason}", path.display()),
    };
    let bytes = match std::fs::metadata(path) {
        Err(e) => return Err(bad(&e.to_string())),
        Ok(m) if m.len() > MAX_CONFIG_BYTES => return Err(bad("file is larger than 1 MiB")),
        Ok(_) => std::fs::read(path).map_err(|e| bad(&e.to_string()))?,
    };
    let config = docker_config_of(&bytes).map_err(|reason| bad(&reason))?;
    from_config(&config, path, registry)
}

/// The docker config JSON inside an auth file: the file itself, or the
/// `.dockerconfigjson` entry of a Secret (JSON or YAML).
fn docker_config_of(bytes: &[u8]) -> Result<Vec<u8>, String> {
    const KEY: &str = ".dockerconfigjson";
    let b64 = |v: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(v.trim())
            .map_err(|_| format!("data.{KEY} is not base64"))
    };
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes) {
        if ["auths", "credHelpers", "credsStore"]
            .iter()
            .any(|key| value.get(key).is_some())
        {
            return Ok(bytes.to_vec());
        }
        if let Some(v) = value
            .pointer("/data/.dockerconfigjson")
            .and_then(|v| v.as_str())
        {
            return b64(v);
        }
        if let Some(v) = value
            .pointer("/stringData/.dockerconfigjson")
            .and_then(|v| v.as_str())
        {
            return Ok(v.as_bytes().to_vec());
        }
        return Err(format!(
            "JSON with neither `auths`, `credHelpers` or `credsStore` (docker config) \
             nor `data.{KEY}` (Secret)"
        ));
    }
    // A Secret in YAML: the `.dockerconfigjson:` line under `data:` or `stringData:`.
    let text = std::str::from_utf8(bytes).map_err(|_| "neither JSON nor YAML text".to_owned())?;
    let mut section = "";
    for line in text.lines() {
        if !line.starts_with([' ', '\t', '#']) && line.trim_end().ends_with(':') {
            section = line.trim_end().trim_end_matches(':');
            continue;
        }
        let Some(value) = line.trim().strip_prefix(&format!("{KEY}:")) else {
            continue;
        };
        let value = value.trim().trim_matches(|c| c == '"' || c == '\'');
        if value.is_empty() || value.starts_with(['|', '>']) {
            return Err(format!(
                "{KEY} is a multi-line YAML value; use `kubectl get secret -o json` or the mounted file"
            ));
        }
        return match section {
            "data" => b64(value),
            "stringData" => Ok(value.as_bytes().to_vec()),
            other => Err(format!("{KEY} under `{other}:`, expected `data:`")),
        };
    }
    Err(format!(
        "not a docker config.json nor a Secret with a {KEY} key"
    ))
}

fn unreadable(path: &Path, reason: &str) -> SourceError {
    SourceError::Credentials {
        reason: format!("docker config {}: {reason}", path.display()),
    }
}

/// The names a registry may be filed under in `auths`.
fn candidate_keys(registry: &str) -> Vec<&str> {
    match registry {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => {
            vec!["index.docker.io", "docker.io", "registry-1.docker.io"]
        }
        other => vec![other],
    }
}

/// `https://host:port/v1/` → `host:port`.
fn normalize_key(key: &str) -> &str {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    key.split('/').next().unwrap_or(key)
}

/// What docker asks a helper about: the config key of the registry.
fn helper_server(registry: &str) -> &str {
    match registry {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => "https://index.docker.io/v1/",
        other => other,
    }
}

/// Credentials for `registry` in a docker config's JSON, by docker's precedence:
/// `credHelpers` entry, `credsStore`, `auths` entry.
pub(super) fn from_config(
    bytes: &[u8],
    path: &Path,
    registry: &str,
) -> Result<Option<Credential>, SourceError> {
    let config: DockerConfig = serde_json::from_slice(bytes)
        .map_err(|e| unreadable(path, &format!("not valid JSON: {e}")))?;
    let candidates = candidate_keys(registry);
    let helper = config
        .cred_helpers
        .iter()
        .find(|(key, _)| candidates.contains(&normalize_key(key)))
        .map(|(key, name)| (format!("credHelpers.{key}"), name))
        .or_else(|| {
            config
                .creds_store
                .as_ref()
                .map(|name| ("credsStore".to_owned(), name))
        })
        .filter(|(_, name)| !name.is_empty());
    if let Some((field, name)) = helper {
        return Helper::new(name, helper_server(registry))
            .map(|h| Some(Credential::Helper(h)))
            .ok_or_else(|| {
                unreadable(
                    path,
                    &format!(
                        "{field} names helper {name:?}; a helper name may only hold \
                         letters, digits, '.', '_' and '-'"
                    ),
                )
            });
    }
    Ok(from_auths(&config, path, registry)?
        .map(|(user, password)| Credential::Basic(user, password)))
}

/// The `auths` entry for `registry`, decoded.
fn from_auths(
    config: &DockerConfig,
    path: &Path,
    registry: &str,
) -> Result<Option<(String, String)>, SourceError> {
    let candidates = candidate_keys(registry);
    let entry = config
        .auths
        .iter()
        .find(|(key, _)| candidates.contains(&normalize_key(key)))
        .map(|(_, entry)| entry);
    let Some(entry) = entry else {
        return Ok(None);
    };
    if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|_| unreadable(path, &format!("auths.{registry}.auth is not base64")))?;
        let decoded = String::from_utf8(decoded)
            .map_err(|_| unreadable(path, &format!("auths.{registry}.auth is not UTF-8")))?;
        let (user, password) = decoded.split_once(':').ok_or_else(|| {
            unreadable(
                path,
                &format!("auths.{registry}.auth is not base64 of user:password"),
            )
        })?;
        return Ok(Some((user.to_owned(), password.to_owned())));
    }
    if let (Some(user), Some(password)) = (&entry.username, &entry.password) {
        return Ok(Some((user.clone(), password.clone())));
    }
    if entry.identitytoken.is_some() {
        tracing::warn!(
            registry,
            config = %path.display(),
            "docker config holds an identity token, which blobswarm does not support; \
             pulling anonymously"
        );
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, password: &str) -> Option<Credential> {
        Some(Credential::Basic(user.to_owned(), password.to_owned()))
    }

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn finds_auth_by_registry_name() {
        let json = format!(
            r#"{{"auths":{{"127.0.0.1:5000":{{"auth":"{}"}},"https://index.docker.io/v1/":{{"auth":"{}"}},"other.example":{{"username":"u","password":"p"}}}}}}"#,
            b64("alice:s3cr:et"),
            b64("bob:pw")
        );
        let p = Path::new("config.json");
        assert_eq!(
            from_config(json.as_bytes(), p, "127.0.0.1:5000").unwrap(),
            basic("alice", "s3cr:et")
        );
        assert_eq!(
            from_config(json.as_bytes(), p, "docker.io").unwrap(),
            basic("bob", "pw")
        );
        assert_eq!(
            from_config(json.as_bytes(), p, "other.example").unwrap(),
            basic("u", "p")
        );
        assert_eq!(from_config(json.as_bytes(), p, "nowhere:1").unwrap(), None);
    }

    #[test]
    fn auth_file_may_be_a_config_a_json_secret_or_a_yaml_secret() {
        let config = format!(
            r#"{{"auths":{{"reg.example:5000":{{"auth":"{}"}}}}}}"#,
            b64("alice:pw")
        );
        let json_secret = format!(
            r#"{{"apiVersion":"v1","kind":"Secret","type":"kubernetes.io/dockerconfigjson","data":{{".dockerconfigjson":"{}"}}}}"#,
            b64(&config)
        );
        let yaml_secret = format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: pull\n  namespace: blobswarm\n\
             type: kubernetes.io/dockerconfigjson\ndata:\n  .dockerconfigjson: {}\n",
            b64(&config)
        );
        let string_data = format!("kind: Secret\nstringData:\n  .dockerconfigjson: '{config}'\n");
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in [
            ("config.json", &config),
            ("secret.json", &json_secret),
            ("secret.yaml", &yaml_secret),
            ("string.yaml", &string_data),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            assert_eq!(
                from_auth_file(&path, "reg.example:5000").unwrap(),
                basic("alice", "pw"),
                "{name}"
            );
            assert_eq!(from_auth_file(&path, "other:1").unwrap(), None, "{name}");
        }
        let path = dir.path().join("bad.yaml");
        std::fs::write(
            &path,
            "kind: Secret\ndata:\n  .dockerconfigjson: |\n    abc\n",
        )
        .unwrap();
        let err = from_auth_file(&path, "r").unwrap_err().to_string();
        assert!(
            err.contains("bad.yaml") && err.contains("multi-line"),
            "{err}"
        );
        let err = from_auth_file(&dir.path().join("missing"), "r")
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing"), "{err}");
    }

    #[test]
    fn bad_config_is_an_error_naming_the_file() {
        let p = Path::new("/x/config.json");
        let err = from_config(b"{nope", p, "r").unwrap_err();
        assert!(err.to_string().contains("/x/config.json"), "{err}");
        let json = r#"{"auths":{"r":{"auth":"!!!"}}}"#;
        let err = from_config(json.as_bytes(), p, "r").unwrap_err();
        assert!(matches!(err, SourceError::Credentials { .. }));
    }

    #[test]
    fn helpers_follow_dockers_precedence() {
        let p = Path::new("config.json");
        let helper =
            |name: &str, server: &str| Some(Credential::Helper(Helper::new(name, server).unwrap()));
        let json = format!(
            r#"{{"auths":{{"a:1":{{"auth":"{}"}},"b:2":{{"auth":"{}"}}}},
                "credHelpers":{{"a:1":"ecr-login","https://index.docker.io/v1/":"hub"}},
                "credsStore":"pass"}}"#,
            b64("alice:pw"),
            b64("bob:pw")
        );
        // credHelpers wins over credsStore and auths; credsStore over auths.
        let found = |r| from_config(json.as_bytes(), p, r).unwrap();
        assert_eq!(found("a:1"), helper("ecr-login", "a:1"));
        assert_eq!(found("b:2"), helper("pass", "b:2"));
        assert_eq!(
            found("docker.io"),
            helper("hub", "https://index.docker.io/v1/")
        );
        // Without credsStore, auths answers for registries without a helper.
        let json = json.replace(r#""credsStore":"pass""#, r#""credsStore":"""#);
        assert_eq!(
            from_config(json.as_bytes(), p, "b:2").unwrap(),
            basic("bob", "pw")
        );
        // A config with helpers only is an auth file too.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, r#"{"credHelpers":{"c:3":"gcr"}}"#).unwrap();
        assert_eq!(from_auth_file(&path, "c:3").unwrap(), helper("gcr", "c:3"));
        let err = from_config(br#"{"credsStore":"../evil"}"#, p, "c:3").unwrap_err();
        assert!(
            err.to_string().contains("credsStore") && err.to_string().contains("../evil"),
            "{err}"
        );
    }
}
