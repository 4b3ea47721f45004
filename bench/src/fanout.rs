//! Campaign fan-out, in one run:
//!
//! 1. **Baseline: raw RabbitMQ.** A lapin loop with the durability the product uses: a durable
//!    queue, persistent messages (delivery mode 2), publisher confirms (publishes pipelined,
//!    confirms awaited in windows), one consumer with manual acks and a prefetch window. It
//!    moves one message per recipient (what a naive "one message per email" design costs) and,
//!    for reference, the same recipients packed 500 per message (the product's batch size),
//!    from the first publish to the last ack.
//! 2. **The product.** A campaign on the `sandbox` channel (rendered and recorded, nothing leaves
//!    the machine) targeting every contact of a generated audience is launched through the
//!    gateway; timed from the launch call until every delivery is recorded (the delivery job
//!    completes). The whole path runs: audience count and stream from segmentation, billing's
//!    quota call, the delivery job, the lease-based fan-out to the durable work queue, the
//!    consumer rendering each recipient's email with minijinja and inserting the delivery rows
//!    with counters and events.
//!
//! Messages/s of each and the ratio of the launch to the raw per-recipient loop are printed,
//! with the process's peak RSS (the mesh runs in this process). The audience lives in its own
//! database (`cos_bench_fanout_<n>`), generated once by the segmentation benchmark's generator.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use campaign_os::{Mesh, MeshListeners, Settings};
use cos_config::Source;
use cos_crypto::KeyRing;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::segmentation::{data, mib, reset_peak_rss, rss_kib, runtime, sign_in_as};

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// Recipients of the launch (every live contact of the generated audience).
    #[arg(long, default_value_t = 100_000)]
    recipients: u64,
    /// Shorthand for --recipients 1000000.
    #[arg(long)]
    full: bool,
    /// Drop the benchmark database and generate the audience again.
    #[arg(long)]
    regenerate: bool,
    /// Messages the raw loop moves (default: as many as recipients, at most 200,000).
    #[arg(long)]
    raw_messages: Option<u64>,
    /// Payload bytes of each raw message (about one recipient's share of a delivery batch).
    #[arg(long, default_value_t = 200)]
    raw_bytes: usize,
    /// PostgreSQL pool size of each service of the mesh.
    #[arg(long, default_value_t = 16)]
    db_connections: u32,
    /// Log filter of the mesh.
    #[arg(long, default_value = "warn")]
    log_filter: String,
    /// Extra settings for the mesh, KEY=VALUE as environment variables (COS_...).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

/// A fixed key ring: the database outlives a run. Benchmark data only.
const KEYRING: &str = "benchfan1:Y29zLWJlbmNoLWZhbm91dC1rZXktMzJieXRlcy0hISE=";
const TARGET_RATIO: f64 = 0.5;
const TARGET_1M_SECS: f64 = 60.0;
const BATCH: usize = 500;

fn settings(args: &Args, url: &str, amqp: &cos_testkit::TestAmqp) -> anyhow::Result<Settings> {
    let high = "1000000000";
    let mut vars: Vec<(String, String)> = vec![
        ("COS_ENV".into(), "test".into()),
        ("COS_DATABASE__URL".into(), url.to_owned()),
        (
            "COS_DATABASE__MAX_CONNECTIONS".into(),
            args.db_connections.to_string(),
        ),
        ("COS_AMQP__URL".into(), amqp.url.clone()),
        ("COS_AMQP__EXCHANGE".into(), amqp.exchange.clone()),
        ("COS_AMQP__DELIVERY_QUEUE".into(), amqp.queue("deliveries")),
        ("COS_REDIS__URL".into(), cos_testkit::redis_url()),
        (
            "COS_REDIS__KEY_PREFIX".into(),
            format!("cos:bench:{}:", cos_testkit::unique_suffix()),
        ),
        (
            "COS_GATEWAY__RATE_LIMIT__PER_IP_PER_MINUTE".into(),
            high.into(),
        ),
        (
            "COS_GATEWAY__RATE_LIMIT__PER_TENANT_PER_MINUTE".into(),
            high.into(),
        ),
        ("COS_AUTH__ACCESS_TTL_SECS".into(), "86400".into()),
        ("COS_TELEMETRY__LOG_FILTER".into(), args.log_filter.clone()),
        ("COS_CAMPAIGNS__RUNNER_INTERVAL_MS".into(), "100".into()),
    ];
    for kv in &args.set {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--set {kv}: expected KEY=VALUE"))?;
        vars.retain(|(name, _)| name != k);
        vars.push((k.to_owned(), v.to_owned()));
    }
    Settings::load(&Source::from_env_pairs(vars)).map_err(|e| anyhow::anyhow!("{e}"))
}

