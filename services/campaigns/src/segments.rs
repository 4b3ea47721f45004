//! The segments a campaign targets live in segmentation: they are checked there, with the
//! caller's own token (so a tenant can only name its own segments), when a campaign is saved
//! and again when it is scheduled.

use std::time::Duration;

use cos_errors::{ErrorCode, FieldViolation, ServiceError};
use cos_proto::segmentation::v1 as seg;
use cos_proto::segmentation::v1::segmentation_service_client::SegmentationServiceClient;
use tonic::transport::{Channel, Endpoint};
use uuid::Uuid;

use crate::error::{Error, Result};

/// Client of segmentation's segment lookups. Cheap to clone.
#[derive(Clone)]
pub struct Segments {
    grpc: SegmentationServiceClient<Channel>,
    timeout: Duration,
}

impl Segments {
    /// A lazy connection to segmentation at `url` (`http://host:port`).
    pub fn new(url: &str, timeout: Duration) -> anyhow::Result<Self> {
        let channel = Endpoint::from_shared(url.to_owned())
            .map_err(|e| anyhow::anyhow!("segmentation URL {url:?}: {e}"))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .connect_lazy();
        Ok(Self {
            grpc: SegmentationServiceClient::new(channel),
            timeout,
        })
    }

    /// Checks that every id in `targets` and `exclusions` is a live segment the caller can read.
    /// Unknown ids come back as field violations naming `target_segment_ids[i]` or
    /// `exclusion_segment_ids[i]`.
    pub async fn check(&self, bearer: &str, targets: &[Uuid], exclusions: &[Uuid]) -> Result<()> {
        let mut violations = Vec::new();
        let lists = [
            ("target_segment_ids", targets),
            ("exclusion_segment_ids", exclusions),
        ];
        for (field, ids) in lists {
            for (i, id) in ids.iter().enumerate() {
                if let Some(message) = self.missing(bearer, *id).await? {
                    violations.push(FieldViolation {
                        field: format!("{field}[{i}]"),
                        message,
                    });
                }
            }
        }
        if violations.is_empty() {
            Ok(())
        } else {
            Err(ServiceError::invalid_fields(violations).into())
        }
    }

    /// `Some(reason)` when the segment cannot be targeted; errors when segmentation cannot say.
    async fn missing(&self, bearer: &str, id: Uuid) -> Result<Option<String>> {
        let mut req = tonic::Request::new(seg::GetSegmentRequest {
            segment_id: id.to_string(),
        });
        req.set_timeout(self.timeout);
        let value = format!("Bearer {bearer}")
            .parse()
            .map_err(|_| ServiceError::unauthenticated("malformed bearer token"))?;
        req.metadata_mut().insert("authorization", value);
        match self.grpc.clone().get_segment(req).await {
            Ok(_) => Ok(None),
            Err(s) if s.code() == tonic::Code::NotFound => {
                Ok(Some(format!("no segment {id} in this workspace")))
            }
            Err(s) if s.code() == tonic::Code::PermissionDenied => Ok(Some(
                "your credentials cannot read segments (permission segments.read)".to_owned(),
            )),
            Err(s) => {
                tracing::warn!(code = ?s.code(), message = s.message(), "segmentation lookup failed");
                Err(Error::from(ServiceError::new(
                    ErrorCode::Unavailable,
                    "the segment service is unavailable; nothing was saved, try again",
                )))
            }
        }
    }
}
