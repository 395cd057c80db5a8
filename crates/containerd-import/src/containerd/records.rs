//! Image records: the names the CRI (and `ctr images ls`) sees. Created last, when all
//! content and snapshots are in place, so a name never points at a partial image.

use std::collections::HashMap;

use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::{
    CreateImageRequest, GetImageRequest, Image, UpdateImageRequest,
};
use containerd_client::tonic::Code;
use containerd_client::types::Descriptor;

use super::client::{Conn, Lease};
use super::plan::Target;
use super::{ContainerdError, ReleaseLine};

pub(crate) use super::config::{LABEL_CRI_MANAGED, LABEL_CRI_PINNED};

/// What [`ensure`] did with one name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecordOutcome {
    Created,
    Updated,
    Unchanged,
    /// The name belongs to a newer release of the same line and was left alone.
    KeptNewer,
}

fn desired_labels(conn: &Conn, line: Option<&ReleaseLine>) -> HashMap<String, String> {
    let mut labels = HashMap::from([(
        LABEL_CRI_MANAGED.0.to_owned(),
        LABEL_CRI_MANAGED.1.to_owned(),
    )]);
    if conn.config.pin {
        labels.insert(LABEL_CRI_PINNED.0.to_owned(), LABEL_CRI_PINNED.1.to_owned());
    }
    labels.extend(line.into_iter().flat_map(ReleaseLine::labels));
    labels
}

fn descriptor(target: &Target) -> Descriptor {
    Descriptor {
        media_type: target.media_type.clone(),
        digest: target.digest.to_string(),
        size: i64::try_from(target.size).unwrap_or(i64::MAX),
        annotations: HashMap::new(),
    }
}

fn same_target(have: Option<&Descriptor>, want: &Descriptor) -> bool {
    have.is_some_and(|h| {
        h.digest == want.digest && h.media_type == want.media_type && h.size == want.size
    })
}

/// Makes the record `name` point at `target` with the CRI labels (and the release line's
/// labels); other labels are kept. A record of a newer release of the same line is left
/// alone, so an old release imported late never takes a tag back.
pub(crate) async fn ensure(
    conn: &Conn,
    name: &str,
    target: &Target,
    line: Option<&ReleaseLine>,
) -> Result<RecordOutcome, ContainerdError> {
    let labels = desired_labels(conn, line);
    let want = descriptor(target);
    let images = || ImagesClient::new(conn.channel.clone());
    let existing = conn
        .call_unless(
            "image get",
            &name,
            Code::NotFound,
            images().get(conn.request(
                GetImageRequest {
                    name: name.to_owned(),
                },
                Lease::None,
            )),
        )
        .await?
        .and_then(|r| r.image);
    let existing = match existing {
        Some(img) => img,
        None => {
            let created = conn
                .call_status(
                    "image create",
                    conn.timeout(),
                    images().create(conn.request(
                        CreateImageRequest {
                            image: Some(Image {
                                name: name.to_owned(),
                                labels: labels.clone(),
                                target: Some(want.clone()),
                                ..Image::default()
                            }),
                            ..CreateImageRequest::default()
                        },
                        Lease::None,
                    )),
                )
                .await?;
            match created {
                Ok(_) => return Ok(RecordOutcome::Created),
                // Created concurrently: fall through to compare and update.
                Err(s) if s.code() == Code::AlreadyExists => Image {
                    name: name.to_owned(),
                    ..Image::default()
                },
                Err(s) => return Err(conn.status_err("image create", &name, &s)),
            }
        }
    };
    if line.is_some_and(|l| l.is_older_than(&existing.labels)) {
        return Ok(RecordOutcome::KeptNewer);
    }
    let mut paths = Vec::new();
    if !same_target(existing.target.as_ref(), &want) {
        paths.push("target".to_owned());
    }
    for (k, v) in &labels {
        if existing.labels.get(k) != Some(v) {
            paths.push(format!("labels.{k}"));
        }
    }
    if paths.is_empty() {
        return Ok(RecordOutcome::Unchanged);
    }
    conn.call(
        "image update",
        &name,
        images().update(conn.request(
            UpdateImageRequest {
                image: Some(Image {
                    name: name.to_owned(),
                    labels,
                    target: Some(want),
                    ..Image::default()
                }),
                update_mask: Some(prost_types::FieldMask { paths }),
                ..UpdateImageRequest::default()
            },
            Lease::None,
        )),
    )
    .await?;
    Ok(RecordOutcome::Updated)
}
