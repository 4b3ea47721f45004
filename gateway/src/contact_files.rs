//! The two hand-written routes (DESIGN §5: "hand-written routes only for what is not
//! RPC-shaped"): segmentation's CSV upload and contact export.
//!
//! - `POST /v1/contact-imports` → `CreateImport`: `multipart/form-data` (a `file` part, optional
//!   `mapping`, `static_segment_id`, `skip_existing` parts) or a raw `text/csv` body with those
//!   as query parameters. Its own body limit (`gateway.import_max_bytes`); answers
//!   `202 Accepted` with the `ImportJob` and a `Location` header.
//! - `GET /v1/contacts:export` → server-streaming `ExportContacts`: the chunks are streamed to
//!   the client as a file download, never buffered whole.
//!
//! Both are ordinary [`Route`]s that live outside the transcoded table: [`lookup`] tries them
//! before the table, so they take precedence (and merge into 405 answers), and `call_route` in
//! lib.rs authenticates and rate-limits them like every other route before handing over to
//! [`HandRoute::serve`]; upstream calls carry the same metadata (bearer, request id, client IP,
//! trace context) as transcoded calls. Their OpenAPI operations come from
//! [`openapi_operations`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use cos_errors::{ErrorCode, ServiceError};
use cos_proto::segmentation::v1::segmentation_service_client::SegmentationServiceClient;
use cos_proto::segmentation::v1::{CreateImportRequest, ExportChunk, ExportContactsRequest};
use futures::StreamExt;
use http::{HeaderValue, Method, StatusCode, header};
use prost::Message;
use prost_reflect::{DynamicMessage, MessageDescriptor};
use serde_json::{Value as Json, json};
use tonic::transport::Channel;

use crate::routes::{BodyRule, Lookup, PathTemplate, Route, RouteTable};
use crate::{AppState, transcode};

/// The proto service both routes call.
pub(crate) const SERVICE: &str = "campaignos.segmentation.v1.SegmentationService";
pub(crate) const IMPORT_PATH: &str = "/v1/contact-imports";
pub(crate) const EXPORT_PATH: &str = "/v1/contacts:export";
/// `file_name` of an upload that names none.
const DEFAULT_FILE_NAME: &str = "upload.csv";
/// Room in a gRPC message for the import's fields beside the file itself.
const GRPC_OVERHEAD: usize = 1024 * 1024;
const IMPORT_TYPES: &str = "multipart/form-data or text/csv";

/// Which hand-written route a [`Route`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HandRoute {
    Import,
    Export,
}

struct HandRoutes {
    import: Route,
    export: Route,
}

fn build_route(http_method: Method, pattern: &str, rpc: &str, status: StatusCode) -> Option<Route> {
    let service = cos_proto::descriptor_pool().get_service_by_name(SERVICE)?;
    let method = service.methods().find(|m| m.name() == rpc)?;
    let template = PathTemplate::parse(pattern).ok()?;
    Some(Route {
        http_method,
        template,
        pattern: pattern.to_owned(),
        grpc_path: cos_proto::grpc_path(&method),
        policy: cos_proto::method_policy(&method),
        method,
        body: BodyRule::None,
        response_body: None,
        success_status: status,
    })
}

/// The hand-written routes; `None` only if the descriptor set lacks segmentation's RPCs.
fn hand_routes() -> Option<&'static HandRoutes> {
    static ROUTES: OnceLock<Option<HandRoutes>> = OnceLock::new();
    ROUTES
        .get_or_init(|| {
            Some(HandRoutes {
                import: build_route(
                    Method::POST,
                    IMPORT_PATH,
                    "CreateImport",
                    StatusCode::ACCEPTED,
                )?,
                export: build_route(Method::GET, EXPORT_PATH, "ExportContacts", StatusCode::OK)?,
            })
        })
        .as_ref()
}

