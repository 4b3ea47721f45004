//! gRPC server layer against a real tonic server (grpc.health.v1): span with request id and
//! remote parent, status codes from trailers and trailers-only responses, RED metrics.

use std::time::Duration;

use cos_telemetry::{
    CapturedLogs, GrpcServerTelemetryLayer, TelemetryConfig, build_dispatch, install_metrics,
    traced_request,
};
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

#[tokio::test(flavor = "current_thread")]
async fn grpc_layer_traces_and_counts_requests() {
    let metrics = install_metrics();
    let logs = CapturedLogs::new();
    let mut cfg = TelemetryConfig::new("grpc-test");
    cfg.log_filter = "debug,h2=info,hyper=info,tower=info,tonic=info".to_owned();
    let (dispatch, _guard) = build_dispatch(&cfg, logs.clone()).expect("build");
    // current_thread runtime: the server's tasks run on this thread and see this dispatcher.
    let _default = tracing::dispatcher::set_default(&dispatch);

    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("cos.test.Svc", ServingStatus::Serving)
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    let server = tokio::spawn({
        let shutdown = shutdown.clone();
        tonic::transport::Server::builder()
            .layer(GrpcServerTelemetryLayer::new("grpc-test"))
            .add_service(health)
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                shutdown.cancelled_owned(),
            )
    });

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut client = HealthClient::new(channel);

    // A traced call from inside a client span, with an explicit request id.
    let client_span = tracing::info_span!("client.op", request_id = "client-req-1");
    let client_trace_id = {
        let _e = client_span.enter();
        let tp = cos_telemetry::current_traceparent().expect("traceparent");
        tp.split('-').nth(1).expect("trace id").to_owned()
    };
    let request = {
        let _e = client_span.enter();
        traced_request(HealthCheckRequest {
            service: "cos.test.Svc".to_owned(),
        })
    };
    let response = client.check(request).await.expect("check ok");
    assert_eq!(
        response
            .metadata()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok()),
        Some("client-req-1"),
        "request id echoed"
    );

    // NOT_FOUND comes back as a trailers-only response.
    let err = client
        .check(HealthCheckRequest {
            service: "missing".to_owned(),
        })
        .await
        .expect_err("unknown service");
    assert_eq!(err.code(), tonic::Code::NotFound);
    let generated_id = err
        .metadata()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("generated request id")
        .to_owned();
    assert_eq!(generated_id.len(), 36, "uuid: {generated_id}");

    // Metrics are recorded when the response body completes; give the server a moment.
    let method = "grpc.health.v1.Health/Check";
    let ok_line = format!(
        r#"cos_grpc_server_requests_total{{service="grpc-test",method="{method}",code="OK"}} 1"#
    );
    let not_found_line = format!(
        r#"cos_grpc_server_requests_total{{service="grpc-test",method="{method}",code="NOT_FOUND"}} 1"#
    );
    let mut rendered = String::new();
    for _ in 0..50 {
        rendered = metrics.render();
        if rendered.contains(&ok_line) && rendered.contains(&not_found_line) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(rendered.contains(&ok_line), "{rendered}");
    assert!(rendered.contains(&not_found_line), "{rendered}");
    assert!(
        rendered.contains(&format!(
            r#"cos_grpc_server_duration_seconds_count{{service="grpc-test",method="{method}"}} 2"#
        )),
        "{rendered}"
    );

    // The completion log lines carry the request id and, for the traced call, the client's trace.
    let lines = logs.json_lines();
    let completed: Vec<_> = lines
        .iter()
        .filter(|l| l["message"] == "grpc request completed")
        .collect();
    assert_eq!(completed.len(), 2, "{}", logs.contents());
    let first = completed
        .iter()
        .find(|l| l["request_id"] == "client-req-1")
        .expect("line for the traced call");
    assert_eq!(first["trace_id"], client_trace_id.as_str());
    assert_eq!(first["grpc.code"], "OK");
    assert_eq!(first["span"], "grpc.request");
    assert_eq!(first["rpc.service"], "grpc.health.v1.Health");
    assert_eq!(first["rpc.method"], "Check");
    assert_eq!(first["level"], "DEBUG", "health checks log at debug");
    let second = completed
        .iter()
        .find(|l| l["request_id"] == generated_id.as_str())
        .expect("line for the untraced call");
    assert_eq!(second["grpc.code"], "NOT_FOUND");
    assert_ne!(
        second["trace_id"],
        client_trace_id.as_str(),
        "untraced call starts a new trace"
    );

    shutdown.cancel();
    drop(client);
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("server stops")
        .expect("join")
        .expect("serve");
}
