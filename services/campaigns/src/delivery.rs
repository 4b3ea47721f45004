//! Campaigns' side of publishing: the internal delivery-job RPCs (service credential, acting
//! for the campaign's tenant) and the work-queue publisher the fan-out feeds.

use std::time::Duration;

use cos_auth::{SERVICE_AUTH_HEADER, ServiceCredential};
use cos_errors::{ErrorCode, ServiceError};
use cos_proto::publishing::v1 as pb;
use cos_proto::publishing::v1::publishing_service_client::PublishingServiceClient;
use tonic::transport::Channel;
use uuid::Uuid;

use crate::error::{Error, Result};

const SERVICE: &str = "/campaignos.publishing.v1.PublishingService";

#[derive(Clone)]
pub struct Publishing {
    grpc: PublishingServiceClient<Channel>,
    credential: Option<ServiceCredential>,
    timeout: Duration,
}

impl Publishing {
    pub fn new(channel: Channel, credential: Option<ServiceCredential>, timeout: Duration) -> Self {
        Self {
            grpc: PublishingServiceClient::new(channel),
            credential,
            timeout,
        }
    }

    fn request<T>(&self, body: T, method: &str, tenant: Uuid) -> Result<tonic::Request<T>> {
        let credential = self.credential.as_ref().ok_or_else(|| {
            Error::Internal(
                "COS_AUTH__SERVICE_SECRET is not set: campaigns cannot reach publishing".into(),
            )
        })?;
        let mut req = tonic::Request::new(body);
        req.metadata_mut().insert(
            SERVICE_AUTH_HEADER,
            credential
                .header_value(&format!("{SERVICE}/{method}"), tenant)
                .parse()
                .map_err(|_| Error::Internal("service credential header".into()))?,
        );
        req.set_timeout(self.timeout);
        Ok(req)
    }

    pub async fn create_job(
        &self,
        tenant: Uuid,
        r: pb::CreateDeliveryJobRequest,
    ) -> Result<pb::DeliveryJob> {
        let req = self.request(r, "CreateDeliveryJob", tenant)?;
        self.grpc
            .clone()
            .create_delivery_job(req)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| passthrough(&s))
    }

    pub async fn seal(
        &self,
        tenant: Uuid,
        run: Uuid,
        batches: i64,
        recipients: i64,
    ) -> Result<pb::DeliveryJob> {
        let req = self.request(
            pb::SealDeliveryJobRequest {
                run_id: run.to_string(),
                batches_total: batches,
                recipients_total: recipients,
            },
            "SealDeliveryJob",
            tenant,
        )?;
        self.grpc
            .clone()
            .seal_delivery_job(req)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| passthrough(&s))
    }

    pub async fn set_state(&self, tenant: Uuid, run: Uuid, state: &str) -> Result<pb::DeliveryJob> {
        let req = self.request(
            pb::SetDeliveryJobStateRequest {
                run_id: run.to_string(),
                state: state.to_owned(),
            },
            "SetDeliveryJobState",
            tenant,
        )?;
        self.grpc
            .clone()
            .set_delivery_job_state(req)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| passthrough(&s))
    }

    pub async fn job(&self, tenant: Uuid, run: Uuid) -> Result<pb::DeliveryJob> {
        let req = self.request(
            pb::GetDeliveryJobRequest {
                run_id: run.to_string(),
            },
            "GetDeliveryJob",
            tenant,
        )?;
        self.grpc
            .clone()
            .get_delivery_job(req)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| passthrough(&s))
    }

    pub async fn send_test(
        &self,
        tenant: Uuid,
        r: pb::SendTestMessageRequest,
    ) -> Result<pb::SendTestMessageResponse> {
        let mut req = self.request(r, "SendTestMessage", tenant)?;
        req.set_timeout(self.timeout.max(Duration::from_secs(60)));
        self.grpc
            .clone()
            .send_test_message(req)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| passthrough(&s))
    }
}

/// Publishing's client errors (no connection for a channel, bad connection id) reach the
/// caller as they are; anything else is "unavailable".
fn passthrough(s: &tonic::Status) -> Error {
    match s.code() {
        tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition | tonic::Code::NotFound => {
            Error::from(ServiceError::from_status(s))
        }
        _ => {
            tracing::warn!(code = ?s.code(), message = s.message(), "publishing call failed");
            Error::from(ServiceError::new(
                ErrorCode::Unavailable,
                "the publishing service is unavailable; nothing was sent, try again",
            ))
        }
    }
}