/// Finds the route of a request: the hand-written routes first (they win over any transcoded
/// template that would match the same path), then the transcoded table. A hand-written path
/// requested with another method answers 405 listing its method too.
pub(crate) fn lookup<'a>(table: &'a RouteTable, method: &Method, path: &str) -> Lookup<'a> {
    let Some(hand) = hand_routes() else {
        return table.lookup(method, path);
    };
    for route in [&hand.import, &hand.export] {
        if route.template.matches(path).is_none() {
            continue;
        }
        if route.http_method == *method {
            return Lookup::Found(route, Vec::new());
        }
        let mut allowed = match table.lookup(method, path) {
            found @ Lookup::Found(..) => return found,
            Lookup::MethodNotAllowed(allowed) => allowed,
            Lookup::NotFound => Vec::new(),
        };
        allowed.push(route.http_method.clone());
        allowed.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        allowed.dedup();
        return Lookup::MethodNotAllowed(allowed);
    }
    table.lookup(method, path)
}

/// Who is calling, as established by `call_route`: forwarded to the upstream like a transcoded
/// call's metadata.
pub(crate) struct Caller<'a> {
    pub rid: &'a str,
    pub ip: IpAddr,
    /// The access token to forward (an API key was already exchanged for one).
    pub bearer: Option<&'a str>,
}

impl Caller<'_> {
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        crate::set_request_metadata(request.metadata_mut(), self.rid, self.ip);
        if let Some(token) = self.bearer
            && let Ok(v) = format!("Bearer {token}").parse()
        {
            request.metadata_mut().insert("authorization", v);
        }
        request
    }
}

fn malformed(field: &str, message: impl Into<String>) -> ServiceError {
    let message = message.into();
    ServiceError::new(ErrorCode::MalformedRequest, format!("{field}: {message}"))
        .with_violation(field, message)
}

fn upstream_error(status: &tonic::Status) -> ServiceError {
    if matches!(status.code(), tonic::Code::Internal | tonic::Code::Unknown) {
        tracing::error!(code = ?status.code(), message = status.message(), "upstream error");
    }
    ServiceError::from_status(status)
}

fn timed_out() -> ServiceError {
    ServiceError::new(
        ErrorCode::DeadlineExceeded,
        "the service did not answer in time",
    )
}

impl HandRoute {
    /// The hand-written route `route` is, if it is one.
    pub(crate) fn of(route: &Route) -> Option<HandRoute> {
        let hand = hand_routes()?;
        if std::ptr::eq(route, &hand.import) {
            Some(HandRoute::Import)
        } else if std::ptr::eq(route, &hand.export) {
            Some(HandRoute::Export)
        } else {
            None
        }
    }

    /// Serves an authenticated, rate-limited request.
    pub(crate) async fn serve(
        self,
        state: &AppState,
        route: &Route,
        parts: http::request::Parts,
        body: Body,
        caller: Caller<'_>,
    ) -> Result<Response, ServiceError> {
        match self {
            HandRoute::Import => import(state, route, parts, body, &caller).await,
            HandRoute::Export => export(state, &parts, &caller).await,
        }
    }
}

fn client(state: &AppState) -> Result<SegmentationServiceClient<Channel>, ServiceError> {
    let channel = state.upstreams.get(SERVICE).cloned().ok_or_else(|| {
        ServiceError::new(
            ErrorCode::Unavailable,
            format!("no upstream configured for {SERVICE}"),
        )
    })?;
    let max = state.config.import_max_bytes.saturating_add(GRPC_OVERHEAD);
    Ok(SegmentationServiceClient::new(channel)
        .max_encoding_message_size(max)
        .max_decoding_message_size(max))
}

// ---- import -----------------------------------------------------------------------------------

/// The fields of an upload other than the file.
#[derive(Debug, Default, PartialEq, Eq)]
struct ImportOptions {
    file_name: Option<String>,
    mapping: HashMap<String, String>,
    static_segment_id: String,
    skip_existing: bool,
}

