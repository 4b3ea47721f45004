//! The hand-written routes (`POST /v1/contact-imports`, `GET /v1/contacts:export`) against fake
//! upstreams: a tonic server answering identity's `GetJwks`/`AuthenticateApiKey` and
//! segmentation's `CreateImport`/`ExportContacts` (every other RPC: UNIMPLEMENTED).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use cos_auth::{Principal, PrincipalKind, Role, SigningKey, TokenIssuer};
use cos_gateway::{Gateway, GatewayConfig};
use cos_proto::identity::v1 as idp;
use cos_proto::segmentation::v1 as seg;
use http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value as Json, json};
use tower::ServiceExt;

const SEGMENTATION: &str = "campaignos.segmentation.v1.SegmentationService";
const IDENTITY: &str = "campaignos.identity.v1.IdentityService";
const API_KEY: &str = "cos_test_key";

/// What the fake upstream saw of one call.
#[derive(Debug, Clone, Default)]
struct Seen {
    path: String,
    authorization: Option<String>,
    request_id: Option<String>,
    forwarded_for: Option<String>,
    import: Option<seg::CreateImportRequest>,
    export: Option<seg::ExportContactsRequest>,
}

#[derive(Clone)]
struct Fake {
    seen: Arc<Mutex<Vec<Seen>>>,
    jwks: idp::Jwks,
    /// What `AuthenticateApiKey` hands out for [`API_KEY`].
    api_key_token: String,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type ChunkStream =
    Pin<Box<dyn futures::Stream<Item = Result<seg::ExportChunk, tonic::Status>> + Send>>;

fn record(fake: &Fake, path: &str, md: &tonic::metadata::MetadataMap) -> usize {
    let get = |k: &str| md.get(k).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let mut seen = fake.seen.lock().unwrap();
    seen.push(Seen {
        path: path.to_owned(),
        authorization: get("authorization"),
        request_id: get("x-request-id"),
        forwarded_for: get("x-forwarded-for"),
        ..Seen::default()
    });
    seen.len() - 1
}

struct Unary<F>(F);

impl<Req, Resp, F, Fut> tonic::server::UnaryService<Req> for Unary<F>
where
    F: FnMut(tonic::Request<Req>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<Resp>, tonic::Status>> + Send + 'static,
{
    type Response = Resp;
    type Future = Fut;
    fn call(&mut self, request: tonic::Request<Req>) -> Fut {
        (self.0)(request)
    }
}

struct ExportSvc(Fake);

impl tonic::server::ServerStreamingService<seg::ExportContactsRequest> for ExportSvc {
    type Response = seg::ExportChunk;
    type ResponseStream = ChunkStream;
    type Future = std::future::Ready<Result<tonic::Response<ChunkStream>, tonic::Status>>;
    fn call(&mut self, request: tonic::Request<seg::ExportContactsRequest>) -> Self::Future {
        std::future::ready(self.0.export(request).map(tonic::Response::new))
    }
}

fn codec<E, D>() -> tonic_prost::ProstCodec<E, D> {
    tonic_prost::ProstCodec::default()
}

impl Fake {
    fn export(
        &self,
        req: tonic::Request<seg::ExportContactsRequest>,
    ) -> Result<ChunkStream, tonic::Status> {
        let i = record(self, "ExportContacts", req.metadata());
        let msg = req.into_inner();
        self.seen.lock().unwrap()[i].export = Some(msg.clone());
        let chunk = |s: &str| {
            Ok(seg::ExportChunk {
                data: s.as_bytes().to_vec(),
            })
        };
        let chunks: Vec<Result<seg::ExportChunk, tonic::Status>> = match msg.segment_id.as_str() {
            "missing" => {
                return Err(cos_errors::ServiceError::not_found("segment missing").to_status());
            }
            // An error as the first message of the stream (after the response headers).
            "denied" => vec![Err(tonic::Status::permission_denied("no contacts.export"))],
            "broken" => vec![
                chunk("email\n"),
                chunk("a@example.com\n"),
                Err(tonic::Status::internal("database went away")),
            ],
            "empty" => vec![],
            _ if msg.format == "jsonl" => vec![
                chunk("{\"email\":\"a@example.com\"}\n"),
                chunk("{\"email\":\"b@example.com\"}\n"),
            ],
            _ => vec![
                chunk("email,first_name\n"),
                chunk("a@example.com,Ann\n"),
                chunk("b@example.com,Bob\n"),
            ],
        };
        Ok(Box::pin(futures::stream::iter(chunks)))
    }
}

macro_rules! named {
    ($name:ident, $service:expr) => {
        #[derive(Clone)]
        struct $name(Fake);
        impl tonic::server::NamedService for $name {
            const NAME: &'static str = $service;
        }
    };
}
named!(FakeIdentity, IDENTITY);
named!(FakeSegmentation, SEGMENTATION);

impl tower::Service<http::Request<tonic::body::Body>> for FakeIdentity {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let fake = self.0.clone();
        Box::pin(async move {
            let path = req.uri().path().to_owned();
            let response = match path.rsplit('/').next().unwrap_or_default() {
                "GetJwks" => {
                    let jwks = fake.jwks.clone();
                    let svc = Unary(move |_: tonic::Request<idp::GetJwksRequest>| {
                        let jwks = jwks.clone();
                        async move { Ok(tonic::Response::new(jwks)) }
                    });
                    tonic::server::Grpc::new(codec()).unary(svc, req).await
                }
                "AuthenticateApiKey" => {
                    let token = fake.api_key_token.clone();
                    let svc = Unary(move |r: tonic::Request<idp::AuthenticateApiKeyRequest>| {
                        let ok = r.get_ref().api_key == API_KEY;
                        let token = token.clone();
                        async move {
                            if !ok {
                                return Err(tonic::Status::unauthenticated("bad key"));
                            }
                            Ok(tonic::Response::new(idp::AuthenticateApiKeyResponse {
                                access_token: token,
                                ..Default::default()
                            }))
                        }
                    });
                    tonic::server::Grpc::new(codec()).unary(svc, req).await
                }
                _ => tonic::Status::unimplemented(path).into_http(),
            };
            Ok(response)
        })
    }
}

impl tower::Service<http::Request<tonic::body::Body>> for FakeSegmentation {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let fake = self.0.clone();
        Box::pin(async move {
            let path = req.uri().path().to_owned();
            let method = path.rsplit('/').next().unwrap_or_default().to_owned();
            let response = match method.as_str() {
                "CreateImport" => {
                    let svc = Unary(move |r: tonic::Request<seg::CreateImportRequest>| {
                        let i = record(&fake, "CreateImport", r.metadata());
                        let msg = r.into_inner();
                        fake.seen.lock().unwrap()[i].import = Some(msg.clone());
                        async move {
                            if msg.static_segment_id == "missing" {
                                return Err(cos_errors::ServiceError::not_found("segment missing")
                                    .to_status());
                            }
                            Ok(tonic::Response::new(seg::ImportJob {
                                id: "0190-job".into(),
                                status: "queued".into(),
                                file_name: msg.file_name,
                                file_bytes: i64::try_from(msg.content.len()).unwrap(),
                                mapping: msg.mapping,
                                static_segment_id: msg.static_segment_id,
                                ..Default::default()
                            }))
                        }
                    });
                    let mut grpc =
                        tonic::server::Grpc::new(codec()).max_decoding_message_size(usize::MAX);
                    grpc.unary(svc, req).await
                }
                "ExportContacts" => {
                    let svc = ExportSvc(fake);
                    tonic::server::Grpc::new(codec())
                        .server_streaming(svc, req)
                        .await
                }
                _ => {
                    let md = tonic::metadata::MetadataMap::from_headers(req.headers().clone());
                    record(&fake, &method, &md);
                    tonic::Status::unimplemented(path).into_http()
                }
            };
            Ok(response)
        })
    }
}

