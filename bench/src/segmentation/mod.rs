//! Segmentation at 1,000,000 contacts, in one run:
//!
//! 1. **Counts.** `SELECT count(*) FROM segmentation.contacts` is the baseline. Real criteria
//!    trees are compiled with the service's own compiler (`cos_segmentation::domain::criteria`)
//!    and counted with the service's query shape, `SELECT count(*) FROM segmentation.contacts c
//!    WHERE c.tenant_id = $1 AND c.deleted_at IS NULL AND (<compiled>)`. Every count (the
//!    baseline too) runs in a tenant transaction as the app role (`cos_db::Db::tenant_tx`), so
//!    row-level security is in play exactly as in the service. Counts are interleaved, repeated,
//!    and reported as median / p95 and the ratio of medians to the baseline's.
//! 2. **First page.** A dynamic segment over ~44 % of the contacts is created through the real
//!    service (gRPC `CreateSegment`); then `ListSegmentMembers` (page_size 50) is timed
//!    repeatedly, over gRPC and through the gateway.
//! 3. **StreamMembers.** The whole segment is consumed over gRPC (server streaming), members/s,
//!    with this process's RSS before, during (peak) and after. The mesh runs in this process, so
//!    the RSS is the services' and the client's together.
//!
//! The data lives in its own database (default `cos_bench_segmentation`), kept between runs;
//! `--regenerate` drops and rebuilds it.

pub(crate) mod data;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use campaign_os::{Mesh, MeshListeners, Settings};
use chrono::Utc;
use cos_config::Source;
use cos_crypto::KeyRing;
use cos_proto::segmentation::v1 as pb;
use cos_proto::segmentation::v1::segmentation_service_client::SegmentationServiceClient;
use cos_segmentation::domain::attributes::{AttributeCatalog, AttributeType};
use cos_segmentation::domain::criteria::{self, Limits, SegmentRef};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::runtime::Runtime;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;
use uuid::Uuid;

use crate::cpu;

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// Live contacts in the generated audience (0.5 % more are generated soft-deleted).
    #[arg(long, default_value_t = 1_000_000)]
    contacts: u64,
    /// Drop the benchmark database and generate everything again.
    #[arg(long)]
    regenerate: bool,
    /// The benchmark's own database (created, migrated and kept between runs).
    #[arg(long, default_value = "cos_bench_segmentation")]
    database: String,
    /// Timed repetitions of each count (interleaved), after `--warmup` untimed rounds.
    #[arg(long, default_value_t = 20)]
    repeats: usize,
    /// Untimed rounds of every count before the timed ones.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Timed ListSegmentMembers first-page calls on each path (gRPC, gateway).
    #[arg(long, default_value_t = 200)]
    page_repeats: usize,
    /// StreamMembers batch size (0: the server's default, 1000; at most 5000).
    #[arg(long, default_value_t = 0)]
    stream_batch: i32,
    /// Times the whole segment is streamed (the first pass follows its creation).
    #[arg(long, default_value_t = 2)]
    stream_passes: usize,
    /// PostgreSQL pool size of each service of the mesh (COS_DATABASE__MAX_CONNECTIONS).
    #[arg(long, default_value_t = 20)]
    db_connections: u32,
    /// Log filter of the mesh.
    #[arg(long, default_value = "warn")]
    log_filter: String,
    /// Keep the benchmark segment at the end (default: delete it through the API).
    #[arg(long)]
    keep_segment: bool,
    /// Extra settings for the mesh, KEY=VALUE as environment variables (COS_...).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

const EMAIL: &str = "segmentation-bench@bench.test";
const PASSWORD: &str = "correct horse battery staple";
/// A fixed key ring: the database (and identity's encrypted signing keys in it) outlive a run.
/// Benchmark data only.
const KEYRING: &str = "benchseg1:Y29zLWJlbmNoLXNlZ21lbnRhdGlvbi1rZXktMzJieXQ=";

const TARGET_A_RATIO: f64 = 1.5;
const TARGET_B_RATIO: f64 = 0.1;
const TARGET_P95_MS: f64 = 300.0;
const TARGET_STREAM: f64 = 200_000.0;

pub(crate) fn runtime(name: &'static str, threads: usize) -> anyhow::Result<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .thread_name(name)
        .enable_all()
        .build()
        .with_context(|| format!("starting runtime {name}"))
}

fn settings(args: &Args, url: &str) -> anyhow::Result<Settings> {
    let amqp = cos_testkit::TestAmqp::new();
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
        (
            "COS_GATEWAY__RATE_LIMIT__AUTH_PER_IP_PER_MINUTE".into(),
            high.into(),
        ),
        ("COS_AUTH__ACCESS_TTL_SECS".into(), "86400".into()),
        ("COS_TELEMETRY__LOG_FILTER".into(), args.log_filter.clone()),
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

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.repeats == 0 || args.page_repeats == 0 || args.contacts == 0 {
        bail!("--contacts, --repeats and --page-repeats must be positive");
    }
    if !(0..=5000).contains(&args.stream_batch) {
        bail!("--stream-batch must be between 0 and 5000");
    }
    let ncpu = crate::nproc();
    let mesh_rt = runtime("cos-mesh", ncpu)?;
    let load_rt = runtime("cos-load", ncpu)?;
    let url = load_rt.block_on(data::prepare(
        &cos_testkit::admin_url(),
        &args.database,
        args.regenerate,
    ))?;
    let settings = settings(&args, &url)?;
    let mut cfg = cos_telemetry::TelemetryConfig::new("cos-bench");
    cfg.log_filter = settings.common.telemetry.log_filter.clone();
    let _telemetry = cos_telemetry::init_with_writer(&cfg, std::io::stderr)?;
    let keyring = KeyRing::parse(KEYRING, "benchseg1")?;
    let mesh = mesh_rt.block_on(async {
        let listeners = MeshListeners::ephemeral().await?;
        Mesh::start(settings.clone(), keyring, listeners).await
    })?;
    let measured = load_rt.block_on(measure(&args, &url, &mesh));
    let stopped = mesh_rt.block_on(mesh.stop());
    measured.and(stopped)
}