/// Parses the `mapping` JSON object (CSV header → target).
fn parse_mapping(raw: &str) -> Result<HashMap<String, String>, ServiceError> {
    if raw.trim().is_empty() {
        return Ok(HashMap::new());
    }
    let value: Json = serde_json::from_str(raw)
        .map_err(|e| malformed("mapping", format!("is not valid JSON: {e}")))?;
    let Json::Object(object) = value else {
        return Err(malformed(
            "mapping",
            "must be a JSON object of CSV header → target, e.g. {\"E-Mail\": \"email\"}",
        ));
    };
    object
        .into_iter()
        .map(|(header, target)| match target {
            Json::String(t) => Ok((header, t)),
            other => Err(malformed(
                "mapping",
                format!("the target of `{header}` must be a string, got {other}"),
            )),
        })
        .collect()
}

fn parse_bool(field: &str, raw: &str) -> Result<bool, ServiceError> {
    match raw.trim() {
        "true" | "1" | "on" => Ok(true),
        "false" | "0" | "off" => Ok(false),
        other => Err(malformed(
            field,
            format!("expected `true` or `false`, got `{other}`"),
        )),
    }
}

fn decode_component(s: &str) -> Result<String, ServiceError> {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| malformed("query", "is not valid UTF-8 after percent-decoding"))
}

/// `key=value` pairs of a query string, percent-decoded.
fn query_pairs(query: Option<&str>) -> Result<Vec<(String, String)>, ServiceError> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((decode_component(k)?, decode_component(v)?))
        })
        .collect()
}

/// Options of a raw `text/csv` upload, from the query string.
fn options_from_query(query: Option<&str>) -> Result<ImportOptions, ServiceError> {
    let mut options = ImportOptions::default();
    for (key, value) in query_pairs(query)? {
        match key.as_str() {
            "file_name" => options.file_name = Some(value).filter(|v| !v.trim().is_empty()),
            "mapping" => options.mapping = parse_mapping(&value)?,
            "static_segment_id" => options.static_segment_id = value,
            // A bare `?skip_existing` means true.
            "skip_existing" if value.is_empty() => options.skip_existing = true,
            "skip_existing" => options.skip_existing = parse_bool("skip_existing", &value)?,
            other => {
                return Err(malformed(
                    other,
                    "unknown query parameter; expected file_name, mapping, static_segment_id \
                     or skip_existing",
                ));
            }
        }
    }
    Ok(options)
}

fn too_large(limit: usize) -> ServiceError {
    ServiceError::new(
        ErrorCode::PayloadTooLarge,
        format!("the upload exceeds the limit of {limit} bytes"),
    )
}

/// True if `error` (from reading a body) is a length-limit error.
fn is_length_limit(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        current = e.source();
    }
    false
}

