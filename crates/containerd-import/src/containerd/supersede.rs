//! Superseded releases: which image records a newer release of the same line replaces,
//! so their `io.cri-containerd.pinned` label can be removed and the kubelet's image
//! garbage collector may reclaim them.
//!
//! A release line is what the agent's replay guard orders releases by: one seeder and one
//! image reference. Every record an import creates carries [`LABEL_LINEAGE`] (the line)
//! and [`LABEL_SEQUENCE`] (the release's signed sequence). After a pinned import, records
//! of the same line whose sequence is lower than the newest one in the namespace are
//! unpinned. The selection compares sequences, never arrival order, so an older release
//! imported late (a replay, or a node catching up out of order) unpins itself, not the
//! newer one; and a record of a newer release is never moved back to an older one.

use std::collections::HashMap;

use blobswarm_core::{Digest, Release};

/// Label naming the release line (`<seeder peer id>/<reference>`) an image record belongs to.
pub const LABEL_LINEAGE: &str = "io.blobswarm.lineage";
/// Label holding the signed sequence of the release an image record was imported from.
pub const LABEL_SEQUENCE: &str = "io.blobswarm.sequence";

/// Longest lineage label value written as is; a longer one is replaced by a hash, so key
/// plus value stay far below containerd's 4096-byte label limit.
const MAX_LINEAGE_BYTES: usize = 1024;

/// Which release line an image comes from and where in it, so a newer import can find and
/// unpin the records it supersedes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseLine {
    /// `<seeder peer id>/<reference>` (or `sha256:<hex>` of that when too long).
    pub lineage: String,
    /// The release's signed sequence; higher is newer.
    pub sequence: u64,
}

impl ReleaseLine {
    /// The line a signed release belongs to: its seeder and reference, as the replay guard
    /// keys them.
    pub fn of_release(release: &Release) -> Self {
        Self::new(&release.seeder, &release.reference, release.sequence)
    }

    /// The line of `reference` released by the seeder with peer id bytes `seeder`.
    pub fn new(seeder: &[u8], reference: &str, sequence: u64) -> Self {
        let seeder = libp2p_identity::PeerId::from_bytes(seeder).map_or_else(
            |_| format!("key-{}", Digest::of(seeder).hex()),
            |p| p.to_base58(),
        );
        let mut lineage = format!("{seeder}/{reference}");
        let clean =
            lineage.len() <= MAX_LINEAGE_BYTES && lineage.bytes().all(|b| b.is_ascii_graphic());
        if !clean {
            lineage = Digest::of(lineage.as_bytes()).to_string();
        }
        Self { lineage, sequence }
    }

    /// The labels every image record of this release carries.
    pub(crate) fn labels(&self) -> [(String, String); 2] {
        [
            (LABEL_LINEAGE.to_owned(), self.lineage.clone()),
            (LABEL_SEQUENCE.to_owned(), self.sequence.to_string()),
        ]
    }

    /// The sequence of a record with `labels` if it belongs to this line.
    fn sequence_in(&self, labels: &HashMap<String, String>) -> Option<u64> {
        if labels.get(LABEL_LINEAGE) != Some(&self.lineage) {
            return None;
        }
        labels.get(LABEL_SEQUENCE)?.parse().ok()
    }

    /// True when a record with `labels` belongs to a newer release of this line, so this
    /// import must leave it alone (a replayed release must not take the tag back).
    pub(crate) fn is_older_than(&self, labels: &HashMap<String, String>) -> bool {
        self.sequence_in(labels).is_some_and(|s| s > self.sequence)
    }

    /// The names among `records` (name, labels) to unpin: pinned records of this line
    /// whose sequence is lower than the newest sequence of the line, counting this
    /// release's own. Records of other lines, without a parseable sequence, or not pinned
    /// are never selected.
    pub(crate) fn superseded<'a>(
        &self,
        records: impl IntoIterator<Item = (&'a str, &'a HashMap<String, String>)> + Clone,
    ) -> Vec<String> {
        let newest = records
            .clone()
            .into_iter()
            .filter_map(|(_, l)| self.sequence_in(l))
            .fold(self.sequence, u64::max);
        records
            .into_iter()
            .filter(|(_, l)| {
                l.get(super::LABEL_CRI_PINNED.0).map(String::as_str)
                    == Some(super::LABEL_CRI_PINNED.1)
            })
            .filter(|(_, l)| self.sequence_in(l).is_some_and(|s| s < newest))
            .map(|(n, _)| n.to_owned())
            .collect()
    }
}

#[cfg(feature = "containerd")]
pub(crate) use grpc::unpin_superseded;

#[cfg(feature = "containerd")]
mod grpc {
    use containerd_client::services::v1::images_client::ImagesClient;
    use containerd_client::services::v1::{Image, ListImagesRequest, UpdateImageRequest};

    use super::{LABEL_LINEAGE, ReleaseLine};
    use crate::containerd::ContainerdError;
    use crate::containerd::LABEL_CRI_PINNED;
    use crate::containerd::client::{Conn, Lease};