pub fn run(mut args: Args) -> anyhow::Result<()> {
    if args.full {
        args.recipients = 1_000_000;
    }
    if args.recipients == 0 {
        bail!("--recipients must be positive");
    }
    let ncpu = crate::nproc();
    let mesh_rt = runtime("cos-mesh", ncpu)?;
    let load_rt = runtime("cos-load", ncpu)?;
    let database = format!("cos_bench_fanout_{}", args.recipients);
    let url = load_rt.block_on(data::prepare(
        &cos_testkit::admin_url(),
        &database,
        args.regenerate,
    ))?;
    let amqp = cos_testkit::TestAmqp::new();
    let settings = settings(&args, &url, &amqp)?;
    let mut cfg = cos_telemetry::TelemetryConfig::new("cos-bench");
    cfg.log_filter = settings.common.telemetry.log_filter.clone();
    let _telemetry = cos_telemetry::init_with_writer(&cfg, std::io::stderr)?;

    // 1. The raw loop first, on a quiet machine (the mesh is not started yet).
    let raw_n = args
        .raw_messages
        .unwrap_or_else(|| args.recipients.min(200_000));
    let raw = load_rt.block_on(raw_loop(&amqp, raw_n, args.raw_bytes, 1))?;
    let raw_batched = load_rt.block_on(raw_loop(&amqp, raw_n, args.raw_bytes, BATCH))?;

    // 2. The product.
    let keyring = KeyRing::parse(KEYRING, "benchfan1")?;
    let mesh = mesh_rt.block_on(async {
        let listeners = MeshListeners::ephemeral().await?;
        Mesh::start(settings.clone(), keyring, listeners).await
    })?;
    let measured = load_rt.block_on(launch(&args, &url, &mesh, &settings));
    let stopped = mesh_rt.block_on(mesh.stop());
    let launch = measured?;
    stopped?;
    let _ = load_rt.block_on(delete_queue(
        &amqp.url,
        &settings.common.amqp.delivery_queue,
    ));

    let ratio = launch.per_sec / raw.per_sec;
    let report = json!({
        "benchmark": "fanout",
        "recipients": launch.recipients,
        "cpus": ncpu,
        "raw_loop": {
            "messages": raw_n,
            "payload_bytes": args.raw_bytes,
            "per_recipient": raw.json(),
            "batched_500": raw_batched.json(),
        },
        "launch": launch.json(),
        "ratio_to_raw_per_recipient": r3(ratio),
        "ratio_to_raw_batched": r3(launch.per_sec / raw_batched.per_sec),
        "targets": {
            "ratio_min": TARGET_RATIO,
            "ratio_met": ratio >= TARGET_RATIO,
            "one_million_within_secs": TARGET_1M_SECS,
            "one_million_met": (launch.recipients >= 1_000_000).then_some(launch.total_secs <= TARGET_1M_SECS),
        },
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

struct Raw {
    secs: f64,
    per_sec: f64,
}

impl Raw {
    fn json(&self) -> Value {
        json!({"secs": r3(self.secs), "recipients_per_sec": self.per_sec.round()})
    }
}

async fn delete_queue(url: &str, queue: &str) -> anyhow::Result<()> {
    let conn = Connection::connect(url, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    ch.queue_delete(queue.into(), QueueDeleteOptions::default())
        .await?;
    conn.close(200, "done".into()).await?;
    Ok(())
}

/// Publishes `recipients` recipients' worth of messages (`per_message` recipients in each) to a
/// fresh durable queue with confirms, while one consumer acks them; returns recipients/s.
async fn raw_loop(
    amqp: &cos_testkit::TestAmqp,
    recipients: u64,
    bytes: usize,
    per_message: usize,
) -> anyhow::Result<Raw> {
    let queue = amqp.queue(&format!("raw-{per_message}"));
    let messages = recipients.div_ceil(per_message as u64);
    let payload = vec![b'x'; bytes * per_message];
    let pub_conn = Connection::connect(&amqp.url, ConnectionProperties::default()).await?;
    let con_conn = Connection::connect(&amqp.url, ConnectionProperties::default()).await?;
    let publisher = pub_conn.create_channel().await?;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    publisher
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions::durable(),
            FieldTable::default(),
        )
        .await?;
    let consumer_ch = con_conn.create_channel().await?;
    consumer_ch
        .basic_qos(64, BasicQosOptions::default())
        .await?;
    let mut consumer = consumer_ch
        .basic_consume(
            queue.as_str().into(),
            "raw-bench".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let done = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let consume = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut n = 0u64;
            while n < messages {
                match consumer.next().await {
                    Some(Ok(d)) => {
                        d.ack(BasicAckOptions::default()).await?;
                        n += 1;
                    }
                    Some(Err(e)) => return Err(anyhow::Error::from(e)),
                    None => bail!("consumer closed"),
                }
            }
            done.store(true, Ordering::SeqCst);
            Ok::<_, anyhow::Error>(started.elapsed())
        })
    };
    // Publish in windows of 256 confirms in flight, as a careful producer would.
    let mut sent = 0u64;
    while sent < messages {
        let window = (messages - sent).min(256);
        let mut confirms = Vec::with_capacity(window as usize);
        for _ in 0..window {
            confirms.push(
                publisher
                    .basic_publish(
                        "".into(),
                        queue.as_str().into(),
                        BasicPublishOptions::default(),
                        &payload,
                        BasicProperties::default().with_delivery_mode(2),
                    )
                    .await?,
            );
        }
        for c in confirms {
            c.await?;
        }
        sent += window;
    }
    let elapsed = consume.await??;
    publisher
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await?;
    let _ = pub_conn.close(200, "done".into()).await;
    let _ = con_conn.close(200, "done".into()).await;
    let secs = elapsed.as_secs_f64();
    Ok(Raw {
        secs,
        per_sec: recipients as f64 / secs,
    })
}

struct Launch {
    recipients: i64,
    total_secs: f64,
    to_running_secs: f64,
    fan_out_secs: Option<f64>,
    per_sec: f64,
    rss_before_mib: f64,
    rss_peak_mib: f64,
    peak_measured: bool,
}

impl Launch {
    fn json(&self) -> Value {
        json!({
            "recipients": self.recipients,
            "secs_launch_call_to_last_delivery": r3(self.total_secs),
            "secs_launch_call": r3(self.to_running_secs),
            "secs_fan_out_done": self.fan_out_secs.map(r3),
            "recipients_per_sec": self.per_sec.round(),
            "rss_before_mib": self.rss_before_mib,
            "rss_peak_mib": self.rss_peak_mib,
            "rss_peak_is_this_run": self.peak_measured,
        })
    }
}

async fn launch(
    args: &Args,
    url: &str,
    mesh: &Mesh,
    _settings: &Settings,
) -> anyhow::Result<Launch> {
    let gateway = mesh.gateway_url();
    let http = reqwest::Client::builder()
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(600))
        .build()?;
    let (token, tenant) =
        sign_in_as(&http, &gateway, "fanout-bench@bench.test", "Fan-out Bench").await?;
    let owner = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(data::ACQUIRE_TIMEOUT)
        .connect(url)
        .await?;
    let audience = data::ensure(&owner, url, tenant, args.recipients).await?;
    data::clean_segments(&owner, tenant).await?;
    // Earlier runs' deliveries and campaigns go: every run starts from the same tables.
    sqlx::raw_sql(
        "TRUNCATE publishing.deliveries, publishing.delivery_jobs, publishing.job_batches,
                  publishing.parked_batches, publishing.outbox, campaigns.campaign_runs,
                  campaigns.outbox;
         DELETE FROM campaigns.campaigns;",
    )
    .execute(&owner)
    .await?;
    // Billing: the benchmark tenant is on the enterprise plan (no monthly message limit).
    let _ = http
        .get(format!("{gateway}/v1/billing/subscription"))
        .bearer_auth(&token)
        .send()
        .await?;
    sqlx::query("UPDATE billing.subscriptions SET plan_code = 'enterprise', comped = true WHERE tenant_id = $1")
        .bind(tenant)
        .execute(&owner)
        .await?;
    let post = |path: String, body: Value| {
        let http = http.clone();
        let token = token.clone();
        let gateway = gateway.clone();
        async move {
            let resp = http
                .post(format!("{gateway}{path}"))
                .bearer_auth(&token)
                .json(&body)
                .send()
                .await?;
            let status = resp.status();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            if !status.is_success() {
                bail!("POST {path}: HTTP {status}: {body}");
            }
            Ok::<_, anyhow::Error>(body)
        }
    };
    // Everyone: nobody carries this tag.
    let seg = post(
        "/v1/segments".into(),
        json!({"name": format!("Fan-out {}", Uuid::new_v4().simple()), "kind": "dynamic",
               "criteria": {"not": {"op": "has_tag", "value": "cos-bench-nobody"}}}),
    )
    .await?;
    let campaign = post(
        "/v1/campaigns".into(),
        json!({"name": "Fan-out bench", "channels": ["sandbox"],
               "target_segment_ids": [seg["id"]],
               "content": {"email": {
                   "subject": "Hi {{ contact.first_name | default(\"there\") }}",
                   "html_body": "<p>Hello {{ contact.first_name }}, your plan: {{ contact.attributes.plan }}</p>",
                   "text_body": "Hello {{ contact.first_name }}"}}}),
    )
    .await?;
    let id = campaign["id"].as_str().context("campaign id")?.to_owned();
    let campaign_id = Uuid::parse_str(&id)?;
    let (rss_before, _) = rss_kib();
    let peak_measured = reset_peak_rss();
    let started = Instant::now();
    post(format!("/v1/campaigns/{id}:launch"), json!({})).await?;
    let to_running = started.elapsed().as_secs_f64();
    let mut fan_out = None;
    let total = loop {
        let (status, fanned): (String, Option<bool>) = sqlx::query_as(
            "SELECT c.status, (SELECT r.status <> 'fanning_out' FROM campaigns.campaign_runs r WHERE r.id = c.current_run_id)
               FROM campaigns.campaigns c WHERE c.id = $1",
        )
        .bind(campaign_id)
        .fetch_one(&owner)
        .await?;
        if fan_out.is_none() && fanned == Some(true) {
            fan_out = Some(started.elapsed().as_secs_f64());
        }
        if status == "completed" {
            break started.elapsed().as_secs_f64();
        }
        if started.elapsed() > Duration::from_secs(1800) {
            bail!("the launch did not complete within 30 minutes");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (_, peak) = rss_kib();
    let sent: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM publishing.deliveries WHERE campaign_id = $1 AND status = 'sent'",
    )
    .bind(campaign_id)
    .fetch_one(&owner)
    .await?;
    anyhow::ensure!(
        sent == audience.live,
        "{sent} deliveries recorded for {} contacts",
        audience.live
    );
    owner.close().await;
    Ok(Launch {
        recipients: sent,
        total_secs: total,
        to_running_secs: to_running,
        fan_out_secs: fan_out,
        per_sec: sent as f64 / total,
        rss_before_mib: mib(rss_before),
        rss_peak_mib: mib(peak),
        peak_measured,
    })
}