/// Signs in as the benchmark user (registering it the first time); returns (token, tenant).
async fn sign_in(http: &reqwest::Client, gateway: &str) -> anyhow::Result<(String, Uuid)> {
    sign_in_as(http, gateway, EMAIL, "Segmentation Bench").await
}

/// Signs in as `email` (registering it, with a workspace called `name`, the first time);
/// returns (token, tenant).
pub(crate) async fn sign_in_as(
    http: &reqwest::Client,
    gateway: &str,
    email: &str,
    name: &str,
) -> anyhow::Result<(String, Uuid)> {
    let resp = http
        .post(format!("{gateway}/v1/auth/login"))
        .json(&json!({"email": email, "password": PASSWORD}))
        .send()
        .await?;
    let (status, mut body): (_, Value) = (resp.status(), resp.json().await?);
    if status != reqwest::StatusCode::OK {
        let resp = http
            .post(format!("{gateway}/v1/auth/register"))
            .json(&json!({
                "email": email,
                "password": PASSWORD,
                "display_name": name,
                "tenant_name": name,
            }))
            .send()
            .await?;
        let status = resp.status();
        body = resp.json().await?;
        if status != reqwest::StatusCode::CREATED {
            bail!("register: HTTP {status}: {body}");
        }
    }
    let token = body["tokens"]["access_token"]
        .as_str()
        .context("no access token")?
        .to_owned();
    let tenant = body["tenant"]["id"]
        .as_str()
        .and_then(|s| Uuid::parse_str(s).ok())
        .context("no tenant id")?;
    Ok((token, tenant))
}

