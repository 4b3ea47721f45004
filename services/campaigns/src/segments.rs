//! The segments a campaign targets live in segmentation: they are checked there, with the
//! caller's own token (so a tenant can only name its own segments), when a campaign is saved
//! and again when it is scheduled.

use std::time::Duration;

use cos_errors::{ErrorCode, FieldViolation, ServiceError};
use cos_proto::segmentation::v1 as seg;
use cos_proto::segmentation::v1::segmentation_service_client::SegmentationServiceClient;
use tonic::transport::Channel;
use uuid::Uuid;

use crate::error::{Error, Result};

/// Client of segmentation's segment lookups. Cheap to clone.
#[derive(Clone)]
pub struct Segments {
    grpc: SegmentationServiceClient<Channel>,
    timeout: Duration,
}

impl Segments {
    /// Segment lookups over `channel` (shared with the audience reader).
    pub fn new(channel: Channel, timeout: Duration) -> Self {
        Self {
            grpc: SegmentationServiceClient::new(channel),
            timeout,
        }
    }

    /// Checks that every id in `targets` and `exclusions` is a live segment the caller can read.
    /// Unknown ids come back as field violations naming `target_segment_ids[i]` or
    /// `exclusion_segment_ids[i]`.
    pub async fn check(&self, bearer: &str, targets: &[Uuid], exclusions: &[Uuid]) -> Result<()> {
        // One lookup per id (at most 20), all at once over the one HTTP/2 channel: a save waits
        // for the slowest lookup, not for their sum.
        let lookups = [
            ("target_segment_ids", targets),
            ("exclusion_segment_ids", exclusions),
        ]
        .into_iter()
        .flat_map(|(field, ids)| ids.iter().enumerate().map(move |(i, id)| (field, i, *id)))
        .map(|(field, i, id)| async move {
            let missing = self.missing(bearer, id).await?;
            Ok::<_, Error>(missing.map(|message| FieldViolation {
                field: format!("{field}[{i}]"),
                message,
            }))
        });
        let mut violations = Vec::new();
        for found in futures::future::join_all(lookups).await {
            violations.extend(found?);
        }
        if violations.is_empty() {
            Ok(())
        } else {
            Err(ServiceError::invalid_fields(violations).into())
        }
    }

    /// A contact of the caller's workspace, read with the caller's token. Unknown ids are a
    /// violation on `contact_id`.
    pub async fn contact(&self, bearer: &str, id: Uuid) -> Result<seg::Contact> {
        let mut req = tonic::Request::new(seg::GetContactRequest {
            contact_id: id.to_string(),
        });
        req.set_timeout(self.timeout);
        req.metadata_mut()
            .insert("authorization", bearer_value(bearer)?);
        match self.grpc.clone().get_contact(req).await {
            Ok(c) => Ok(c.into_inner()),
            Err(s) if s.code() == tonic::Code::NotFound => Err(ServiceError::invalid(
                "contact_id",
                format!("no contact {id} in this workspace"),
            )
            .into()),
            Err(s) => Err(refused(
                &s,
                "previewing for a contact needs permission contacts.read",
            )),
        }
    }

    /// `Some(reason)` when the segment cannot be targeted; errors when segmentation cannot say.
    async fn missing(&self, bearer: &str, id: Uuid) -> Result<Option<String>> {
        let mut req = tonic::Request::new(seg::GetSegmentRequest {
            segment_id: id.to_string(),
        });
        req.set_timeout(self.timeout);
        req.metadata_mut()
            .insert("authorization", bearer_value(bearer)?);
        match self.grpc.clone().get_segment(req).await {
            Ok(_) => Ok(None),
            Err(s) if s.code() == tonic::Code::NotFound => {
                Ok(Some(format!("no segment {id} in this workspace")))
            }
            Err(s) => Err(refused(
                &s,
                "naming segments needs permission segments.read",
            )),
        }
    }
}

fn bearer_value(bearer: &str) -> Result<tonic::metadata::MetadataValue<tonic::metadata::Ascii>> {
    format!("Bearer {bearer}")
        .parse()
        .map_err(|_| ServiceError::unauthenticated("malformed bearer token").into())
}

/// Segmentation said no, or could not answer: the caller's own permission and token problems
/// pass through as such; anything else is "unavailable".
fn refused(s: &tonic::Status, permission_message: &str) -> Error {
    match s.code() {
        tonic::Code::PermissionDenied => ServiceError::permission_denied(permission_message).into(),
        tonic::Code::Unauthenticated => {
            ServiceError::unauthenticated("the access token was not accepted").into()
        }
        _ => unavailable(s),
    }
}

fn unavailable(s: &tonic::Status) -> Error {
    tracing::warn!(code = ?s.code(), message = s.message(), "segmentation lookup failed");
    Error::from(ServiceError::new(
        ErrorCode::Unavailable,
        "the segmentation service is unavailable; nothing was changed, try again",
    ))
}