    /// Removes `io.cri-containerd.pinned` from every record `line` supersedes in the
    /// namespace; returns the names unpinned.
    pub(crate) async fn unpin_superseded(
        conn: &Conn,
        line: &ReleaseLine,
    ) -> Result<Vec<String>, ContainerdError> {
        let images = || ImagesClient::new(conn.channel.clone());
        let listed = conn
            .call(
                "image list",
                &line.lineage,
                images().list(conn.request(
                    ListImagesRequest {
                        filters: vec![format!("labels.\"{LABEL_LINEAGE}\"")],
                    },
                    Lease::None,
                )),
            )
            .await?
            .images;
        let names = line.superseded(listed.iter().map(|i| (i.name.as_str(), &i.labels)));
        for name in &names {
            conn.call(
                "image unpin",
                name,
                images().update(conn.request(
                    UpdateImageRequest {
                        // The label is absent from the image, so the masked path removes it.
                        image: Some(Image {
                            name: name.clone(),
                            ..Image::default()
                        }),
                        update_mask: Some(prost_types::FieldMask {
                            paths: vec![format!("labels.{}", LABEL_CRI_PINNED.0)],
                        }),
                        ..UpdateImageRequest::default()
                    },
                    Lease::None,
                )),
            )
            .await?;
        }
        Ok(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seeder() -> libp2p_identity::PeerId {
        libp2p_identity::Keypair::ed25519_from_bytes([7u8; 32])
            .unwrap()
            .public()
            .to_peer_id()
    }

    fn line(seq: u64) -> ReleaseLine {
        ReleaseLine::new(&seeder().to_bytes(), "reg.local/app:v1", seq)
    }

    fn labels(lineage: &str, seq: &str, pinned: bool) -> HashMap<String, String> {
        let mut l = HashMap::from([
            (LABEL_LINEAGE.to_owned(), lineage.to_owned()),
            (LABEL_SEQUENCE.to_owned(), seq.to_owned()),
        ]);
        if pinned {
            l.insert("io.cri-containerd.pinned".to_owned(), "pinned".to_owned());
        }
        l
    }

    /// Pinned records of `lineage`: `(name, sequence)` each.
    fn pinned<'a>(
        lineage: &str,
        rows: &[(&'a str, &str)],
    ) -> Vec<(&'a str, HashMap<String, String>)> {
        rows.iter()
            .map(|(name, seq)| (*name, labels(lineage, seq, true)))
            .collect()
    }

    fn pick(line: &ReleaseLine, records: &[(&str, HashMap<String, String>)]) -> Vec<String> {
        line.superseded(records.iter().map(|(n, l)| (*n, l)))
    }

    #[test]
    fn lineage_names_the_seeder_and_reference() {
        let l = line(7);
        assert_eq!(l.lineage, format!("{}/reg.local/app:v1", seeder()));
        assert!(l.lineage.starts_with("12D3KooW"), "{}", l.lineage);
        assert_eq!(
            l.labels(),
            [
                (LABEL_LINEAGE.to_owned(), l.lineage.clone()),
                (LABEL_SEQUENCE.to_owned(), "7".to_owned())
            ]
        );
    }

    #[test]
    fn long_or_odd_lineages_are_hashed_to_a_valid_label() {
        let long = ReleaseLine::new(b"not a peer id", &"a".repeat(4000), 1);
        assert!(long.lineage.starts_with("sha256:") && long.lineage.len() == 71);
        let spaced = ReleaseLine::new(b"x", "app: v1", 1);
        assert!(spaced.lineage.starts_with("sha256:"));
        // Deterministic: the next release of the same line finds the same value.
        assert_eq!(
            ReleaseLine::new(b"not a peer id", &"a".repeat(4000), 2).lineage,
            long.lineage
        );
        let bad_key = ReleaseLine::new(b"xx", "app:v1", 1);
        assert!(bad_key.lineage.starts_with("key-"), "{}", bad_key.lineage);
    }

    #[test]
    fn a_newer_release_unpins_the_older_ones_of_its_line_only() {
        let v3 = line(3);
        let lin = v3.lineage.clone();
        let other = line(1).lineage.replace("app:v1", "app:v2");
        let records = [
            ("app@v1", labels(&lin, "1", true)),
            ("cfg-v1", labels(&lin, "1", true)),
            ("app@v2", labels(&lin, "2", true)),
            ("app:v1", labels(&lin, "3", true)),
            ("app@v3", labels(&lin, "3", true)),
            ("other@v1", labels(&other, "1", true)),
            ("unpinned-v1", labels(&lin, "1", false)),
            ("garbage-seq", labels(&lin, "x", true)),
            ("foreign", HashMap::new()),
        ];
        assert_eq!(pick(&v3, &records), ["app@v1", "cfg-v1", "app@v2"]);
    }

    #[test]
    fn a_late_older_release_unpins_itself_never_the_newer_one() {
        // The replayed release's own digest record (app@v4) was just created.
        let records = pinned(
            &line(1).lineage,
            &[("app:v1", "5"), ("app@v5", "5"), ("app@v4", "4")],
        );
        assert_eq!(pick(&line(4), &records), ["app@v4"]);
        assert!(line(4).is_older_than(&records[0].1));
        assert!(!line(5).is_older_than(&records[0].1));
        assert!(!line(6).is_older_than(&records[0].1));
    }

    #[test]
    fn the_newest_and_equal_sequences_stay_pinned() {
        let records = pinned(&line(2).lineage, &[("a", "2"), ("b", "2")]);
        assert!(pick(&line(2), &records).is_empty());
        assert!(pick(&line(1), &[]).is_empty());
    }
}