fn to_prost(v: &Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(xs) => Kind::ListValue(prost_types::ListValue {
            values: xs.iter().map(to_prost).collect(),
        }),
        Value::Object(m) => Kind::StructValue(prost_types::Struct {
            fields: m.iter().map(|(k, v)| (k.clone(), to_prost(v))).collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}

// ---- statistics -------------------------------------------------------------------------------

#[derive(Debug, Clone, Default)]
struct Timings(Vec<f64>);

impl Timings {
    /// Nearest-rank percentile, in the unit recorded (ms).
    fn pct(&self, p: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
        v[rank.min(v.len()) - 1]
    }
    fn median(&self) -> f64 {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        if n == 0 {
            f64::NAN
        } else if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        }
    }
    fn min(&self) -> f64 {
        self.0.iter().copied().fold(f64::INFINITY, f64::min)
    }
    fn max(&self) -> f64 {
        self.0.iter().copied().fold(f64::NEG_INFINITY, f64::max)
    }
    fn json(&self) -> Value {
        json!({
            "n": self.0.len(),
            "min_ms": r3(self.min()),
            "median_ms": r3(self.median()),
            "p95_ms": r3(self.pct(95.0)),
            "max_ms": r3(self.max()),
        })
    }
}

fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

// ---- memory -----------------------------------------------------------------------------------

/// (VmRSS, VmHWM) of this process in KiB.
pub(crate) fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Resets VmHWM to the current RSS (Linux: `echo 5 > /proc/self/clear_refs`).
pub(crate) fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

pub(crate) fn mib(kib: u64) -> f64 {
    (kib as f64 / 1024.0 * 10.0).round() / 10.0
}

// ---- counts -----------------------------------------------------------------------------------

/// One count query, as run in a tenant transaction.
struct CountQuery {
    name: &'static str,
    label: String,
    sql: String,
    params: Vec<criteria::SqlParam>,
    /// Compared with the targets (false: extra rows, experiments).
    headline: bool,
    /// Run in the transaction before the count (planner settings of a reference row).
    setup: Option<&'static str>,
}

fn catalog() -> AttributeCatalog {
    data::ATTRIBUTES
        .iter()
        .filter_map(|(k, _, t)| AttributeType::parse(t).map(|t| ((*k).to_owned(), t)))
        .collect()
}

/// Parses and compiles criteria with the service's compiler; parameters from $2 ($1 = tenant).
fn compile(json: &Value) -> anyhow::Result<(String, Vec<criteria::SqlParam>)> {
    let parsed = criteria::parse(json, &catalog(), &Limits::default())
        .map_err(|e| anyhow::anyhow!("criteria {json}: {e:?}"))?;
    let compiled = criteria::compile(&parsed, &HashMap::<Uuid, SegmentRef>::new(), Utc::now(), 2)
        .map_err(|e| anyhow::anyhow!("compile {json}: {e:?}"))?;
    Ok((compiled.sql, compiled.params))
}

/// The service's count statement (`store::segments::preview`) over `from`.
fn count_sql(from: &str, expr: &str) -> String {
    format!(
        "SELECT count(*) FROM {from} c WHERE c.tenant_id = $1 AND c.deleted_at IS NULL AND ({expr})"
    )
}

fn criteria_a() -> Value {
    json!({"all": [
        {"field": "attributes.score", "op": "gte", "value": 500},
        {"field": "attributes.plan", "op": "in", "value": ["pro", "enterprise"]},
        {"not": {"field": "attributes.country", "op": "eq", "value": "DE"}}
    ]})
}

fn criteria_b() -> Value {
    json!({"op": "has_tag", "value": "beta-tester"})
}

fn criteria_b2() -> Value {
    json!({"field": "attributes.country", "op": "eq", "value": "JP"})
}

/// The segment whose members are paged and streamed: active email subscribers (~44 %).
fn criteria_segment() -> Value {
    json!({"all": [
        {"field": "email", "op": "consent", "value": "subscribed"},
        {"field": "last_activity_at", "op": "within_last", "value": {"amount": 12, "unit": "months"}}
    ]})
}

fn count_queries() -> anyhow::Result<Vec<CountQuery>> {
    let mut out = vec![CountQuery {
        name: "baseline",
        label: "SELECT count(*) FROM segmentation.contacts".into(),
        sql: "SELECT count(*) FROM segmentation.contacts".into(),
        params: vec![],
        headline: true,
        setup: None,
    }];
    for (name, label, json, headline) in [
        (
            "a",
            "(a) unindexed: score gte 500 AND plan in [pro, enterprise] AND NOT country eq DE",
            criteria_a(),
            true,
        ),
        (
            "b",
            "(b) selective, GIN-indexed: has_tag beta-tester (0.5 %)",
            criteria_b(),
            true,
        ),
        (
            "b2",
            "(b2) attribute equality, GIN jsonb_path_ops: country eq JP (3 %)",
            criteria_b2(),
            false,
        ),
    ] {
        let (expr, params) = compile(&json)?;
        out.push(CountQuery {
            name,
            label: label.into(),
            sql: count_sql("segmentation.contacts_of_tenant", &expr),
            params,
            headline,
            setup: None,
        });
    }
    for (name, label, json) in [
        (
            "a_table",
            "(a) read through the RLS table, as before the view (reference)",
            criteria_a(),
        ),
        (
            "b_table",
            "(b) read through the RLS table, as before the view (reference)",
            criteria_b(),
        ),
        (
            "b2_table",
            "(b2) read through the RLS table, as before the view (reference)",
            criteria_b2(),
        ),
    ] {
        let (expr, params) = compile(&json)?;
        out.push(CountQuery {
            name,
            label: label.into(),
            sql: count_sql("segmentation.contacts", &expr),
            params,
            headline: false,
            setup: None,
        });
    }
    // References: the baseline kept to a sequential scan (the floor of anything that reads
    // every row), and (a) written by hand with cheaper but equivalent expressions (jsonpath
    // for the number comparison, containment for the string list), to size a compiler change.
    out.push(CountQuery {
        name: "seq",
        label: "SELECT count(*) FROM segmentation.contacts, planner kept to a sequential scan (reference)".into(),
        // A text of its own: a prepared statement keeps the plan it was first planned with
        // (sqlx caches statements by text), so the same text would leak this plan into the
        // baseline or the other way round.
        sql: "SELECT count(*) /* sequential-scan reference */ FROM segmentation.contacts".into(),
        params: vec![],
        headline: false,
        setup: Some(
            "SET LOCAL enable_indexonlyscan = off; SET LOCAL enable_indexscan = off; SET LOCAL enable_bitmapscan = off",
        ),
    });
    out.push(CountQuery {
        name: "a_alt",
        label: "(a) hand-written equivalent: score as strict jsonpath, plan as OR of @> (experiment)".into(),
        sql: count_sql(
            "segmentation.contacts_of_tenant",
            "c.attributes @? $2::jsonpath AND (c.attributes @> $3::jsonb OR c.attributes @> $4::jsonb) \
             AND (NOT (c.attributes @> $5::jsonb))",
        ),
        params: vec![
            criteria::SqlParam::Text("strict $.\"score\" ? (@ >= 500)".into()),
            criteria::SqlParam::Json(json!({"plan": "pro"})),
            criteria::SqlParam::Json(json!({"plan": "enterprise"})),
            criteria::SqlParam::Json(json!({"country": "DE"})),
        ],
        headline: false,
        setup: None,
    });
    Ok(out)
}

/// Runs one count in a tenant transaction (BEGIN, set role + tenant, count, COMMIT), as the
/// service does; returns (count, elapsed for the whole transaction).
async fn timed_count(
    db: &cos_db::Db,
    tenant: Uuid,
    q: &CountQuery,
) -> anyhow::Result<(i64, Duration)> {
    let started = Instant::now();
    let mut tx = db.tenant_tx(tenant).await?;
    if let Some(setup) = q.setup {
        sqlx::raw_sql(setup).execute(&mut *tx).await?;
    }
    // Timed from here for reference rows with a setup, from BEGIN for the others.
    let started = if q.setup.is_some() {
        Instant::now()
    } else {
        started
    };
    let query = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(q.sql.clone()));
    let query = if q.params.is_empty() && !q.sql.contains("$1") {
        query
    } else {
        criteria::bind_params(query.bind(tenant), &q.params)
    };
    let n = query.fetch_one(&mut *tx).await?;
    tx.commit().await?;
    Ok((n, started.elapsed()))
}

