//! The seeder's read of the image from the registry, as the simulator models it.

/// How the seeder reads the image from the registry before (or while) it serves it.
#[derive(Debug, Clone, Copy)]
pub struct RegistryRead {
    /// Rate of the registry's link, bytes per second; the seeder's downlink caps it too.
    pub bytes_per_sec: f64,
    /// When the chunks read become available to peers.
    pub mode: ReadMode,
}

/// When chunks the seeder has read from the registry become available to peers: a
/// streaming seeder (issue #19) will add a mode publishing chunks as they are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReadMode {
    /// Today's seeder: the release is published, and its chunks served, only after the
    /// whole image has been read and hashed.
    PublishAfterRead,
}

impl RegistryRead {
    /// Seconds the seeder needs to read `image` bytes over a downlink of `down` bytes/s.
    #[must_use]
    pub fn secs(&self, image: u64, down: f64) -> f64 {
        image as f64 / self.bytes_per_sec.min(down)
    }
}
