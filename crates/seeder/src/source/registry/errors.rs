//! Error text from registry answers: bounded excerpts, paths without query strings,
//! and the attempt count noted in a final error.

use super::SourceError;

/// At most 512 characters of an error body, on one line, for messages.
pub(super) fn excerpt(s: &str) -> String {
    let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    match s.char_indices().nth(512) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

/// The path of `url`, for log lines (no query string, which may carry tokens).
pub(super) fn url_path(url: &str) -> &str {
    let url = url.split('?').next().unwrap_or(url);
    match url.find("://") {
        Some(i) => url[i + 3..].find('/').map_or("/", |j| &url[i + 3 + j..]),
        None => url,
    }
}

/// Notes in an error's cause how many attempts were made.
pub(super) fn after_attempts(e: SourceError, attempts: u32) -> SourceError {
    let note = |cause: String| format!("{cause} (after {attempts} attempts)");
    match e {
        SourceError::Unreachable { registry, cause } => SourceError::Unreachable {
            registry,
            cause: note(cause),
        },
        SourceError::AuthFailed { registry, cause } => SourceError::AuthFailed {
            registry,
            cause: note(cause),
        },
        other => other,
    }
}

/// Reads at most 4 KiB of an error response body.
pub(super) async fn read_excerpt(mut resp: reqwest::Response) -> String {
    let mut body = Vec::new();
    while body.len() < 4096 {
        match resp.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            _ => break,
        }
    }
    body.truncate(4096);
    excerpt(&String::from_utf8_lossy(&body))
}
