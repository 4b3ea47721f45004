//! The audience of a launch: the members of the target segments (merged, each contact once),
//! minus the members of the exclusion segments, minus contacts who cannot receive any of the
//! campaign's channels (no consent, no address). Read from segmentation's StreamAudience with
//! the mesh's service credential, so a scheduled launch works without a user.
//!
//! Consent rule: email and SMS go only to contacts whose consent for that channel is
//! `subscribed`; `unsubscribed` and `unknown` are skipped (`unsubscribed`, `no_consent`). The
//! webhook channel (the workspace's own endpoint) and the sandbox need no consent.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::Duration;

use cos_auth::{SERVICE_AUTH_HEADER, ServiceCredential};
use cos_errors::{ErrorCode, ServiceError};
use cos_proto::segmentation::v1 as seg;
use cos_proto::segmentation::v1::segmentation_service_client::SegmentationServiceClient;
use futures::StreamExt;
use tonic::transport::Channel;
use uuid::Uuid;

use crate::error::{Error, Result};

const STREAM_PATH: &str = "/campaignos.segmentation.v1.SegmentationService/StreamAudience";
const STREAM_BATCH: i32 = 2000;

/// Reads audiences from segmentation. Cheap to clone.
#[derive(Clone)]
pub struct AudienceSource {
    grpc: SegmentationServiceClient<Channel>,
    credential: Option<ServiceCredential>,
}

/// What a launch reads.
#[derive(Debug, Clone)]
pub struct AudienceSpec {
    pub tenant: Uuid,
    pub targets: Vec<Uuid>,
    pub exclusions: Vec<Uuid>,
    pub channels: Vec<String>,
    /// Resume after this contact (exclusive).
    pub after: Option<Uuid>,
    /// Read attributes (as JSON) too; a count needs none.
    pub with_attributes: bool,
}

/// One recipient that passed the filters, with the channels it gets.
pub struct Accepted {
    pub member: seg::Member,
    pub channels: Vec<String>,
}

/// A member that was left out, and why.
pub enum Next {
    Accepted(Box<Accepted>),
    Skipped(&'static str),
}

type MemberStream = futures::stream::BoxStream<'static, Result<seg::MemberBatch, tonic::Status>>;

struct Source {
    segment: Uuid,
    stream: MemberStream,
    buffer: VecDeque<(Uuid, seg::Member)>,
    /// The last contact id received (a broken stream is reopened after it).
    last: Option<Uuid>,
    reopened: u32,
    done: bool,
}

/// How often one segment's stream may break and be reopened where it stopped (segmentation
/// ends a stream its reader has not pulled from for a minute, which happens to a target whose
/// contact ids lie far beyond the others').
const MAX_REOPENS: u32 = 20;

/// Merges the target streams in contact-id order (each contact once) and applies exclusions,
/// consent and addresses.
pub struct AudienceReader {
    source: AudienceSource,
    tenant: Uuid,
    with_attributes: bool,
    sources: Vec<Source>,
    exclusions: HashSet<Uuid>,
    channels: Vec<String>,
}

fn unavailable(s: &tonic::Status) -> Error {
    tracing::warn!(code = ?s.code(), message = s.message(), "segmentation audience stream failed");
    match s.code() {
        tonic::Code::NotFound => ServiceError::new(
            ErrorCode::FailedPrecondition,
            "a target or exclusion segment no longer exists; edit the campaign's segments",
        )
        .into(),
        _ => Error::from(ServiceError::new(
            ErrorCode::Unavailable,
            "the segmentation service is unavailable; nothing was sent, try again",
        )),
    }
}

impl AudienceSource {
    pub fn new(channel: Channel, credential: Option<ServiceCredential>) -> Self {
        Self {
            grpc: SegmentationServiceClient::new(channel)
                .max_decoding_message_size(64 * 1024 * 1024),
            credential,
        }
    }

    async fn open(
        &self,
        tenant: Uuid,
        segment: Uuid,
        after: Option<Uuid>,
        with_attributes: bool,
    ) -> Result<MemberStream> {
        let credential = self.credential.as_ref().ok_or_else(|| {
            Error::Internal(
                "COS_AUTH__SERVICE_SECRET is not set: campaigns cannot read audiences".into(),
            )
        })?;
        let mut req = tonic::Request::new(seg::StreamMembersRequest {
            segment_id: segment.to_string(),
            batch_size: STREAM_BATCH,
            after_contact_id: after.map(|a| a.to_string()).unwrap_or_default(),
            attribute_keys: vec![],
            omit_attributes: !with_attributes,
            attributes_as_json: true,
        });
        req.metadata_mut().insert(
            SERVICE_AUTH_HEADER,
            credential
                .header_value(STREAM_PATH, tenant)
                .parse()
                .map_err(|_| Error::Internal("service credential header".into()))?,
        );
        req.set_timeout(Duration::from_secs(3600));
        let stream = self
            .grpc
            .clone()
            .stream_audience(req)
            .await
            .map_err(|s| unavailable(&s))?
            .into_inner();
        Ok(stream.boxed())
    }

    /// Every member of the exclusion segments.
    async fn exclusion_set(&self, tenant: Uuid, segments: &[Uuid]) -> Result<HashSet<Uuid>> {
        let mut set = HashSet::new();
        for s in segments {
            let mut stream = self.open(tenant, *s, None, false).await?;
            while let Some(batch) = stream.next().await {
                let batch = batch.map_err(|s| unavailable(&s))?;
                set.extend(
                    batch
                        .members
                        .iter()
                        .filter_map(|m| Uuid::parse_str(&m.contact_id).ok()),
                );
            }
        }
        Ok(set)
    }