struct Harness {
    router: axum::Router,
    seen: Arc<Mutex<Vec<Seen>>>,
    token: String,
    api_key_token: String,
}

impl Harness {
    async fn start(import_max_bytes: usize) -> Harness {
        let key = SigningKey::generate("test-key").unwrap();
        let jwk = key.jwk();
        let jwks = idp::Jwks {
            keys: vec![idp::Jwk {
                kty: jwk.kty,
                crv: jwk.crv,
                x: jwk.x,
                kid: jwk.kid,
                alg: jwk.alg,
                r#use: jwk.use_,
            }],
        };
        let source = cos_config::Source::from_env_pairs([
            // Nothing listens there: the limiter fails open.
            ("COS_REDIS__URL", "redis://127.0.0.1:9/".to_owned()),
            (
                "COS_GATEWAY__IMPORT_MAX_BYTES",
                import_max_bytes.to_string(),
            ),
        ]);
        let common = cos_config::CommonConfig::load(&source).unwrap();
        let issuer = TokenIssuer::new(
            Arc::new(key),
            &common.auth.issuer,
            &common.auth.audience,
            Duration::from_secs(600),
        );
        let principal = |kind| Principal {
            kind,
            user_id: uuid::Uuid::now_v7(),
            tenant_id: uuid::Uuid::now_v7(),
            role: Role::Editor,
            api_key_id: None,
            scopes: Vec::new(),
            platform_admin: false,
            session_id: None,
        };
        let (token, _) = issuer.issue(&principal(PrincipalKind::User)).unwrap();
        let (api_key_token, _) = issuer.issue(&principal(PrincipalKind::ApiKey)).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let fake = Fake {
            seen: seen.clone(),
            jwks,
            api_key_token: api_key_token.clone(),
        };

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(FakeIdentity(fake.clone()))
                .add_service(FakeSegmentation(fake))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );

