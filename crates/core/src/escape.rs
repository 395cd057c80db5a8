//! The one escape for strings that came off the network (node names, failure reasons,
//! references, error texts) before a person reads them: in `blobswarm status`, the CI
//! gate's output and the seeder's and agents' logs (issue #18, finding 10). A peer inside
//! the swarm chooses these strings, so a terminal escape or a newline in one must print
//! as visible text, never move the cursor or forge a second line. The dashboard needs no
//! escape of its own: it only ever sets text (`textContent`), never markup.

use crate::wire::MAX_NODE_NAME;

/// `s` with control characters (terminal escapes, newlines, NUL) escaped as Rust does
/// (`\u{1b}`, `\n`) and cut after [`MAX_NODE_NAME`] bytes with a `…`, so a string from
/// the network prints as one harmless, bounded line (names, reasons).
pub fn printable(s: &str) -> String {
    escape(s, MAX_NODE_NAME)
}

/// `s` with control characters escaped as [`printable`] does, but not cut: for texts
/// already bounded where they were made (error chains, references) that a person must
/// read whole.
pub fn escape_controls(s: &str) -> String {
    escape(s, usize::MAX)
}

fn escape(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max));
    for c in s.chars() {
        if out.len() >= max {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// A `Display` wrapper printing [`escape_controls`] of the string: for log fields
/// (`tracing::warn!(node = %Printable(&name), …)`), so a log line stays one line.
#[derive(Debug, Clone, Copy)]
pub struct Printable<'a>(pub &'a str);

impl std::fmt::Display for Printable<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&escape_controls(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_the_network_print_on_one_harmless_line() {
        assert_eq!(printable("node\u{1b}[31m-1\n"), "node\\u{1b}[31m-1\\n");
        assert!(printable(&"x".repeat(1000)).chars().count() <= MAX_NODE_NAME + 1);
        assert_eq!(
            Printable("a\r\nb\u{0}").to_string(),
            "a\\r\\nb\\u{0}",
            "the log wrapper escapes alike"
        );
        let long = format!("{}\n", "y".repeat(1000));
        assert_eq!(escape_controls(&long), format!("{}\\n", "y".repeat(1000)));
    }
}