/// EXPLAIN (ANALYZE, BUFFERS) of one count, in a tenant transaction: plan nodes, indexes used,
/// execution and JIT time.
async fn explain(db: &cos_db::Db, tenant: Uuid, q: &CountQuery) -> anyhow::Result<Value> {
    let mut tx = db.tenant_tx(tenant).await?;
    if let Some(setup) = q.setup {
        sqlx::raw_sql(setup).execute(&mut *tx).await?;
    }
    let sql = format!("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {}", q.sql);
    let query = sqlx::query_scalar::<_, sqlx::types::Json<Value>>(sqlx::AssertSqlSafe(sql));
    let query = if q.params.is_empty() && !q.sql.contains("$1") {
        query
    } else {
        criteria::bind_params(query.bind(tenant), &q.params)
    };
    let plan = query.fetch_one(&mut *tx).await?.0;
    tx.rollback().await?;
    let top = &plan[0];
    let mut nodes = Vec::new();
    let mut indexes = Vec::new();
    fn walk(n: &Value, nodes: &mut Vec<String>, indexes: &mut Vec<String>) {
        if let Some(t) = n["Node Type"].as_str() {
            let workers = n["Workers Planned"].as_i64();
            nodes.push(match workers {
                Some(w) => format!("{t} ({w} workers)"),
                None => t.to_owned(),
            });
        }
        if let Some(i) = n["Index Name"].as_str() {
            indexes.push(i.to_owned());
        }
        if let Some(children) = n["Plans"].as_array() {
            for c in children {
                walk(c, nodes, indexes);
            }
        }
    }
    walk(&top["Plan"], &mut nodes, &mut indexes);
    Ok(json!({
        "nodes": nodes,
        "indexes": indexes,
        "execution_ms": top["Execution Time"],
        "planning_ms": top["Planning Time"],
        "jit_ms": top["JIT"]["Timing"]["Total"],
        "shared_hit": top["Plan"]["Shared Hit Blocks"],
        "shared_read": top["Plan"]["Shared Read Blocks"],
    }))
}

struct CountResult {
    count: i64,
    timings: Timings,
    plan: Value,
}

async fn run_counts(
    db: &cos_db::Db,
    tenant: Uuid,
    queries: &[CountQuery],
    args: &Args,
) -> anyhow::Result<Vec<CountResult>> {
    let mut results: Vec<CountResult> = queries
        .iter()
        .map(|_| CountResult {
            count: -1,
            timings: Timings::default(),
            plan: Value::Null,
        })
        .collect();
    for round in 0..args.warmup + args.repeats {
        // Rotate the order each round so no query always follows the same one.
        for k in 0..queries.len() {
            let i = (k + round) % queries.len();
            let (n, took) = timed_count(db, tenant, &queries[i])
                .await
                .with_context(|| format!("count {}", queries[i].name))?;
            let r = &mut results[i];
            if r.count >= 0 && r.count != n {
                bail!(
                    "count {} changed between runs: {} then {n}",
                    queries[i].name,
                    r.count
                );
            }
            r.count = n;
            if round >= args.warmup {
                r.timings.0.push(ms(took));
            }
        }
    }
    for (q, r) in queries.iter().zip(results.iter_mut()) {
        r.plan = explain(db, tenant, q)
            .await
            .unwrap_or_else(|e| json!({"error": format!("{e:#}")}));
    }
    Ok(results)
}

// ---- segment: create, first page, stream ------------------------------------------------------

fn grpc_request<T>(msg: T, auth: &MetadataValue<Ascii>) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut().insert("authorization", auth.clone());
    req.set_timeout(Duration::from_secs(600));
    req
}

struct StreamPass {
    members: u64,
    batches: u64,
    bytes: u64,
    secs: f64,
    first_batch_ms: f64,
    rss_before_kib: u64,
    rss_peak_kib: u64,
    rss_after_kib: u64,
    peak_is_hwm: bool,
    cpu: cpu::Usage,
    /// segment_members index entries PostgreSQL read during the pass.
    index_reads: i64,
    /// How attributes were sent: "struct", "json" or "none" (`omit_attributes`).
    attributes: &'static str,
}

impl StreamPass {
    fn rate(&self) -> f64 {
        self.members as f64 / self.secs
    }
}

/// Index entries PostgreSQL has read from segment_members' indexes so far (cumulative
/// statistics; flushed by backends about once a second).
async fn member_index_reads(owner: &PgPool) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT coalesce(sum(idx_tup_read), 0)::int8 FROM pg_stat_user_indexes
         WHERE schemaname = 'segmentation' AND relname = 'segment_members'",
    )
    .fetch_one(owner)
    .await?)
}