        let mut r = source.reader();
        let mut config = GatewayConfig::read(&mut r);
        r.finish().unwrap();
        assert_eq!(config.import_max_bytes, import_max_bytes);
        config.upstreams.insert(IDENTITY.into(), url.clone());
        config.upstreams.insert(SEGMENTATION.into(), url);
        let gateway = Gateway::build(&common, config).await.unwrap();
        let mut loaded = gateway.refresh_jwks().await;
        for _ in 0..50 {
            if loaded.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            loaded = gateway.refresh_jwks().await;
        }
        assert_eq!(loaded.unwrap(), 1);
        Harness {
            router: gateway.router(),
            seen,
            token,
            api_key_token,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn request(&self, method: Method, uri: &str) -> http::request::Builder {
        Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token))
    }

    async fn send(
        &self,
        req: http::request::Builder,
        body: impl Into<Body>,
    ) -> http::Response<Body> {
        let mut req = req.body(body.into()).unwrap();
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40_000))));
        self.router.clone().oneshot(req).await.unwrap()
    }
}

async fn json_of(resp: http::Response<Body>) -> Json {
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))
}

fn header_of<'a>(resp: &'a http::Response<Body>, name: &str) -> &'a str {
    resp.headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

/// Asserts a problem+json response with this status, returning the problem.
async fn problem(resp: http::Response<Body>, status: StatusCode) -> Json {
    assert_eq!(resp.status(), status);
    assert_eq!(header_of(&resp, "content-type"), "application/problem+json");
    json_of(resp).await
}

const CSV: &str = "E-Mail,Vorname\na@example.com,Ann\nb@example.com,Bob\n";

fn multipart(boundary: &str, parts: &[(&str, Option<&str>, &str)]) -> String {
    let mut body = String::new();
    for (name, file_name, content) in parts {
        body.push_str(&format!("--{boundary}\r\n"));
        match file_name {
            Some(f) => body.push_str(&format!(
                "Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\n\
                 Content-Type: text/csv\r\n\r\n"
            )),
            None => body.push_str(&format!(
                "Content-Disposition: form-data; name=\"{name}\"\r\n\r\n"
            )),
        }
        body.push_str(content);
        body.push_str("\r\n");
    }
    body.push_str(&format!("--{boundary}--\r\n"));
    body
}

