//! A tiny bearer-token service on 127.0.0.1 for `docker-registry`'s `auth: token`
//! mode.
//!
//! The token service checks HTTP basic credentials ([`TEST_USER`]/[`TEST_PASSWORD`])
//! and answers with a JWT (ES256) signed by a key generated at start; its self-signed
//! certificate is the registry's `rootcertbundle` and travels in the token's `x5c`
//! header, which is how distribution 2.8 finds the verifying key. Every scope asked
//! for is granted: the test is about authentication, not authorization.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};

use crate::credentials::{TEST_PASSWORD, TEST_USER};

/// `service` the registry and the token service agree on.
pub const TOKEN_SERVICE: &str = "blobswarm-test-registry";
/// `issuer` the registry expects in tokens.
pub const TOKEN_ISSUER: &str = "blobswarm-test-token-service";

/// A running token service; stops when dropped.
#[derive(Debug)]
pub struct TokenServer {
    addr: String,
    cert_path: PathBuf,
    issued: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl TokenServer {
    /// Generates a signing key and certificate (written as PEM under `dir`) and starts
    /// serving `GET /token` on a free port of 127.0.0.1.
    pub fn start(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).expect("create token service dir");
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("generate P-256 key");
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .expect("load P-256 key");
        let cert_key = rcgen::KeyPair::try_from(pkcs8.as_ref()).expect("rcgen key from pkcs8");
        let cert = rcgen::CertificateParams::new(vec!["blobswarm-test-token".to_owned()])
            .expect("certificate params")
            .self_signed(&cert_key)
            .expect("self-sign certificate");
        let cert_path = dir.join("token-root.pem");
        std::fs::write(&cert_path, cert.pem()).expect("write rootcertbundle");
        let x5c = STANDARD.encode(cert.der());

        let listener = TcpListener::bind("127.0.0.1:0").expect("bind token service");
        let addr = listener
            .local_addr()
            .expect("token service addr")
            .to_string();
        listener
            .set_nonblocking(true)
            .expect("non-blocking token listener");
        let issued = Arc::new(AtomicUsize::new(0));
        let refused = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (i, r, s) = (issued.clone(), refused.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let _ = stream.set_nonblocking(false);
                        match serve(stream, &key, &rng, &x5c) {
                            Some(true) => i.fetch_add(1, Ordering::Relaxed),
                            _ => r.fetch_add(1, Ordering::Relaxed),
                        };
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Self {
            addr,
            cert_path,
            issued,
            refused,
            stop,
        }
    }

    /// The realm URL the registry sends clients to.
    pub fn realm(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    /// The PEM certificate the registry trusts for tokens.
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// Tokens issued so far.
    pub fn issued(&self) -> usize {
        self.issued.load(Ordering::Relaxed)
    }

    /// Token requests refused so far (wrong or missing credentials).
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::Relaxed)
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Answers one request; `Some(true)` when a token was issued.
fn serve(mut stream: TcpStream, key: &EcdsaKeyPair, rng: &SystemRandom, x5c: &str) -> Option<bool> {
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line).ok()?;
    let target = request_line.split(' ').nth(1)?.to_owned();
    let mut authorization = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("authorization")
        {
            authorization = Some(value.trim().to_owned());
        }
    }
    let authorized = authorization
        .as_deref()
        .and_then(|a| a.strip_prefix("Basic "))
        .and_then(|b| STANDARD.decode(b).ok())
        .is_some_and(|creds| creds == format!("{TEST_USER}:{TEST_PASSWORD}").as_bytes());
    if !authorized {
        let body =
            r#"{"errors":[{"code":"UNAUTHORIZED","message":"invalid username or password"}]}"#;
        let _ = write!(
            stream,
            "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        return Some(false);
    }
    let query = target.split_once('?').map_or("", |(_, q)| q);
    let mut access = Vec::new();
    for pair in query.split('&') {
        let Some(("scope", scope)) = pair.split_once('=') else {
            continue;
        };
        let scope = percent_decode(scope);
        for one in scope.split(' ') {
            // `repository:name/with/slashes:pull,push`
            let Some((kind, rest)) = one.split_once(':') else {
                continue;
            };
            let Some((name, actions)) = rest.rsplit_once(':') else {
                continue;
            };
            access.push(serde_json::json!({
                "type": kind,
                "name": name,
                "actions": actions.split(',').collect::<Vec<_>>(),
            }));
        }
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
    let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "x5c": [x5c]});
    let claims = serde_json::json!({
        "iss": TOKEN_ISSUER,
        "sub": TEST_USER,
        "aud": TOKEN_SERVICE,
        "exp": now + 300,
        "nbf": now - 10,
        "iat": now,
        "jti": format!("{now}-{}", access.len()),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = key.sign(rng, signing_input.as_bytes()).ok()?;
    let token = format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature.as_ref())
    );
    let body =
        serde_json::json!({"token": token, "access_token": token, "expires_in": 300}).to_string();
    let _ = write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    Some(true)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_scopes() {
        assert_eq!(
            percent_decode("repository%3Aprivate%2Fimg%3Apull%2Cpush+x"),
            "repository:private/img:pull,push x"
        );
        assert_eq!(percent_decode("a%2"), "a%2");
    }
}
