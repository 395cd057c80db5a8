//! Byte progress of an import, for progress bars.

use std::sync::Arc;

/// A callback told how many more content bytes are in place (written, resumed or found
/// present), so a CLI can draw a byte progress bar over an import into any target.
#[derive(Clone)]
pub struct Progress(Arc<dyn Fn(u64) + Send + Sync>);

impl Progress {
    /// Wraps a callback.
    pub fn new(f: impl Fn(u64) + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    pub(crate) fn add(&self, bytes: u64) {
        (self.0)(bytes);
    }
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Progress(..)")
    }
}