#[tokio::test]
async fn raw_csv_upload_queues_an_import_with_the_callers_metadata() {
    let h = Harness::start(1024 * 1024).await;
    let mapping = percent_encoding::utf8_percent_encode(
        r#"{"E-Mail":"email","Vorname":"first_name"}"#,
        percent_encoding::NON_ALPHANUMERIC,
    );
    let req = h
        .request(
            Method::POST,
            &format!(
                "/v1/contact-imports?file_name=leads%20q1.csv&mapping={mapping}\
                 &static_segment_id=seg-1&skip_existing=true"
            ),
        )
        .header(header::CONTENT_TYPE, "text/csv; charset=utf-8")
        .header("x-request-id", "req-import-1");
    let resp = h.send(req, CSV).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(
        header_of(&resp, "location"),
        "/v1/contact-imports/0190%2Djob"
    );
    assert_eq!(header_of(&resp, "content-type"), "application/json");
    assert_eq!(header_of(&resp, "x-request-id"), "req-import-1");
    let job = json_of(resp).await;
    // The transcoder's JSON mapping: proto field names, defaults included, int64 as strings.
    assert_eq!(job["id"], "0190-job");
    assert_eq!(job["status"], "queued");
    assert_eq!(job["file_name"], "leads q1.csv");
    assert_eq!(job["file_bytes"], CSV.len().to_string());
    assert_eq!(job["rows_read"], "0");
    assert_eq!(job["static_segment_id"], "seg-1");
    assert_eq!(
        job["mapping"],
        json!({ "E-Mail": "email", "Vorname": "first_name" })
    );
    assert!(job.get("unknown_columns").is_some());

    let seen = h.seen();
    assert_eq!(seen.len(), 1);
    let call = &seen[0];
    assert_eq!(call.path, "CreateImport");
    assert_eq!(
        call.authorization.as_deref(),
        Some(format!("Bearer {}", h.token).as_str())
    );
    assert_eq!(call.request_id.as_deref(), Some("req-import-1"));
    assert_eq!(call.forwarded_for.as_deref(), Some("127.0.0.1"));
    let import = call.import.as_ref().unwrap();
    assert_eq!(import.content, CSV.as_bytes());
    assert_eq!(import.file_name, "leads q1.csv");
    assert!(import.skip_existing);
    assert_eq!(import.static_segment_id, "seg-1");
    assert_eq!(import.mapping.len(), 2);
}

