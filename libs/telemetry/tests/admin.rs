//! Admin server: /healthz, /readyz (passing, failing, timing out), /metrics, graceful shutdown.

use std::sync::Arc;
use std::time::Duration;

use cos_telemetry::{AdminServer, ReadinessCheck, install_metrics, readiness_check};
use futures::future::BoxFuture;
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_util::sync::CancellationToken;

struct DbCheck;

impl ReadinessCheck for DbCheck {
    fn name(&self) -> &str {
        "postgres"
    }
    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
}

struct Server {
    addr: std::net::SocketAddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start(server: AdminServer) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(server.serve(listener, shutdown.clone()));
    Server {
        addr,
        shutdown,
        task,
    }
}

impl Server {
    async fn stop(self) {
        self.shutdown.cancel();
        let result = tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("graceful shutdown in time")
            .expect("join");
        result.expect("serve result");
    }
}

/// Minimal HTTP/1.1 GET; returns (status, content-type, body).
async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read");
    let text = String::from_utf8(raw).expect("utf8");
    let (head, body) = text.split_once("\r\n\r\n").expect("http response");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let content_type = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_owned())
        })
        .unwrap_or_default();
    (status, content_type, body.to_owned())
}

#[tokio::test]
async fn healthz_and_ready_when_all_checks_pass() {
    let server = start(AdminServer::new(
        "svc-a",
        install_metrics(),
        vec![
            Arc::new(DbCheck),
            readiness_check("redis", || async { Ok(()) }),
        ],
    ))
    .await;

    let (status, ct, body) = get(server.addr, "/healthz").await;
    assert_eq!(status, 200);
    assert!(ct.starts_with("application/json"), "{ct}");
    let json: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(json["status"], "ok");
    assert_eq!(json["service"], "svc-a");

    let (status, _, body) = get(server.addr, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    let json: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(json["status"], "ready");
    let checks = json["checks"].as_array().expect("checks");
    assert_eq!(checks.len(), 2);
    assert_eq!(checks[0]["name"], "postgres");
    assert_eq!(checks[0]["status"], "ok");
    assert_eq!(checks[1]["name"], "redis");

    let (status, _, _) = get(server.addr, "/nope").await;
    assert_eq!(status, 404);
    server.stop().await;
}

#[tokio::test]
async fn readyz_names_failing_and_timed_out_checks() {
    let server = start(
        AdminServer::new(
            "svc-b",
            install_metrics(),
            vec![
                Arc::new(DbCheck),
                readiness_check("rabbitmq", || async {
                    Err("connection refused to amqp://cos:hunter2@mq:5672".to_owned())
                }),
                readiness_check("slow", || async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    Ok(())
                }),
            ],
        )
        .with_check_timeout(Duration::from_millis(200)),
    )
    .await;

    let started = std::time::Instant::now();
    let (status, _, body) = get(server.addr, "/readyz").await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "checks run with a timeout"
    );
    assert_eq!(status, 503, "{body}");
    assert!(
        !body.contains("hunter2"),
        "check errors are redacted: {body}"
    );
    let json: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(json["status"], "not_ready");
    assert_eq!(json["failing"], serde_json::json!(["rabbitmq", "slow"]));
    let checks = json["checks"].as_array().expect("checks");
    let by_name = |n: &str| checks.iter().find(|c| c["name"] == n).expect(n).clone();
    assert_eq!(by_name("postgres")["status"], "ok");
    assert!(by_name("postgres").get("error").is_none());
    assert_eq!(by_name("rabbitmq")["status"], "failing");
    let err = by_name("rabbitmq")["error"]
        .as_str()
        .expect("error")
        .to_owned();
    assert!(err.contains("connection refused"), "{err}");
    assert!(
        by_name("slow")["error"]
            .as_str()
            .expect("error")
            .contains("timed out")
    );
    server.stop().await;
}

#[tokio::test]
async fn default_check_timeout_is_two_seconds() {
    assert_eq!(cos_telemetry::DEFAULT_CHECK_TIMEOUT, Duration::from_secs(2));
    let server = start(AdminServer::new(
        "svc-c",
        install_metrics(),
        vec![readiness_check("hangs", futures::future::pending)],
    ))
    .await;
    let started = std::time::Instant::now();
    let (status, _, body) = get(server.addr, "/readyz").await;
    let took = started.elapsed();
    assert_eq!(status, 503, "{body}");
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(4),
        "{took:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn metrics_endpoint_renders_counters_and_latency_buckets() {
    let handle = install_metrics();
    // Installed once: later calls hand out the same recorder.
    let again = install_metrics();
    metrics::counter!("cos_admin_test_events_total", "kind" => "x").increment(3);
    metrics::histogram!("cos_admin_test_duration_seconds").record(0.003);
    assert!(again.render().contains("cos_admin_test_events_total"));

    let server = start(AdminServer::new("svc-d", handle, vec![])).await;
    let (status, ct, body) = get(server.addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(ct.starts_with("text/plain"), "{ct}");
    assert!(
        body.contains(r#"cos_admin_test_events_total{kind="x"} 3"#),
        "{body}"
    );
    assert!(
        body.contains(r#"cos_admin_test_duration_seconds_bucket{le="0.005"} 1"#),
        "latency histograms use buckets: {body}"
    );
    assert!(
        body.contains(r#"cos_admin_test_duration_seconds_bucket{le="0.001"} 0"#),
        "{body}"
    );

    // With no checks the process is ready.
    let (status, _, _) = get(server.addr, "/readyz").await;
    assert_eq!(status, 200);
    server.stop().await;
}