/// Reads an upload: returns the file and the options. `limit` bounds the whole body.
async fn read_upload(
    headers: &http::HeaderMap,
    query: Option<&str>,
    body: Body,
    limit: usize,
) -> Result<(Bytes, ImportOptions), ServiceError> {
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > limit as u64
    {
        return Err(too_large(limit));
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = ct.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("text/csv") {
        let file = axum::body::to_bytes(body, limit).await.map_err(|e| {
            let inner = e.into_inner();
            if is_length_limit(inner.as_ref()) {
                too_large(limit)
            } else {
                malformed("body", format!("could not be read: {inner}"))
            }
        })?;
        Ok((file, options_from_query(query)?))
    } else if essence.eq_ignore_ascii_case("multipart/form-data") {
        if query.is_some_and(|q| !q.is_empty()) {
            return Err(malformed(
                "query",
                "query parameters are not accepted with multipart/form-data; send them as parts",
            ));
        }
        read_multipart(ct, body, limit).await
    } else {
        Err(ServiceError::new(
            ErrorCode::UnsupportedMediaType,
            format!(
                "expected Content-Type: {IMPORT_TYPES}, got {:?}",
                if ct.is_empty() { "(none)" } else { ct }
            ),
        ))
    }
}

fn multipart_error(e: multer::Error, limit: usize) -> ServiceError {
    match e {
        multer::Error::StreamSizeExceeded { .. } | multer::Error::FieldSizeExceeded { .. } => {
            too_large(limit)
        }
        other => malformed("body", format!("invalid multipart/form-data: {other}")),
    }
}

async fn read_multipart(
    content_type: &str,
    body: Body,
    limit: usize,
) -> Result<(Bytes, ImportOptions), ServiceError> {
    let boundary = multer::parse_boundary(content_type)
        .map_err(|e| malformed("Content-Type", format!("invalid multipart boundary: {e}")))?;
    let constraints =
        multer::Constraints::new().size_limit(multer::SizeLimit::new().whole_stream(limit as u64));
    let mut parts =
        multer::Multipart::with_constraints(body.into_data_stream(), boundary, constraints);
    let mut file: Option<Bytes> = None;
    let mut options = ImportOptions::default();
    while let Some(field) = parts
        .next_field()
        .await
        .map_err(|e| multipart_error(e, limit))?
    {
        let name = field.name().unwrap_or_default().to_owned();
        match name.as_str() {
            "file" => {
                if file.is_some() {
                    return Err(malformed("file", "only one file can be imported at a time"));
                }
                options.file_name = field
                    .file_name()
                    .map(str::to_owned)
                    .filter(|n| !n.trim().is_empty());
                file = Some(field.bytes().await.map_err(|e| multipart_error(e, limit))?);
            }
            "mapping" | "static_segment_id" | "skip_existing" => {
                let text = field.text().await.map_err(|e| multipart_error(e, limit))?;
                match name.as_str() {
                    "mapping" => options.mapping = parse_mapping(&text)?,
                    "static_segment_id" => options.static_segment_id = text.trim().to_owned(),
                    _ => options.skip_existing = parse_bool("skip_existing", &text)?,
                }
            }
            "" => return Err(malformed("body", "a multipart part has no name")),
            other => {
                return Err(malformed(
                    other,
                    "unknown part; expected file, mapping, static_segment_id or skip_existing",
                ));
            }
        }
    }
    let file = file.ok_or_else(|| malformed("file", "the `file` part (the CSV) is missing"))?;
    Ok((file, options))
}

async fn import(
    state: &AppState,
    route: &Route,
    parts: http::request::Parts,
    body: Body,
    caller: &Caller<'_>,
) -> Result<Response, ServiceError> {
    let limit = state.config.import_max_bytes;
    let (file, options) = read_upload(&parts.headers, parts.uri.query(), body, limit).await?;
    if file.is_empty() {
        return Err(ServiceError::invalid("file", "the CSV file is empty"));
    }
    let message = CreateImportRequest {
        file_name: options
            .file_name
            .unwrap_or_else(|| DEFAULT_FILE_NAME.to_owned()),
        content: file.into(),
        mapping: options.mapping,
        static_segment_id: options.static_segment_id,
        skip_existing: options.skip_existing,
    };
    let mut request = caller.request(message);
    request.set_timeout(state.config.upstream_timeout);
    let mut client = client(state)?;
    let job = tokio::time::timeout(state.config.upstream_timeout, client.create_import(request))
        .await
        .map_err(|_| timed_out())?
        .map_err(|s| upstream_error(&s))?
        .into_inner();
    // Rendered by the transcoder's JSON mapping, like every other response.
    let dynamic = DynamicMessage::decode(route.method.output(), job.encode_to_vec().as_slice())
        .map_err(|e| {
            tracing::error!(error = %e, "re-decoding the ImportJob failed");
            ServiceError::internal()
        })?;
    let json = transcode::response_json(route, &dynamic)?;
    let mut resp = Response::new(Body::from(json));
    *resp.status_mut() = StatusCode::ACCEPTED;
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    let location = format!(
        "{IMPORT_PATH}/{}",
        percent_encoding::utf8_percent_encode(&job.id, percent_encoding::NON_ALPHANUMERIC)
    );
    if !job.id.is_empty()
        && let Ok(v) = HeaderValue::from_str(&location)
    {
        headers.insert(header::LOCATION, v);
    }
    Ok(resp)
}

// ---- export -----------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ExportFormat {
    Csv,
    Jsonl,
}