    /// Opens a reader over the audience of `spec`.
    pub async fn reader(&self, spec: &AudienceSpec) -> Result<AudienceReader> {
        let exclusions = self.exclusion_set(spec.tenant, &spec.exclusions).await?;
        let mut sources = Vec::with_capacity(spec.targets.len());
        for t in &spec.targets {
            sources.push(Source {
                segment: *t,
                stream: self
                    .open(spec.tenant, *t, spec.after, spec.with_attributes)
                    .await?,
                buffer: VecDeque::new(),
                last: spec.after,
                reopened: 0,
                done: false,
            });
        }
        Ok(AudienceReader {
            source: self.clone(),
            tenant: spec.tenant,
            with_attributes: spec.with_attributes,
            sources,
            exclusions,
            channels: spec.channels.clone(),
        })
    }
}

/// Why `m` cannot receive `channel`, if it cannot.
pub fn channel_block(m: &seg::Member, channel: &str) -> Option<&'static str> {
    let consent = |state: &str| match state {
        "subscribed" => None,
        "unsubscribed" => Some("unsubscribed"),
        _ => Some("no_consent"),
    };
    match channel {
        "email" => {
            if m.email.trim().is_empty() {
                Some("no_address")
            } else {
                consent(&m.email_consent)
            }
        }
        "sms" => {
            if m.phone.trim().is_empty() {
                Some("no_address")
            } else {
                consent(&m.sms_consent)
            }
        }
        _ => None,
    }
}

impl AudienceReader {
    async fn fill(&mut self, i: usize) -> Result<()> {
        loop {
            let src = &mut self.sources[i];
            if !src.buffer.is_empty() || src.done {
                return Ok(());
            }
            match src.stream.next().await {
                Some(Ok(batch)) => {
                    for m in batch.members {
                        // A member without a valid id cannot be ordered or sent to.
                        if let Ok(id) = Uuid::parse_str(&m.contact_id) {
                            src.last = Some(id);
                            src.buffer.push_back((id, m));
                        }
                    }
                }
                Some(Err(s))
                    if src.reopened < MAX_REOPENS
                        && matches!(
                            s.code(),
                            tonic::Code::DeadlineExceeded
                                | tonic::Code::Cancelled
                                | tonic::Code::Unavailable
                                | tonic::Code::Aborted
                        ) =>
                {
                    tracing::info!(segment = %src.segment, code = ?s.code(), "audience stream broke; reopening where it stopped");
                    let (segment, after) = (src.segment, src.last);
                    let stream = self
                        .source
                        .open(self.tenant, segment, after, self.with_attributes)
                        .await?;
                    let src = &mut self.sources[i];
                    src.stream = stream;
                    src.reopened += 1;
                }
                Some(Err(s)) => return Err(unavailable(&s)),
                None => src.done = true,
            }
        }
    }

    /// The next member in contact-id order (`None` at the end).
    pub async fn next(&mut self) -> Result<Option<(Uuid, Next)>> {
        for i in 0..self.sources.len() {
            self.fill(i).await?;
        }
        let Some(min) = self
            .sources
            .iter()
            .filter_map(|s| s.buffer.front().map(|(id, _)| *id))
            .min()
        else {
            return Ok(None);
        };
        let mut member = None;
        for s in &mut self.sources {
            while s.buffer.front().is_some_and(|(id, _)| *id == min) {
                member = s.buffer.pop_front().map(|(_, m)| m);
            }
        }
        let Some(member) = member else {
            return Ok(None);
        };
        if self.exclusions.contains(&min) {
            return Ok(Some((min, Next::Skipped("excluded"))));
        }
        let mut channels = Vec::with_capacity(self.channels.len());
        let mut first_block = None;
        for c in &self.channels {
            match channel_block(&member, c) {
                None => channels.push(c.clone()),
                Some(reason) => {
                    first_block.get_or_insert(reason);
                }
            }
        }
        if channels.is_empty() {
            return Ok(Some((
                min,
                Next::Skipped(first_block.unwrap_or("no_channel")),
            )));
        }
        Ok(Some((
            min,
            Next::Accepted(Box::new(Accepted { member, channels })),
        )))
    }
}

/// What a launch counts before taking quota.
#[derive(Debug, Clone, Default)]
pub struct Count {
    pub recipients: i64,
    /// Messages that consume quota (recipients x their non-sandbox channels).
    pub messages: i64,
    pub skipped: BTreeMap<String, i64>,
}

/// Counts the audience (no attributes read).
pub async fn count(source: &AudienceSource, spec: &AudienceSpec) -> Result<Count> {
    let mut spec = spec.clone();
    spec.with_attributes = false;
    spec.after = None;
    let mut reader = source.reader(&spec).await?;
    let mut out = Count::default();
    while let Some((_, next)) = reader.next().await? {
        match next {
            Next::Accepted(a) => {
                out.recipients += 1;
                out.messages += a.channels.iter().filter(|c| *c != "sandbox").count() as i64;
            }
            Next::Skipped(reason) => *out.skipped.entry(reason.to_owned()).or_default() += 1,
        }
    }
    Ok(out)
}