async fn stream_pass(
    owner: &PgPool,
    channel: &Channel,
    auth: &MetadataValue<Ascii>,
    segment: &str,
    batch: i32,
    expected: i64,
    attributes: &'static str,
) -> anyhow::Result<StreamPass> {
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let reads_before = member_index_reads(owner).await?;
    let mut client =
        SegmentationServiceClient::new(channel.clone()).max_decoding_message_size(64 * 1024 * 1024);
    let (rss_before, _) = rss_kib();
    let peak_is_hwm = reset_peak_rss();
    // A sampler as well, in case clear_refs is not available.
    let stop = Arc::new(AtomicBool::new(false));
    let sampled = Arc::new(AtomicU64::new(rss_before));
    let sampler = {
        let (stop, sampled) = (stop.clone(), sampled.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                sampled.fetch_max(rss_kib().0, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let cpu_start = cpu::sample();
    let started = Instant::now();
    let mut stream = client
        .stream_members(grpc_request(
            pb::StreamMembersRequest {
                segment_id: segment.to_owned(),
                batch_size: batch,
                omit_attributes: attributes == "none",
                attributes_as_json: attributes == "json",
                ..Default::default()
            },
            auth,
        ))
        .await?
        .into_inner();
    let (mut members, mut batches, mut bytes) = (0u64, 0u64, 0u64);
    let mut first_batch_ms = f64::NAN;
    let mut last: Option<Uuid> = None;
    while let Some(b) = stream.message().await? {
        if batches == 0 {
            first_batch_ms = ms(started.elapsed());
        }
        batches += 1;
        bytes += prost::Message::encoded_len(&b) as u64;
        for m in &b.members {
            let id = Uuid::parse_str(&m.contact_id)?;
            if last.is_some_and(|l| l >= id) {
                bail!("StreamMembers: ids out of order at {id}");
            }
            last = Some(id);
        }
        members += b.members.len() as u64;
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu = cpu::sample().usage_since(&cpu_start);
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let (rss_after, hwm) = rss_kib();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let index_reads = member_index_reads(owner).await? - reads_before;
    if members as i64 != expected {
        bail!("StreamMembers delivered {members} members; the segment has {expected}");
    }
    Ok(StreamPass {
        members,
        batches,
        bytes,
        secs,
        first_batch_ms,
        rss_before_kib: rss_before,
        rss_peak_kib: if peak_is_hwm {
            hwm.max(sampled.load(Ordering::Relaxed))
        } else {
            sampled.load(Ordering::Relaxed)
        },
        rss_after_kib: rss_after,
        peak_is_hwm,
        cpu,
        index_reads,
        attributes,
    })
}

async fn first_pages_grpc(
    channel: &Channel,
    auth: &MetadataValue<Ascii>,
    segment: &str,
    repeats: usize,
) -> anyhow::Result<(f64, Timings)> {
    let mut client = SegmentationServiceClient::new(channel.clone());
    let mut first = f64::NAN;
    let mut t = Timings::default();
    for i in 0..=repeats {
        let started = Instant::now();
        let page = client
            .list_segment_members(grpc_request(
                pb::ListSegmentMembersRequest {
                    segment_id: segment.to_owned(),
                    page_size: 50,
                    page_token: String::new(),
                },
                auth,
            ))
            .await?
            .into_inner();
        let took = ms(started.elapsed());
        if page.members.len() != 50 || page.next_page_token.is_empty() {
            bail!(
                "ListSegmentMembers returned {} members (next token {:?})",
                page.members.len(),
                page.next_page_token
            );
        }
        if i == 0 {
            first = took;
        } else {
            t.0.push(took);
        }
    }
    Ok((first, t))
}

async fn first_pages_gateway(
    http: &reqwest::Client,
    gateway: &str,
    token: &str,
    segment: &str,
    repeats: usize,
) -> anyhow::Result<Timings> {
    let url = format!("{gateway}/v1/segments/{segment}/members?page_size=50");
    let mut t = Timings::default();
    for i in 0..=repeats {
        let started = Instant::now();
        let resp = http.get(&url).bearer_auth(token).send().await?;
        let status = resp.status();
        let body: Value = resp.json().await?;
        let took = ms(started.elapsed());
        let n = body["members"].as_array().map_or(0, Vec::len);
        if status != reqwest::StatusCode::OK || n != 50 {
            bail!("GET /v1/segments/../members: HTTP {status}, {n} members: {body}");
        }
        if i > 0 {
            t.0.push(took);
        }
    }
    Ok(t)
}

/// A later page: `ListSegmentMembers` with a page token deep into the segment.
async fn deep_pages_grpc(
    channel: &Channel,
    auth: &MetadataValue<Ascii>,
    segment: &str,
    token: &str,
    repeats: usize,
) -> anyhow::Result<Timings> {
    let mut client = SegmentationServiceClient::new(channel.clone());
    let mut t = Timings::default();
    for i in 0..=repeats {
        let started = Instant::now();
        let page = client
            .list_segment_members(grpc_request(
                pb::ListSegmentMembersRequest {
                    segment_id: segment.to_owned(),
                    page_size: 50,
                    page_token: token.to_owned(),
                },
                auth,
            ))
            .await?
            .into_inner();
        let took = ms(started.elapsed());
        if page.members.len() != 50 {
            bail!(
                "deep ListSegmentMembers returned {} members",
                page.members.len()
            );
        }
        if i > 0 {
            t.0.push(took);
        }
    }
    Ok(t)
}

// ---- the run ----------------------------------------------------------------------------------

fn verdict(ok: bool) -> &'static str {
    if ok { "pass" } else { "FAIL" }
}

async fn measure(args: &Args, url: &str, mesh: &Mesh) -> anyhow::Result<()> {
    let gateway = mesh.gateway_url();
    let http = reqwest::Client::builder()
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(600))
        .build()?;
    let (token, tenant) = sign_in(&http, &gateway).await?;
    let auth: MetadataValue<Ascii> = format!("Bearer {token}").parse()?;

    let owner = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(data::ACQUIRE_TIMEOUT)
        .connect(url)
        .await?;
    let audience = data::ensure(&owner, url, tenant, args.contacts).await?;
    let cleaned = data::clean_segments(&owner, tenant).await?;
    if cleaned > 0 {
        eprintln!("cos-bench: removed {cleaned} segment(s) left by earlier runs");
    }
    let facts = data::facts(&owner, tenant).await?;
    let owner_baseline = {
        // For reference: the same count as the owner (superuser: no row-level security).
        let mut t = Timings::default();
        for _ in 0..args.warmup.max(1) + 5 {
            let s = Instant::now();
            let _: i64 = sqlx::query_scalar("SELECT count(*) FROM segmentation.contacts")
                .fetch_one(&owner)
                .await?;
            t.0.push(ms(s.elapsed()));
        }
        t.0.drain(..args.warmup.max(1));
        t
    };
    // The app connection: the service's own pool type, app role cos_app, RLS in force.
    let db = cos_db::Db::connect(&cos_db::PoolSettings {
        url: url.to_owned(),
        max_connections: 2,
        app_role: "cos_app".into(),
        acquire_timeout: data::ACQUIRE_TIMEOUT,
    })
    .await?;

    eprintln!(
        "cos-bench: counting ({} warm-up + {} timed rounds) ...",
        args.warmup, args.repeats
    );
    let queries = count_queries()?;
    let counts_cpu_start = cpu::sample();
    let counts = run_counts(&db, tenant, &queries, args).await?;
    let counts_cpu = cpu::sample().usage_since(&counts_cpu_start);
    let by_name = |n: &str| {
        queries
            .iter()
            .position(|q| q.name == n)
            .map(|i| &counts[i])
            .expect("known query")
    };
    let base_median = by_name("baseline").timings.median();

    // ---- the segment through the service
    let channel = Channel::from_shared(format!("http://{}", mesh.segmentation_addr))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await?;
    let mut client = SegmentationServiceClient::new(channel.clone());
    let seg_json = criteria_segment();
    eprintln!("cos-bench: creating the segment through gRPC CreateSegment ...");
    let created_at = Instant::now();
    let segment = client
        .create_segment(grpc_request(
            pb::CreateSegmentRequest {
                name: format!(
                    "cos-bench active email subscribers {}",
                    Utc::now().timestamp()
                ),
                description: "cos-bench: email-subscribed contacts active in the last 12 months"
                    .into(),
                kind: "dynamic".into(),
                criteria: Some(to_prost(&seg_json)),
                refresh_interval_secs: 0,
            },
            &auth,
        ))
        .await
        .context("CreateSegment")?
        .into_inner();
    let create_ms = ms(created_at.elapsed());
    let seg_size = segment.size;
    eprintln!(
        "cos-bench: segment {} has {} members (created in {:.1} s)",
        segment.id,
        seg_size,
        create_ms / 1000.0
    );

    // Stream right after creation (the campaign-launch case), before anything else warms it.
    let mut passes = Vec::new();
    let first_pass = stream_pass(
        &owner,
        &channel,
        &auth,
        &segment.id,
        args.stream_batch,
        seg_size,
        "struct",
    )
    .await?;
    passes.push(first_pass);
    eprintln!(
        "cos-bench: first page, {} calls per path ...",
        args.page_repeats
    );
    let (page_first_ms, page_grpc) =
        first_pages_grpc(&channel, &auth, &segment.id, args.page_repeats).await?;
    let page_gw =
        first_pages_gateway(&http, &gateway, &token, &segment.id, args.page_repeats).await?;
    let segment_uuid = Uuid::parse_str(&segment.id)?;
    let deep_offset = seg_size * 95 / 100;
    let deep_token: Uuid = sqlx::query_scalar(
        "SELECT contact_id FROM segmentation.segment_members WHERE tenant_id = $1 AND segment_id = $2
         ORDER BY contact_id OFFSET $3 LIMIT 1",
    )
    .bind(tenant)
    .bind(segment_uuid)
    .bind(deep_offset)
    .fetch_one(&owner)
    .await?;
    let deep_repeats = (args.page_repeats / 10).max(5);
    let page_deep = deep_pages_grpc(
        &channel,
        &auth,
        &segment.id,
        &deep_token.to_string(),
        deep_repeats,
    )
    .await?;
    // What autovacuum does to the new membership sooner or later (here: now): statistics and
    // the visibility map. Planned statements on segment_members are re-planned after it.
    let vacuumed_at = Instant::now();
    sqlx::raw_sql("VACUUM (ANALYZE) segmentation.segment_members")
        .execute(&owner)
        .await?;
    let vacuum_ms = ms(vacuumed_at.elapsed());
    let page_deep_after = deep_pages_grpc(
        &channel,
        &auth,
        &segment.id,
        &deep_token.to_string(),
        deep_repeats,
    )
    .await?;
    for _ in 1..args.stream_passes.max(1) {
        passes.push(
            stream_pass(
                &owner,
                &channel,
                &auth,
                &segment.id,
                args.stream_batch,
                seg_size,
                "struct",
            )
            .await?,
        );
    }
    // The same with attributes as JSON bytes, then without attributes: what the Struct
    // encoding of attributes costs.
    for attributes in ["json", "none"] {
        passes.push(
            stream_pass(
                &owner,
                &channel,
                &auth,
                &segment.id,
                args.stream_batch,
                seg_size,
                attributes,
            )
            .await?,
        );
    }
    let (rss_end, hwm_end) = rss_kib();
    if !args.keep_segment {
        client
            .delete_segment(grpc_request(
                pb::DeleteSegmentRequest {
                    segment_id: segment.id.clone(),
                },
                &auth,
            ))
            .await
            .context("DeleteSegment")?;
    }

    // ---- report
    let facts_machine = crate::gateway::machine_facts();
    let command = crate::gateway::command_line();
    let date = Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let pg_version: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&owner)
        .await?;
    let pg_settings: Vec<(String, String)> = sqlx::query_as(
        "SELECT name, setting || coalesce(unit, '') FROM pg_settings
         WHERE name IN ('shared_buffers', 'work_mem', 'max_parallel_workers_per_gather', 'jit', 'effective_cache_size')
         ORDER BY name",
    )
    .fetch_all(&owner)
    .await?;
    println!(
        "cos-bench segmentation: {} live contacts, one tenant",
        audience.live
    );
    println!("  command      {command}");
    println!("  date         {date}");
    println!(
        "  machine      {} cores ({}), Linux {}; PostgreSQL {pg_version} ({}) on the same cores, with the mesh and this client",
        facts_machine["nproc"],
        facts_machine["cpu"].as_str().unwrap_or(""),
        facts_machine["kernel"].as_str().unwrap_or(""),
        pg_settings
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "  data         database {}: {} rows ({} live, {} soft-deleted), table {:.0} MiB + indexes {:.0} MiB, {}",
        args.database,
        audience.rows,
        audience.live,
        audience.rows - audience.live,
        audience.table_bytes as f64 / 1048576.0,
        audience.indexes_bytes as f64 / 1048576.0,
        match audience.generated_secs {
            Some(s) => format!("generated by this run in {s:.0} s"),
            None => format!("reused (generated {})", audience.generated_at),
        }
    );
    println!("  audience     {facts}");
    println!(
        "  counts       each in a tenant transaction as cos_app (RLS), {} warm-up + {} timed rounds, interleaved; time = BEGIN..COMMIT",
        args.warmup, args.repeats
    );
    println!(
        "  {:<8} {:>9} {:>10} {:>10} {:>10} {:>8}  plan (EXPLAIN ANALYZE, once)",
        "query", "count", "median ms", "p95 ms", "max ms", "ratio"
    );
    for (q, r) in queries.iter().zip(&counts) {
        let plan = &r.plan;
        let nodes: Vec<&str> = plan["nodes"]
            .as_array()
            .map(|v| v.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let idx: Vec<&str> = plan["indexes"]
            .as_array()
            .map(|v| v.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        println!(
            "  {:<8} {:>9} {:>10.1} {:>10.1} {:>10.1} {:>7.3}x  {}{}; exec {:.1} ms, jit {} ms",
            q.name,
            r.count,
            r.timings.median(),
            r.timings.pct(95.0),
            r.timings.max(),
            r.timings.median() / base_median,
            nodes.join(" > "),
            if idx.is_empty() {
                String::new()
            } else {
                format!(" [{}]", idx.join(", "))
            },
            plan["execution_ms"].as_f64().unwrap_or(f64::NAN),
            plan["jit_ms"]
                .as_f64()
                .map_or("-".to_owned(), |j| format!("{j:.1}")),
        );
    }
    for q in &queries {
        println!("           {:<8} {}", q.name, q.label);
    }
    let other = counts_cpu
        .by_group
        .get("other-processes")
        .copied()
        .unwrap_or(0.0);
    let other_share = if counts_cpu.machine_cpu_secs > 0.0 {
        other / counts_cpu.machine_cpu_secs
    } else {
        0.0
    };
    println!(
        "           during the counts: machine busy {:.0} %, PostgreSQL {:.1} CPU s, other processes {:.0} % of the machine's CPU{}",
        counts_cpu.machine_busy * 100.0,
        counts_cpu.by_group.get("postgres").copied().unwrap_or(0.0),
        other_share * 100.0,
        if other_share > 0.05 {
            "  WARNING: other processes were busy: the count figures are disturbed"
        } else {
            ""
        }
    );
    println!(
        "           owner    SELECT count(*) as the owner (superuser, no RLS): median {:.1} ms, p95 {:.1} ms",
        owner_baseline.median(),
        owner_baseline.pct(95.0)
    );
    println!(
        "  segment      {} members ({:.1} % of live contacts), CreateSegment (materialises membership) {:.1} s",
        seg_size,
        seg_size as f64 * 100.0 / audience.live as f64,
        create_ms / 1000.0
    );
    println!(
        "  first page   ListSegmentMembers page_size 50: very first call {:.1} ms; then {} calls: gRPC p50 {:.2} / p95 {:.2} / max {:.2} ms, gateway HTTP p50 {:.2} / p95 {:.2} / max {:.2} ms",
        page_first_ms,
        args.page_repeats,
        page_grpc.median(),
        page_grpc.pct(95.0),
        page_grpc.max(),
        page_gw.median(),
        page_gw.pct(95.0),
        page_gw.max()
    );
    println!(
        "  deep page    ListSegmentMembers page_size 50 with a page token at member {} of {}: {} calls over gRPC: p50 {:.1} / p95 {:.1} / max {:.1} ms",
        deep_offset,
        seg_size,
        deep_repeats,
        page_deep.median(),
        page_deep.pct(95.0),
        page_deep.max()
    );
    println!(
        "  deep page    the same after VACUUM (ANALYZE) segmentation.segment_members ({:.1} s, what autovacuum does later): p50 {:.1} / p95 {:.1} / max {:.1} ms",
        vacuum_ms / 1000.0,
        page_deep_after.median(),
        page_deep_after.pct(95.0),
        page_deep_after.max()
    );
    let batch = if args.stream_batch == 0 {
        1000
    } else {
        args.stream_batch
    };
    for (i, p) in passes.iter().enumerate() {
        let groups: Vec<String> = p
            .cpu
            .by_group
            .iter()
            .map(|(g, s)| format!("{g} {:.2}", s))
            .collect();
        println!(
            "  stream #{}{}    {} members in {} batches of {batch} ({:.1} MiB protobuf) in {:.2} s = {:.0} members/s, first batch {:.1} ms; RSS before {} MiB, peak {} MiB{}, after {} MiB; CPU s: {} (machine busy {:.0} %); segment_members index entries read: {} ({:.1} per member)",
            i + 1,
            match (i, p.attributes) {
                (0, _) => " (right after CreateSegment)",
                (_, "json") => " (after the VACUUM ANALYZE, attributes_as_json)",
                (_, "none") => " (after the VACUUM ANALYZE, omit_attributes)",
                _ => " (after the VACUUM ANALYZE)",
            },
            p.members,
            p.batches,
            p.bytes as f64 / 1048576.0,
            p.secs,
            p.rate(),
            p.first_batch_ms,
            mib(p.rss_before_kib),
            mib(p.rss_peak_kib),
            if p.peak_is_hwm {
                " (VmHWM)"
            } else {
                " (sampled)"
            },
            mib(p.rss_after_kib),
            groups.join(", "),
            p.cpu.machine_busy * 100.0,
            p.index_reads,
            p.index_reads as f64 / p.members.max(1) as f64,
        );
    }
    println!(
        "  memory       this process hosts the whole mesh (gateway, identity, billing, segmentation) and the client: RSS at the end {} MiB, peak over the whole run (VmHWM) {} MiB",
        mib(rss_end),
        mib(hwm_end)
    );

    let a = by_name("a");
    let b = by_name("b");
    let a_ratio = a.timings.median() / base_median;
    let b_ratio = b.timings.median() / base_median;
    println!("targets:");
    let rows: Vec<(String, String, String, bool)> = vec![
        (
            "(a) unindexed count / baseline (medians)".into(),
            format!("{a_ratio:.3}x"),
            format!("<= {TARGET_A_RATIO}x"),
            a_ratio <= TARGET_A_RATIO,
        ),
        (
            "(b) selective indexed count / baseline".into(),
            format!("{b_ratio:.3}x"),
            format!("<= {TARGET_B_RATIO}x"),
            b_ratio <= TARGET_B_RATIO,
        ),
        (
            "(a) count p95".into(),
            format!("{:.1} ms", a.timings.pct(95.0)),
            format!("<= {TARGET_P95_MS} ms"),
            a.timings.pct(95.0) <= TARGET_P95_MS,
        ),
        (
            "(b) count p95".into(),
            format!("{:.1} ms", b.timings.pct(95.0)),
            format!("<= {TARGET_P95_MS} ms"),
            b.timings.pct(95.0) <= TARGET_P95_MS,
        ),
        (
            "first page p95 (gRPC)".into(),
            format!("{:.2} ms", page_grpc.pct(95.0)),
            format!("<= {TARGET_P95_MS} ms"),
            page_grpc.pct(95.0) <= TARGET_P95_MS,
        ),
        (
            "first page p95 (gateway)".into(),
            format!("{:.2} ms", page_gw.pct(95.0)),
            format!("<= {TARGET_P95_MS} ms"),
            page_gw.pct(95.0) <= TARGET_P95_MS,
        ),
    ];
    let mut rows = rows;
    for (i, p) in passes.iter().enumerate() {
        rows.push((
            format!(
                "StreamMembers pass #{}{}",
                i + 1,
                match (i, p.attributes) {
                    (0, _) => " (new segment)",
                    (_, "json") => " (attributes as JSON)",
                    (_, "none") => " (no attributes)",
                    _ => " (vacuumed)",
                }
            ),
            format!("{:.0} members/s", p.rate()),
            format!(">= {TARGET_STREAM:.0} members/s"),
            p.rate() >= TARGET_STREAM,
        ));
    }
    for (what, value, target, ok) in &rows {
        println!(
            "  {what:<42} {value:>18}   target {target:<20} {}",
            verdict(*ok)
        );
    }
    let line = json!({
        "bench": "segmentation",
        "date": date,
        "command": command,
        "machine": facts_machine,
        "postgres": {"version": pg_version, "settings": pg_settings.iter().cloned().collect::<HashMap<_, _>>()},
        "audience": {
            "rows": audience.rows, "live": audience.live,
            "table_bytes": audience.table_bytes, "indexes_bytes": audience.indexes_bytes,
            "generated_secs": audience.generated_secs, "generated_at": audience.generated_at,
            "facts": facts,
        },
        "counts": queries.iter().zip(&counts).map(|(q, r)| json!({
            "name": q.name, "label": q.label, "headline": q.headline, "count": r.count,
            "timings": r.timings.json(), "ratio_to_baseline": r3(r.timings.median() / base_median),
            "plan": r.plan,
        })).collect::<Vec<_>>(),
        "owner_baseline": owner_baseline.json(),
        "counts_cpu": {"machine_busy": r3(counts_cpu.machine_busy), "by_group": counts_cpu.by_group, "other_share": r3(other_share)},
        "segment": {"members": seg_size, "create_ms": r3(create_ms), "criteria": seg_json},
        "first_page": {"very_first_ms": r3(page_first_ms), "grpc": page_grpc.json(), "gateway": page_gw.json()},
        "deep_page": {"offset": deep_offset, "grpc": page_deep.json(), "grpc_after_vacuum": page_deep_after.json(), "vacuum_ms": r3(vacuum_ms)},
        "stream": passes.iter().map(|p| json!({
            "members": p.members, "batches": p.batches, "batch_size": batch, "bytes": p.bytes,
            "secs": r3(p.secs), "members_per_sec": p.rate().round(), "attributes": p.attributes, "first_batch_ms": r3(p.first_batch_ms),
            "rss_before_mib": mib(p.rss_before_kib), "rss_peak_mib": mib(p.rss_peak_kib),
            "rss_after_mib": mib(p.rss_after_kib), "peak_from_vmhwm": p.peak_is_hwm,
            "segment_members_index_reads": p.index_reads,
            "cpu_secs": p.cpu.by_group, "machine_busy": r3(p.cpu.machine_busy),
        })).collect::<Vec<_>>(),
        "rss_end_mib": mib(rss_end),
        "vmhwm_run_mib": mib(hwm_end),
        "targets": rows.iter().map(|(w, v, t, ok)| json!({"what": w, "value": v, "target": t, "met": ok})).collect::<Vec<_>>(),
    });
    println!("{line}");
    db.pool().close().await;
    owner.close().await;
    Ok(())
}