impl ExportFormat {
    fn as_str(self) -> &'static str {
        match self {
            ExportFormat::Csv => "csv",
            ExportFormat::Jsonl => "jsonl",
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            ExportFormat::Csv => "text/csv; charset=utf-8",
            ExportFormat::Jsonl => "application/x-ndjson",
        }
    }
}

fn export_request(
    query: Option<&str>,
) -> Result<(ExportFormat, ExportContactsRequest), ServiceError> {
    let mut format = ExportFormat::Csv;
    let mut segment_id = String::new();
    for (key, value) in query_pairs(query)? {
        match key.as_str() {
            "format" => {
                format = match value.as_str() {
                    "" | "csv" => ExportFormat::Csv,
                    "jsonl" | "ndjson" => ExportFormat::Jsonl,
                    other => {
                        return Err(ServiceError::invalid(
                            "format",
                            format!("expected `csv` or `jsonl`, got `{other}`"),
                        ));
                    }
                };
            }
            "segment_id" => segment_id = value,
            other => {
                return Err(malformed(
                    other,
                    "unknown query parameter; expected format or segment_id",
                ));
            }
        }
    }
    let request = ExportContactsRequest {
        format: format.as_str().to_owned(),
        segment_id,
    };
    Ok((format, request))
}

/// `YYYY-MM-DD` of a Unix time (UTC), for the download's file name.
fn utc_date(unix_secs: u64) -> String {
    // Howard Hinnant's civil_from_days.
    let days = i64::try_from(unix_secs / 86_400).unwrap_or(0);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// State of the export body after the first chunk.
struct ExportStream {
    upstream: tonic::Streaming<ExportChunk>,
    span: tracing::Span,
    bytes: u64,
}

async fn export(
    state: &AppState,
    parts: &http::request::Parts,
    caller: &Caller<'_>,
) -> Result<Response, ServiceError> {
    let (format, message) = export_request(parts.uri.query())?;
    // No gRPC deadline: a large export may stream for longer than any unary timeout. The wait
    // for the stream to start (headers and first chunk) is bounded instead.
    let request = caller.request(message);
    let mut client = client(state)?;
    let started = async {
        let mut upstream = client
            .export_contacts(request)
            .await
            .map_err(|s| upstream_error(&s))?
            .into_inner();
        let first = upstream.message().await.map_err(|s| upstream_error(&s))?;
        Ok::<_, ServiceError>((upstream, first))
    };
    let (upstream, first) = tokio::time::timeout(state.config.upstream_timeout, started)
        .await
        .map_err(|_| timed_out())??;

    let first_len = first.as_ref().map_or(0, |c| c.data.len() as u64);
    let head =
        futures::stream::iter(first.map(|c| Ok::<Bytes, tonic::Status>(Bytes::from(c.data))));
    let tail = futures::stream::unfold(
        Some(ExportStream {
            upstream,
            span: tracing::Span::current(),
            bytes: first_len,
        }),
        |state| async move {
            let mut s = state?;
            match s.upstream.message().await {
                Ok(Some(chunk)) => {
                    s.bytes += chunk.data.len() as u64;
                    Some((Ok(Bytes::from(chunk.data)), Some(s)))
                }
                Ok(None) => {
                    s.span
                        .in_scope(|| tracing::info!(bytes = s.bytes, "contact export finished"));
                    None
                }
                Err(status) => {
                    // The status line is sent: all we can do is abort the body, so the client
                    // sees a truncated transfer instead of a complete-looking file.
                    s.span.in_scope(|| {
                        tracing::error!(
                            code = ?status.code(),
                            message = status.message(),
                            bytes = s.bytes,
                            "contact export failed mid-stream; aborting the response body"
                        );
                    });
                    Some((Err(status), None))
                }
            }
        },
    );
    let mut resp = Response::new(Body::from_stream(head.chain(tail)));
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    let today = utc_date(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs(),
    );
    let disposition = format!(
        "attachment; filename=\"contacts-{today}.{}\"",
        format.as_str()
    );
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    Ok(resp)
}

// ---- OpenAPI ----------------------------------------------------------------------------------

/// OpenAPI operations of the hand-written routes as `(path, method key, operation)`, if the
/// table's descriptor pool has segmentation's service (test pools may not). `schema` returns the
/// `$ref` of a message and queues its component. The caller adds the shared error responses
/// that an operation does not define itself.
pub(crate) fn openapi_operations(
    table: &RouteTable,
    schema: &mut dyn FnMut(&MessageDescriptor) -> Json,
) -> Vec<(String, &'static str, Json)> {
    let Some(service) = table
        .routes()
        .iter()
        .map(|r| r.method.parent_service())
        .find(|s| s.full_name() == SERVICE)
    else {
        return Vec::new();
    };
    let method = |name: &str| service.methods().find(|m| m.name() == name);
    let mut out = Vec::new();
    let common = |op: &mut serde_json::Map<String, Json>, rpc: &prost_reflect::MethodDescriptor| {
        let policy = cos_proto::method_policy(rpc);
        op.insert("tags".into(), json!([service.name()]));
        op.insert("security".into(), json!([{ "bearerAuth": [] }]));
        if !policy.permission.is_empty() {
            op.insert("x-permission".into(), json!(policy.permission));
        }
        op.insert("x-grpc-method".into(), json!(cos_proto::grpc_path(rpc)));
        op.insert("x-hand-written".into(), json!(true));
    };

    if let Some(rpc) = method("CreateImport") {
        let mapping_doc = "JSON object of CSV header → target (email, phone, external_id, \
                           first_name, last_name, locale, time_zone, tags, attributes.<key>, \
                           consent.<channel>, last_activity_at, ignore). Omitted: inferred from \
                           the header names.";
        let mut op = serde_json::Map::new();
        op.insert(
            "operationId".into(),
            json!("SegmentationService_CreateImport"),
        );
        op.insert(
            "summary".into(),
            json!("Uploads a CSV file of contacts and queues its import."),
        );
        op.insert(
            "description".into(),
            json!(format!(
                "Send the CSV either as `multipart/form-data` (a `file` part, whose file name \
                 becomes the import's `file_name`, plus optional `mapping`, `static_segment_id` \
                 and `skip_existing` parts) or as a raw `text/csv` body with those as query \
                 parameters. The import runs in the background: follow it at the `Location` \
                 returned (`GET {IMPORT_PATH}/{{import_id}}`) and list refused rows at \
                 `GET {IMPORT_PATH}/{{import_id}}/rejections`. The body limit is the gateway's \
                 `gateway.import_max_bytes` (64 MiB by default)."
            )),
        );
        common(&mut op, &rpc);
        op.insert(
            "parameters".into(),
            json!([
                { "name": "file_name", "in": "query", "schema": { "type": "string" },
                  "description": format!("Raw `text/csv` uploads: the file's name (default `{DEFAULT_FILE_NAME}`).") },
                { "name": "mapping", "in": "query", "schema": { "type": "string" },
                  "description": format!("Raw `text/csv` uploads: {mapping_doc} URL-encoded.") },
                { "name": "static_segment_id", "in": "query", "schema": { "type": "string" },
                  "description": "Raw `text/csv` uploads: also add every imported contact to this static segment." },
                { "name": "skip_existing", "in": "query", "schema": { "type": "boolean" },
                  "description": "Raw `text/csv` uploads: leave existing contacts untouched (only create new ones)." },
            ]),
        );
        op.insert(
            "requestBody".into(),
            json!({
                "required": true,
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "required": ["file"],
                            "properties": {
                                "file": {
                                    "type": "string",
                                    "contentMediaType": "text/csv",
                                    "description": "The CSV file (first row: column headers).",
                                },
                                "mapping": { "type": "string", "description": mapping_doc },
                                "static_segment_id": {
                                    "type": "string",
                                    "description": "Also add every imported contact to this static segment.",
                                },
                                "skip_existing": {
                                    "type": "boolean",
                                    "description": "Leave existing contacts untouched (only create new ones).",
                                },
                            },
                        },
                        "encoding": { "mapping": { "contentType": "application/json" } },
                    },
                    "text/csv": {
                        "schema": { "type": "string", "contentMediaType": "text/csv" },
                    },
                },
            }),
        );
        op.insert(
            "responses".into(),
            json!({
                "202": {
                    "description": "Accepted: the import is queued.",
                    "headers": {
                        "Location": {
                            "description": "The import job: GET it to follow progress.",
                            "schema": { "type": "string", "format": "uri-reference" },
                        },
                    },
                    "content": { "application/json": { "schema": schema(&rpc.output()) } },
                },
                "413": {
                    "description": "The upload exceeds `gateway.import_max_bytes`.",
                    "content": { (cos_errors::PROBLEM_CONTENT_TYPE): { "schema": { "$ref": "#/components/schemas/Problem" } } },
                },
                "415": {
                    "description": format!("The body is neither {IMPORT_TYPES}."),
                    "content": { (cos_errors::PROBLEM_CONTENT_TYPE): { "schema": { "$ref": "#/components/schemas/Problem" } } },
                },
            }),
        );
        out.push((IMPORT_PATH.to_owned(), "post", Json::Object(op)));
    }

    if let Some(rpc) = method("ExportContacts") {
        let mut op = serde_json::Map::new();
        op.insert(
            "operationId".into(),
            json!("SegmentationService_ExportContacts"),
        );
        op.insert(
            "summary".into(),
            json!("Downloads contacts (all, or one segment's) as CSV or JSON Lines."),
        );
        op.insert(
            "description".into(),
            json!(
                "Streamed as it is produced (`Content-Disposition: attachment; \
                 filename=\"contacts-<date>.<format>\"`). Errors before the download starts \
                 are problem+json responses; a failure midway aborts the transfer, so a \
                 truncated file is never mistaken for a complete one."
            ),
        );
        common(&mut op, &rpc);
        op.insert(
            "parameters".into(),
            json!([
                { "name": "format", "in": "query",
                  "schema": { "type": "string", "enum": ["csv", "jsonl"], "default": "csv" },
                  "description": "`csv` (default) or `jsonl` (one JSON object per line)." },
                { "name": "segment_id", "in": "query", "schema": { "type": "string" },
                  "description": "Only this segment's members (optional)." },
            ]),
        );
        op.insert(
            "responses".into(),
            json!({
                "200": {
                    "description": "The export file.",
                    "headers": {
                        "Content-Disposition": {
                            "description": "`attachment; filename=\"contacts-<YYYY-MM-DD>.<csv|jsonl>\"`.",
                            "schema": { "type": "string" },
                        },
                    },
                    "content": {
                        "text/csv": { "schema": { "type": "string", "contentMediaType": "text/csv" } },
                        "application/x-ndjson": {
                            "schema": { "type": "string", "contentMediaType": "application/x-ndjson" },
                        },
                    },
                },
            }),
        );
        out.push((EXPORT_PATH.to_owned(), "get", Json::Object(op)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc_calendar_days() {
        assert_eq!(utc_date(0), "1970-01-01");
        assert_eq!(utc_date(951_782_400), "2000-02-29");
        assert_eq!(utc_date(1_709_164_800 + 86_399), "2024-02-29");
        assert_eq!(utc_date(1_735_689_599), "2024-12-31");
        assert_eq!(utc_date(1_735_689_600), "2025-01-01");
    }

    #[test]
    fn raw_upload_options_come_from_the_query() {
        let o = options_from_query(Some(
            "file_name=leads%20q1.csv&mapping=%7B%22E-Mail%22%3A%22email%22%7D\
             &static_segment_id=s1&skip_existing",
        ))
        .unwrap();
        assert_eq!(o.file_name.as_deref(), Some("leads q1.csv"));
        assert_eq!(o.mapping.get("E-Mail").map(String::as_str), Some("email"));
        assert_eq!(o.static_segment_id, "s1");
        assert!(o.skip_existing);
        assert_eq!(options_from_query(None).unwrap(), ImportOptions::default());

        for (query, field) in [
            ("mapping=%7Bnope", "mapping"),
            ("mapping=%5B%5D", "mapping"),
            ("mapping=%7B%22a%22%3A1%7D", "mapping"),
            ("skip_existing=maybe", "skip_existing"),
            ("colour=red", "colour"),
        ] {
            let e = options_from_query(Some(query)).unwrap_err();
            assert_eq!(e.code, ErrorCode::MalformedRequest, "{query}");
            assert_eq!(e.violations[0].field, field, "{query}");
        }
    }

    #[test]
    fn export_query_picks_the_format() {
        let (f, r) = export_request(None).unwrap();
        assert_eq!(
            (f, r.format.as_str(), r.segment_id.as_str()),
            (ExportFormat::Csv, "csv", "")
        );
        let (f, r) = export_request(Some("format=jsonl&segment_id=abc")).unwrap();
        assert_eq!(
            (f, r.format.as_str(), r.segment_id.as_str()),
            (ExportFormat::Jsonl, "jsonl", "abc")
        );
        let e = export_request(Some("format=xlsx")).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidArgument);
        assert_eq!(e.violations[0].field, "format");
        assert_eq!(
            export_request(Some("page=2")).unwrap_err().violations[0].field,
            "page"
        );
    }

    #[test]
    fn hand_routes_take_precedence_and_join_405_answers() {
        let table = RouteTable::from_pool(cos_proto::descriptor_pool()).unwrap();
        match lookup(&table, &Method::POST, IMPORT_PATH) {
            Lookup::Found(route, vars) => {
                assert_eq!(HandRoute::of(route), Some(HandRoute::Import));
                assert!(vars.is_empty());
                assert_eq!(route.method.name(), "CreateImport");
            }
            other => panic!("{other:?}"),
        }
        match lookup(&table, &Method::GET, EXPORT_PATH) {
            Lookup::Found(route, _) => assert_eq!(HandRoute::of(route), Some(HandRoute::Export)),
            other => panic!("{other:?}"),
        }
        // The transcoded routes around them still answer.
        match lookup(&table, &Method::GET, IMPORT_PATH) {
            Lookup::Found(route, _) => {
                assert_eq!(route.method.name(), "ListImports");
                assert_eq!(HandRoute::of(route), None);
            }
            other => panic!("{other:?}"),
        }
        match lookup(&table, &Method::GET, "/v1/contacts/c1") {
            Lookup::Found(route, vars) => {
                assert_eq!(route.method.name(), "GetContact");
                assert_eq!(vars, vec![("contact_id".to_owned(), "c1".to_owned())]);
            }
            other => panic!("{other:?}"),
        }
        match lookup(&table, &Method::POST, "/v1/contacts:upsert") {
            Lookup::Found(route, _) => assert_eq!(route.method.name(), "UpsertContact"),
            other => panic!("{other:?}"),
        }
        // Other methods on the hand-written paths: 405 naming every allowed method.
        match lookup(&table, &Method::DELETE, IMPORT_PATH) {
            Lookup::MethodNotAllowed(allowed) => {
                assert_eq!(allowed, vec![Method::GET, Method::POST]);
            }
            other => panic!("{other:?}"),
        }
        match lookup(&table, &Method::POST, EXPORT_PATH) {
            Lookup::MethodNotAllowed(allowed) => assert_eq!(allowed, vec![Method::GET]),
            other => panic!("{other:?}"),
        }
        // Near misses are not the hand-written routes.
        for path in [
            "/v1/contacts:exports",
            "/v1/contact-imports/",
            "/v1/contacts/x:export",
        ] {
            if let Lookup::Found(route, _) = lookup(&table, &Method::GET, path) {
                assert_eq!(HandRoute::of(route), None, "{path}");
            }
        }
    }
}