#[tokio::test]
async fn multipart_upload_takes_the_file_name_from_the_file_part() {
    let h = Harness::start(1024 * 1024).await;
    let body = multipart(
        "XyZ123",
        &[
            ("mapping", None, r#"{"E-Mail": "email"}"#),
            ("file", Some("newsletter.csv"), CSV),
            ("static_segment_id", None, "seg-2"),
            ("skip_existing", None, "on"),
        ],
    );
    let req = h
        .request(Method::POST, "/v1/contact-imports")
        .header(header::CONTENT_TYPE, "multipart/form-data; boundary=XyZ123");
    let resp = h.send(req, body).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let job = json_of(resp).await;
    assert_eq!(job["file_name"], "newsletter.csv");
    let import = h.seen()[0].import.clone().unwrap();
    assert_eq!(import.content, CSV.as_bytes());
    assert_eq!(import.file_name, "newsletter.csv");
    assert_eq!(
        import.mapping.get("E-Mail").map(String::as_str),
        Some("email")
    );
    assert_eq!(import.static_segment_id, "seg-2");
    assert!(import.skip_existing);

    // Only the file is required; a file part without a name gets the default name.
    let body = multipart("b", &[("file", None, CSV)]);
    let req = h
        .request(Method::POST, "/v1/contact-imports")
        .header(header::CONTENT_TYPE, "multipart/form-data; boundary=b");
    assert_eq!(h.send(req, body).await.status(), StatusCode::ACCEPTED);
    let import = h.seen()[1].import.clone().unwrap();
    assert_eq!(import.file_name, "upload.csv");
    assert!(import.mapping.is_empty());
    assert!(!import.skip_existing);
}

#[tokio::test]
async fn bad_uploads_get_problem_json_naming_the_cause() {
    let h = Harness::start(4096).await;
    let post = |ct: &str| {
        h.request(Method::POST, "/v1/contact-imports")
            .header(header::CONTENT_TYPE, ct)
    };

    // Neither multipart nor CSV.
    let p = problem(
        h.send(post("application/json"), "{}").await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
    )
    .await;
    let detail = p["detail"].as_str().unwrap();
    assert!(
        detail.contains("multipart/form-data") && detail.contains("text/csv"),
        "{detail}"
    );
    let req = h.request(Method::POST, "/v1/contact-imports");
    problem(h.send(req, CSV).await, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;

    // Bad mapping JSON, as a query parameter and as a part.
    let req = h
        .request(Method::POST, "/v1/contact-imports?mapping=%7Boops")
        .header(header::CONTENT_TYPE, "text/csv");
    let p = problem(h.send(req, CSV).await, StatusCode::BAD_REQUEST).await;
    assert_eq!(p["errors"][0]["field"], "mapping");
    let body = multipart(
        "b",
        &[("file", Some("a.csv"), CSV), ("mapping", None, "[1]")],
    );
    let p = problem(
        h.send(post("multipart/form-data; boundary=b"), body).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(p["errors"][0]["field"], "mapping");

    // Missing file, unknown part, empty file, broken multipart.
    let body = multipart("b", &[("mapping", None, "{}")]);
    let p = problem(
        h.send(post("multipart/form-data; boundary=b"), body).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(p["errors"][0]["field"], "file");
    let body = multipart(
        "b",
        &[("file", Some("a.csv"), CSV), ("colour", None, "red")],
    );
    let p = problem(
        h.send(post("multipart/form-data; boundary=b"), body).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(p["errors"][0]["field"], "colour");
    let p = problem(
        h.send(post("text/csv"), "").await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(p["errors"][0]["field"], "file");
    problem(
        h.send(post("multipart/form-data; boundary=b"), "--b\r\ngarbage")
            .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    problem(
        h.send(post("multipart/form-data"), "x").await,
        StatusCode::BAD_REQUEST,
    )
    .await;

    // Over the import limit (4096 here): declared, or found while reading.
    let big = "x".repeat(5000);
    let declared = post("text/csv").header(header::CONTENT_LENGTH, "5000");
    let p = problem(
        h.send(declared, big.clone()).await,
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;
    assert!(p["detail"].as_str().unwrap().contains("4096"));
    problem(
        h.send(post("text/csv"), big.clone()).await,
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;
    let body = multipart("b", &[("file", Some("a.csv"), &big)]);
    problem(
        h.send(post("multipart/form-data; boundary=b"), body).await,
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;

    // Upstream errors keep their status.
    let req = h
        .request(
            Method::POST,
            "/v1/contact-imports?static_segment_id=missing",
        )
        .header(header::CONTENT_TYPE, "text/csv");
    problem(h.send(req, CSV).await, StatusCode::NOT_FOUND).await;

    // None of the refused requests reached the service except the last.
    let seen = h.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
}

#[tokio::test]
async fn uploads_need_authentication_and_accept_api_keys() {
    let h = Harness::start(1024 * 1024).await;
    let req = Request::builder()
        .method(Method::POST)
        .uri("/v1/contact-imports")
        .header(header::CONTENT_TYPE, "text/csv");
    let p = problem(h.send(req, CSV).await, StatusCode::UNAUTHORIZED).await;
    assert_eq!(p["code"], "unauthenticated");
    let req = Request::builder()
        .method(Method::GET)
        .uri("/v1/contacts:export")
        .header(header::AUTHORIZATION, "Bearer not-a-jwt");
    problem(h.send(req, Body::empty()).await, StatusCode::UNAUTHORIZED).await;
    assert!(h.seen().is_empty());

    // An API key is exchanged with identity; the upstream gets the resulting access token.
    let req = Request::builder()
        .method(Method::POST)
        .uri("/v1/contact-imports")
        .header(header::AUTHORIZATION, format!("Bearer {API_KEY}"))
        .header(header::CONTENT_TYPE, "text/csv");
    assert_eq!(h.send(req, CSV).await.status(), StatusCode::ACCEPTED);
    let seen = h.seen();
    assert_eq!(
        seen.last().unwrap().authorization.as_deref(),
        Some(format!("Bearer {}", h.api_key_token).as_str())
    );
}

#[tokio::test]
async fn uploads_larger_than_grpcs_default_message_size_go_through() {
    // tonic's default limit is 4 MiB per message; the import limit raises it.
    let h = Harness::start(8 * 1024 * 1024).await;
    let mut csv = String::from("email\n");
    while csv.len() < 6 * 1024 * 1024 {
        csv.push_str("someone.with.a.long.address@example.com\n");
    }
    let req = h
        .request(Method::POST, "/v1/contact-imports?file_name=big.csv")
        .header(header::CONTENT_TYPE, "text/csv");
    let resp = h.send(req, csv.clone()).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let job = json_of(resp).await;
    assert_eq!(job["file_bytes"], csv.len().to_string());
}

#[tokio::test]
async fn export_streams_the_file_with_download_headers() {
    let h = Harness::start(1024 * 1024).await;
    let resp = h
        .send(
            h.request(Method::GET, "/v1/contacts:export")
                .header("x-request-id", "req-export-1"),
            Body::empty(),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header_of(&resp, "content-type"), "text/csv; charset=utf-8");
    let disposition = header_of(&resp, "content-disposition").to_owned();
    assert!(
        disposition.starts_with("attachment; filename=\"contacts-20")
            && disposition.ends_with(".csv\""),
        "{disposition}"
    );
    assert_eq!(
        disposition.len(),
        "attachment; filename=\"contacts-2025-01-31.csv\"".len()
    );
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        body.as_ref(),
        b"email,first_name\na@example.com,Ann\nb@example.com,Bob\n"
    );
    let seen = h.seen();
    assert_eq!(seen[0].path, "ExportContacts");
    assert_eq!(seen[0].request_id.as_deref(), Some("req-export-1"));
    assert_eq!(
        seen[0].authorization.as_deref(),
        Some(format!("Bearer {}", h.token).as_str())
    );
    let export = seen[0].export.clone().unwrap();
    assert_eq!(
        (export.format.as_str(), export.segment_id.as_str()),
        ("csv", "")
    );

    let resp = h
        .send(
            h.request(
                Method::GET,
                "/v1/contacts:export?format=jsonl&segment_id=seg-9",
            ),
            Body::empty(),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header_of(&resp, "content-type"), "application/x-ndjson");
    assert!(header_of(&resp, "content-disposition").ends_with(".jsonl\""));
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.iter().filter(|&&b| b == b'\n').count(), 2);
    let export = h.seen()[1].export.clone().unwrap();
    assert_eq!(
        (export.format.as_str(), export.segment_id.as_str()),
        ("jsonl", "seg-9")
    );

    let resp = h
        .send(
            h.request(Method::GET, "/v1/contacts:export?segment_id=empty"),
            Body::empty(),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .is_empty()
    );
}

#[tokio::test]
async fn export_errors_before_the_first_chunk_are_problems_and_later_ones_abort() {
    let h = Harness::start(1024 * 1024).await;
    let get = |uri: &str| h.request(Method::GET, uri);
    let p = problem(
        h.send(get("/v1/contacts:export?segment_id=missing"), Body::empty())
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_eq!(p["code"], "not_found");
    problem(
        h.send(get("/v1/contacts:export?segment_id=denied"), Body::empty())
            .await,
        StatusCode::FORBIDDEN,
    )
    .await;
    let p = problem(
        h.send(get("/v1/contacts:export?format=xlsx"), Body::empty())
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(p["errors"][0]["field"], "format");

    let resp = h
        .send(get("/v1/contacts:export?segment_id=broken"), Body::empty())
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let mut received = Vec::new();
    let error = loop {
        match body.frame().await {
            Some(Ok(frame)) => received.extend_from_slice(frame.data_ref().unwrap()),
            Some(Err(e)) => break e,
            None => panic!("the body ended cleanly after an upstream failure"),
        }
    };
    assert_eq!(received, b"email\na@example.com\n");
    assert!(error.to_string().contains("database went away"), "{error}");
}

#[tokio::test]
async fn hand_written_routes_coexist_with_the_transcoded_ones() {
    let h = Harness::start(1024 * 1024).await;
    // Transcoded neighbours reach their own RPCs (the fake does not implement them: 404).
    for (method, uri, rpc) in [
        (Method::GET, "/v1/contact-imports", "ListImports"),
        (Method::GET, "/v1/contacts/c-1", "GetContact"),
        (Method::GET, "/v1/contact-imports/j-1", "GetImport"),
    ] {
        let resp = h.send(h.request(method, uri), Body::empty()).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(h.seen().last().unwrap().path, rpc, "{uri}");
    }
    // Other methods on the hand-written paths: 405 with every allowed method.
    let resp = h
        .send(
            h.request(Method::DELETE, "/v1/contact-imports"),
            Body::empty(),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(header_of(&resp, "allow"), "GET, POST");
    let resp = h
        .send(
            h.request(Method::POST, "/v1/contacts:export"),
            Body::empty(),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(header_of(&resp, "allow"), "GET");
}

#[tokio::test]
async fn openapi_documents_both_routes() {
    let h = Harness::start(1024 * 1024).await;
    let resp = h
        .send(Request::builder().uri("/openapi.json"), Body::empty())
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let doc = json_of(resp).await;
    let import = &doc["paths"]["/v1/contact-imports"]["post"];
    assert_eq!(import["operationId"], "SegmentationService_CreateImport");
    assert_eq!(import["x-permission"], "contacts.write");
    assert_eq!(import["security"], json!([{ "bearerAuth": [] }]));
    let content = &import["requestBody"]["content"];
    assert_eq!(
        content["multipart/form-data"]["schema"]["required"],
        json!(["file"])
    );
    assert!(content["text/csv"].is_object());
    let names: Vec<&str> = import["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["file_name", "mapping", "static_segment_id", "skip_existing"]
    );
    let accepted = &import["responses"]["202"];
    assert_eq!(
        accepted["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/ImportJob"
    );
    assert!(accepted["headers"]["Location"].is_object());
    for code in ["400", "401", "403", "413", "415", "422", "429", "503"] {
        assert!(import["responses"][code].is_object(), "{code}");
    }
    // The transcoded GET on the same path is still there.
    assert_eq!(
        doc["paths"]["/v1/contact-imports"]["get"]["operationId"],
        "SegmentationService_ListImports"
    );

    let export = &doc["paths"]["/v1/contacts:export"]["get"];
    assert_eq!(export["operationId"], "SegmentationService_ExportContacts");
    assert_eq!(export["x-permission"], "contacts.export");
    let ok = &export["responses"]["200"];
    assert!(ok["content"]["text/csv"].is_object());
    assert!(ok["content"]["application/x-ndjson"].is_object());
    assert!(ok["headers"]["Content-Disposition"].is_object());
    assert_eq!(
        export["responses"]["404"]["$ref"],
        "#/components/responses/NotFound"
    );
    assert!(doc.pointer("/components/schemas/ImportJob").is_some());
}
