//! Gateway overhead at saturation: identity's `GetMe` (a real PostgreSQL transaction behind
//! JWT authentication) called
//!
//! 1. directly: tonic `IdentityServiceClient` to identity's gRPC port, `authorization: Bearer`
//!    metadata, N tasks sharing `--channels` HTTP/2 channels (default 1, like the gateway's own
//!    upstream channel);
//! 2. through the gateway: `GET /v1/me` with the bearer over an HTTP/1.1 keep-alive pool
//!    (one connection per task).
//!
//! Both are closed loops (each task sends its next request when the previous one answered) with
//! the same concurrency and duration, after a warm-up of each. Runs go direct, gateway, direct
//! (× `--rounds`), and the baseline is the mean of the direct runs, which cancels linear drift
//! (page cache, PostgreSQL statistics, CPU frequency) between them.
//!
//! Everything shares the machine: load generator, gateway, identity, PostgreSQL and Redis.
//! `/proc` run times say where the CPU went in each window (see `cpu.rs`).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use campaign_os::{Mesh, MeshListeners, Settings};
use cos_config::Source;
use cos_crypto::KeyRing;
use cos_proto::identity::v1::GetMeRequest;
use cos_proto::identity::v1::identity_service_client::IdentityServiceClient;
use cos_testkit::{TestAmqp, TestDatabase};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken as CancelToken;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;

use crate::cpu;

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// Length of each measured run.
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// Concurrent closed-loop clients (in-flight requests) in every run.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Warm-up of each path before measuring (not counted).
    #[arg(long, default_value_t = 2)]
    warmup_secs: u64,
    /// HTTP/2 channels the direct clients share (task i uses channel i mod N).
    #[arg(long, default_value_t = 1)]
    channels: usize,
    /// Gateway runs; each is followed by a direct run (direct, gateway, direct, ...).
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Identity's PostgreSQL pool size (COS_DATABASE__MAX_CONNECTIONS; 20 is the default).
    #[arg(long, default_value_t = 20)]
    db_connections: u32,
    /// Log filter of the mesh (at info, the gateway and identity log a line per request).
    #[arg(long, default_value = "warn")]
    log_filter: String,
    /// Worker threads of the server runtime(s) (default: cores).
    #[arg(long)]
    server_threads: Option<usize>,
    /// Worker threads of the load generator's runtime (default: cores).
    #[arg(long)]
    client_threads: Option<usize>,
    /// Run identity and the gateway on two runtimes (as two processes would) instead of
    /// `Mesh::start` on one, so their CPU shows separately.
    #[arg(long)]
    split_runtimes: bool,
    /// Set TCP_NODELAY on these servers' listening sockets (Linux: accepted connections inherit
    /// it). As shipped neither identity's gRPC server (serve_with_incoming) nor the gateway
    /// (axum::serve) sets it on accepted connections; this shows what doing so would change.
    #[arg(long, value_enum, default_value_t = Nodelay::None)]
    listener_nodelay: Nodelay,
    /// Extra settings for the mesh, KEY=VALUE as environment variables (COS_...).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

type Tasks = JoinSet<(&'static str, anyhow::Result<()>)>;

const PASSWORD: &str = "correct horse battery staple";
const MAX_LATENCY_US: u64 = 60_000_000;

fn runtime(name: &'static str, threads: usize) -> anyhow::Result<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .thread_name(name)
        .enable_all()
        .build()
        .with_context(|| format!("starting runtime {name}"))
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nodelay {
    None,
    Identity,
    Gateway,
    Both,
}

impl Nodelay {
    fn identity(self) -> bool {
        matches!(self, Self::Identity | Self::Both)
    }
    fn gateway(self) -> bool {
        matches!(self, Self::Gateway | Self::Both)
    }
    fn label(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Identity => "identity",
            Self::Gateway => "gateway",
            Self::Both => "both",
        }
    }
}

/// A listener on a random loopback port, optionally with TCP_NODELAY for what it accepts.
async fn listen(nodelay: bool) -> std::io::Result<TcpListener> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    if nodelay {
        socket.set_nodelay(true)?;
    }
    socket.bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    socket.listen(1024)
}

/// The servers under test, however they were started.
enum Servers {
    Mesh(Box<Mesh>),
    Split {
        shutdown: CancelToken,
        identity: Tasks,
        gateway: Tasks,
    },
}

struct Running {
    servers: Servers,
    gateway_url: String,
    identity_addr: SocketAddr,
}

fn settings(args: &Args, db: &TestDatabase, amqp: &TestAmqp) -> anyhow::Result<Settings> {
    let high = "1000000000";
    let mut vars: Vec<(String, String)> = vec![
        ("COS_ENV".into(), "test".into()),
        ("COS_DATABASE__URL".into(), db.url.clone()),
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
        // Limits so high they never trigger. The gateway still makes its Redis round trip for
        // every request: the check is a counter script, whatever the limit.
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
        // Long enough for any run; tokens are minted once before measuring.
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

fn init_telemetry(settings: &Settings) -> anyhow::Result<cos_telemetry::TelemetryGuard> {
    let mut cfg = cos_telemetry::TelemetryConfig::new("cos-bench");
    cfg.log_filter = settings.common.telemetry.log_filter.clone();
    // Logs go to stderr: stdout carries the results.
    cos_telemetry::init_with_writer(&cfg, std::io::stderr)
}

fn start_servers(
    args: &Args,
    settings: &Settings,
    keyring: &KeyRing,
    mesh_rt: &Runtime,
    split: Option<(&Runtime, &Runtime)>,
) -> anyhow::Result<Running> {
    let Some((id_rt, gw_rt)) = split else {
        let nodelay = args.listener_nodelay;
        let mesh = mesh_rt.block_on(async {
            let listeners = MeshListeners {
                identity: listen(nodelay.identity()).await?,
                gateway: listen(nodelay.gateway()).await?,
                identity_admin: Some(listen(false).await?),
                gateway_admin: Some(listen(false).await?),
                // The other services on random ports as usual.
                ..MeshListeners::ephemeral().await?
            };
            Mesh::start(settings.clone(), keyring.clone(), listeners).await
        })?;
        return Ok(Running {
            gateway_url: mesh.gateway_url(),
            identity_addr: mesh.identity_addr,
            servers: Servers::Mesh(Box::new(mesh)),
        });
    };
    // What Mesh::start does, with each service on its own runtime (listeners belong to the
    // runtime whose reactor created them).
    let shutdown = CancelToken::new();
    let mut identity = Tasks::new();
    let mut gateway = Tasks::new();
    let nodelay = args.listener_nodelay;
    let (id_listener, id_admin) = id_rt.block_on(async {
        anyhow::Ok((listen(nodelay.identity()).await?, listen(false).await?))
    })?;
    let (gw_listener, gw_admin) = gw_rt
        .block_on(async { anyhow::Ok((listen(nodelay.gateway()).await?, listen(false).await?)) })?;
    let identity_addr = id_listener.local_addr()?;
    let gateway_addr = gw_listener.local_addr()?;
    let mut settings = settings.clone();
    settings.gateway.upstreams.insert(
        cos_identity::GRPC_SERVICE.to_owned(),
        format!("http://{identity_addr}"),
    );
    id_rt.block_on(campaign_os::mesh::start_identity(
        &settings,
        keyring,
        id_listener,
        Some(id_admin),
        &shutdown,
        &mut identity,
    ))?;
    gw_rt.block_on(campaign_os::mesh::start_gateway(
        &settings,
        gw_listener,
        Some(gw_admin),
        &shutdown,
        &mut gateway,
    ))?;
    Ok(Running {
        servers: Servers::Split {
            shutdown,
            identity,
            gateway,
        },
        gateway_url: format!("http://{gateway_addr}"),
        identity_addr,
    })
}

fn stop_servers(
    servers: Servers,
    mesh_rt: &Runtime,
    split: Option<(&Runtime, &Runtime)>,
) -> anyhow::Result<()> {
    match (servers, split) {
        (Servers::Mesh(mesh), _) => mesh_rt.block_on(mesh.stop()),
        (
            Servers::Split {
                shutdown,
                mut identity,
                mut gateway,
            },
            Some((id_rt, gw_rt)),
        ) => {
            shutdown.cancel();
            let drain = |tasks: &mut Tasks, rt: &Runtime| {
                rt.block_on(async {
                    tokio::time::timeout(Duration::from_secs(30), async {
                        while let Some(done) = tasks.join_next().await {
                            if let Ok((name, Err(e))) = done {
                                eprintln!("warning: {name} failed during shutdown: {e:#}");
                            }
                        }
                    })
                    .await
                    .ok();
                });
            };
            drain(&mut gateway, gw_rt);
            drain(&mut identity, id_rt);
            Ok(())
        }
        (Servers::Split { .. }, None) => unreachable!("split servers need their runtimes"),
    }
}

/// What one load phase sends requests to.
#[derive(Clone)]
enum Target {
    Direct {
        channels: Vec<Channel>,
        auth: MetadataValue<Ascii>,
    },
    Gateway {
        client: reqwest::Client,
        url: String,
        auth: reqwest::header::HeaderValue,
    },
}

impl Target {
    fn name(&self) -> &'static str {
        match self {
            Self::Direct { .. } => "direct",
            Self::Gateway { .. } => "gateway",
        }
    }
}

#[derive(Default)]
struct WorkerResult {
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    hist: Option<Histogram<u64>>,
}

async fn worker(target: Target, index: usize, deadline: Instant) -> WorkerResult {
    let mut hist = histogram();
    let mut ok = 0u64;
    let mut errors = 0u64;
    let mut first_error = None;
    match target {
        Target::Direct { channels, auth } => {
            let mut client = IdentityServiceClient::new(channels[index % channels.len()].clone());
            loop {
                let sent = Instant::now();
                if sent >= deadline {
                    break;
                }
                let mut req = tonic::Request::new(GetMeRequest {});
                req.metadata_mut().insert("authorization", auth.clone());
                let result = client.get_me(req).await;
                let done = Instant::now();
                if done > deadline {
                    break;
                }
                match result {
                    Ok(_) => {
                        ok += 1;
                        hist.saturating_record(micros(done - sent));
                    }
                    Err(status) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| format!("gRPC {status}"));
                    }
                }
            }
        }
        Target::Gateway { client, url, auth } => loop {
            let sent = Instant::now();
            if sent >= deadline {
                break;
            }
            let result = async {
                let resp = client
                    .get(&url)
                    .header(reqwest::header::AUTHORIZATION, auth.clone())
                    .send()
                    .await?;
                let status = resp.status();
                // Read the whole body: the connection goes back to the pool only then.
                let body = resp.bytes().await?;
                Ok::<_, reqwest::Error>((status, body))
            }
            .await;
            let done = Instant::now();
            if done > deadline {
                break;
            }
            match result {
                Ok((status, _)) if status == reqwest::StatusCode::OK => {
                    ok += 1;
                    hist.saturating_record(micros(done - sent));
                }
                Ok((status, body)) => {
                    errors += 1;
                    first_error.get_or_insert_with(|| {
                        format!("HTTP {status}: {}", String::from_utf8_lossy(&body))
                    });
                }
                Err(e) => {
                    errors += 1;
                    first_error.get_or_insert_with(|| format!("HTTP client: {e}"));
                }
            }
        },
    }
    WorkerResult {
        ok,
        errors,
        first_error,
        hist: Some(hist),
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

struct Phase {
    name: &'static str,
    secs: f64,
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    hist: Histogram<u64>,
    cpu: cpu::Usage,
}

impl Phase {
    fn rps(&self) -> f64 {
        self.ok as f64 / self.secs
    }

    fn cpu_us_per_req(&self) -> Vec<(&'static str, f64)> {
        let n = self.ok.max(1) as f64;
        let mut v: Vec<(&'static str, f64)> = self
            .cpu
            .by_group
            .iter()
            .map(|(g, s)| (*g, s * 1e6 / n))
            .collect();
        let accounted: f64 = self.cpu.by_group.values().sum();
        v.push((
            "unaccounted",
            (self.cpu.machine_cpu_secs - accounted).max(0.0) * 1e6 / n,
        ));
        v.push(("machine", self.cpu.machine_cpu_secs * 1e6 / n));
        v
    }
}

/// Runs `concurrency` closed-loop workers against `target` for `duration`.
async fn phase(target: &Target, concurrency: usize, duration: Duration) -> anyhow::Result<Phase> {
    let start_cpu = cpu::sample();
    let start = Instant::now();
    let deadline = start + duration;
    let mut set = JoinSet::new();
    for i in 0..concurrency {
        set.spawn(worker(target.clone(), i, deadline));
    }
    tokio::time::sleep_until(deadline.into()).await;
    let end_cpu = cpu::sample();
    let mut hist = histogram();
    let (mut ok, mut errors, mut first_error) = (0, 0, None);
    while let Some(done) = set.join_next().await {
        let r = done.context("load worker panicked")?;
        ok += r.ok;
        errors += r.errors;
        if first_error.is_none() {
            first_error = r.first_error;
        }
        if let Some(h) = r.hist {
            hist.add(&h).context("merging histograms")?;
        }
    }
    Ok(Phase {
        name: target.name(),
        secs: duration.as_secs_f64(),
        ok,
        errors,
        first_error,
        hist,
        cpu: end_cpu.usage_since(&start_cpu),
    })
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn print_phase(p: &Phase) {
    println!(
        "  {:<8} {:>9.0} req/s   p50 {:>7.2} ms   p99 {:>7.2} ms   p99.9 {:>7.2} ms   max {:>8.2} ms   ok {:>8}   errors {}",
        p.name,
        p.rps(),
        ms(p.hist.value_at_quantile(0.50)),
        ms(p.hist.value_at_quantile(0.99)),
        ms(p.hist.value_at_quantile(0.999)),
        ms(p.hist.max()),
        p.ok,
        p.errors,
    );
    if let Some(e) = &p.first_error {
        println!("           first error: {e}");
    }
    let parts: Vec<String> = p
        .cpu_us_per_req()
        .iter()
        .map(|(g, us)| format!("{g} {us:.0}"))
        .collect();
    println!(
        "           CPU µs/request: {}   (machine busy {:.0}%, steal {:.0}%)",
        parts.join(", "),
        p.cpu.machine_busy * 100.0,
        p.cpu.steal * 100.0
    );
    let other = p
        .cpu
        .by_group
        .get("other-processes")
        .copied()
        .unwrap_or(0.0);
    if p.cpu.machine_cpu_secs > 0.0 && other / p.cpu.machine_cpu_secs > 0.05 {
        println!(
            "           WARNING: other processes used {:.0}% of the machine's CPU in this run: the figures are disturbed",
            other / p.cpu.machine_cpu_secs * 100.0
        );
    }
}

fn summary_json(phases: &[&Phase]) -> Value {
    let mut hist = histogram();
    for p in phases {
        let _ = hist.add(&p.hist);
    }
    let n = phases.len().max(1) as f64;
    let rps = phases.iter().map(|p| p.rps()).sum::<f64>() / n;
    let ok: u64 = phases.iter().map(|p| p.ok).sum();
    let mut cpu = serde_json::Map::new();
    for p in phases {
        for (g, us) in p.cpu_us_per_req() {
            let e = cpu.entry(g).or_insert(json!(0.0));
            *e = json!(round1(e.as_f64().unwrap_or(0.0) + us / n));
        }
    }
    json!({
        "rps": round1(rps),
        "runs_rps": phases.iter().map(|p| round1(p.rps())).collect::<Vec<_>>(),
        "ok": ok,
        "errors": phases.iter().map(|p| p.errors).sum::<u64>(),
        "p50_ms": round3(ms(hist.value_at_quantile(0.50))),
        "p99_ms": round3(ms(hist.value_at_quantile(0.99))),
        "p999_ms": round3(ms(hist.value_at_quantile(0.999))),
        "max_ms": round3(ms(hist.max())),
        "cpu_us_per_req": cpu,
        "machine_busy": round3(phases.iter().map(|p| p.cpu.machine_busy).sum::<f64>() / n),
        "steal": round3(phases.iter().map(|p| p.cpu.steal).sum::<f64>() / n),
    })
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

pub(crate) fn machine_facts() -> Value {
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into());
    json!({ "nproc": crate::nproc(), "cpu": cpu_model, "kernel": kernel })
}

/// Registers a user through the gateway; returns (email, access token).
async fn register(http: &reqwest::Client, gateway: &str) -> anyhow::Result<(String, String)> {
    let email = format!("bench-{}@bench.test", cos_testkit::unique_suffix());
    let resp = http
        .post(format!("{gateway}/v1/auth/register"))
        .json(&json!({
            "email": email,
            "password": PASSWORD,
            "display_name": "Bench User",
            "tenant_name": "Bench Tenant",
        }))
        .send()
        .await?;
    let status = resp.status();
    let body: Value = resp.json().await?;
    if status != reqwest::StatusCode::CREATED {
        bail!("register: HTTP {status}: {body}");
    }
    let token = body["tokens"]["access_token"]
        .as_str()
        .context("register: no access token")?
        .to_owned();
    Ok((email, token))
}

/// One call each way, checking both answer for the registered user.
async fn check_both(target_direct: &Target, target_gw: &Target, email: &str) -> anyhow::Result<()> {
    if let Target::Direct { channels, auth } = target_direct {
        let mut client = IdentityServiceClient::new(channels[0].clone());
        let mut req = tonic::Request::new(GetMeRequest {});
        req.metadata_mut().insert("authorization", auth.clone());
        let me = client.get_me(req).await?.into_inner();
        let got = me.user.map(|u| u.email).unwrap_or_default();
        if got != email {
            bail!("direct GetMe answered for {got:?}, expected {email:?}");
        }
    }
    if let Target::Gateway { client, url, auth } = target_gw {
        let resp = client
            .get(url)
            .header(reqwest::header::AUTHORIZATION, auth.clone())
            .send()
            .await?;
        let status = resp.status();
        let body: Value = resp.json().await?;
        if status != reqwest::StatusCode::OK || body["user"]["email"] != email {
            bail!("gateway GET /v1/me: HTTP {status}: {body}");
        }
    }
    Ok(())
}

async fn direct_channels(addr: SocketAddr, n: usize) -> anyhow::Result<Vec<Channel>> {
    let mut channels = Vec::with_capacity(n);
    for _ in 0..n.max(1) {
        // The same channel settings as the gateway's upstream channel.
        let channel = Channel::from_shared(format!("http://{addr}"))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .connect()
            .await?;
        channels.push(channel);
    }
    Ok(channels)
}

pub(crate) fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    format!("cargo run --release -p cos-bench -- {}", args.join(" "))
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.concurrency == 0 || args.duration_secs == 0 {
        bail!("--concurrency and --duration-secs must be positive");
    }
    let ncpu = crate::nproc();
    let server_threads = args.server_threads.unwrap_or(ncpu);
    let client_threads = args.client_threads.unwrap_or(ncpu);
    let mesh_rt = runtime("cos-mesh", server_threads)?;
    let split_rts = if args.split_runtimes {
        Some((
            runtime("cos-id", server_threads)?,
            runtime("cos-gw", server_threads)?,
        ))
    } else {
        None
    };
    let split = split_rts.as_ref().map(|(a, b)| (a, b));
    let load_rt = runtime("cos-load", client_threads)?;

    let db = mesh_rt.block_on(TestDatabase::create(
        &campaign_os::migrations_fingerprint(),
        |url| async move { campaign_os::migrate(&url, "cos_app").await },
    ))?;
    let amqp = TestAmqp::new();
    let result = (|| {
        let settings = settings(&args, &db, &amqp)?;
        let _telemetry = init_telemetry(&settings)?;
        let keyring = KeyRing::generate("bench1")?;
        let running = start_servers(&args, &settings, &keyring, &mesh_rt, split)?;
        let measured = load_rt.block_on(measure(
            &args,
            &settings,
            &running,
            client_threads,
            server_threads,
        ));
        let stopped = stop_servers(running.servers, &mesh_rt, split);
        measured.and(stopped)
    })();
    let _ = mesh_rt.block_on(db.drop_database());
    result
}

async fn measure(
    args: &Args,
    settings: &Settings,
    running: &Running,
    client_threads: usize,
    server_threads: usize,
) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(args.concurrency.max(1))
        .timeout(Duration::from_secs(30))
        .build()?;
    let (email, token) = register(&http, &running.gateway_url).await?;
    let direct = Target::Direct {
        channels: direct_channels(running.identity_addr, args.channels).await?,
        auth: format!("Bearer {token}").parse()?,
    };
    let gateway = Target::Gateway {
        client: http.clone(),
        url: format!("{}/v1/me", running.gateway_url),
        auth: reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))?,
    };
    check_both(&direct, &gateway, &email).await?;
    let Target::Direct { channels, auth } = &direct else {
        unreachable!("direct target")
    };
    let steps = crate::micro::measure(crate::micro::Inputs {
        channel: channels[0].clone(),
        auth: auth.clone(),
        token: &token,
        issuer: &settings.common.auth.issuer,
        audience: &settings.common.auth.audience,
        redis_url: &settings.common.redis.url,
    })
    .await
    .context("timing the gateway's steps")?;

    let facts = machine_facts();
    let command = command_line();
    let date = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
    println!("cos-bench gateway: identity GetMe, direct gRPC vs gateway HTTP/JSON");
    println!("  command      {command}");
    println!("  date         {date}");
    println!(
        "  machine      {} cores ({}), Linux {}",
        facts["nproc"],
        facts["cpu"].as_str().unwrap_or(""),
        facts["kernel"].as_str().unwrap_or("")
    );
    println!(
        "  shared       load generator ({client_threads} threads), gateway and identity ({} runtime{} of {server_threads} threads), PostgreSQL and Redis all share these cores",
        if args.split_runtimes { "two" } else { "one" },
        if args.split_runtimes { "s" } else { "" },
    );
    println!(
        "  load         {} closed-loop clients, {} s per run after {} s warm-up of each path; direct over {} HTTP/2 channel(s), gateway over HTTP/1.1 keep-alive (one connection per client)",
        args.concurrency, args.duration_secs, args.warmup_secs, args.channels
    );
    println!(
        "  order        direct, gateway, direct{}; baseline = mean of the direct runs",
        ", gateway, direct".repeat(args.rounds.saturating_sub(1))
    );
    println!(
        "  server       identity DB pool {}, log filter {:?}, rate limits 1e9/min (the Redis check still runs), TCP_NODELAY on accepted connections: {}",
        args.db_connections,
        args.log_filter,
        match args.listener_nodelay {
            Nodelay::None => "as shipped (not set)".to_owned(),
            n => format!("forced on for {}", n.label()),
        }
    );

    println!(
        "  steps        one task, in isolation: JWT verify {} µs, rate-limit Redis script round trip {} µs (Redis CPU {} µs), GetMe response protobuf->JSON {} µs ({} -> {} bytes)",
        steps["jwt_verify_us"],
        steps["redis_ratelimit_roundtrip_us"],
        steps["redis_server_cpu_per_call_us"],
        steps["transcode_getme_response_us"],
        steps["getme_response_bytes"],
        steps["getme_json_bytes"],
    );
    let warmup = Duration::from_secs(args.warmup_secs);
    if !warmup.is_zero() {
        for target in [&direct, &gateway] {
            let w = phase(target, args.concurrency, warmup).await?;
            if w.errors > 0 {
                eprintln!(
                    "warning: {} errors during {} warm-up: {}",
                    w.errors,
                    w.name,
                    w.first_error.as_deref().unwrap_or("")
                );
            }
        }
    }
    let duration = Duration::from_secs(args.duration_secs);
    let mut directs = Vec::new();
    let mut gateways = Vec::new();
    println!("runs:");
    let p = phase(&direct, args.concurrency, duration).await?;
    print_phase(&p);
    directs.push(p);
    for _ in 0..args.rounds.max(1) {
        let p = phase(&gateway, args.concurrency, duration).await?;
        print_phase(&p);
        gateways.push(p);
        let p = phase(&direct, args.concurrency, duration).await?;
        print_phase(&p);
        directs.push(p);
    }

    let d = summary_json(&directs.iter().collect::<Vec<_>>());
    let g = summary_json(&gateways.iter().collect::<Vec<_>>());
    let d_rps = d["rps"].as_f64().unwrap_or(0.0);
    let g_rps = g["rps"].as_f64().unwrap_or(0.0);
    let ratio = if d_rps > 0.0 { g_rps / d_rps } else { 0.0 };
    let errors = d["errors"].as_u64().unwrap_or(0) + g["errors"].as_u64().unwrap_or(0);
    println!("summary:");
    for (name, s) in [("direct", &d), ("gateway", &g)] {
        println!(
            "  {:<8} {:>9.0} req/s   p50 {:>7.2} ms   p99 {:>7.2} ms   p99.9 {:>7.2} ms   errors {}",
            name,
            s["rps"].as_f64().unwrap_or(0.0),
            s["p50_ms"].as_f64().unwrap_or(0.0),
            s["p99_ms"].as_f64().unwrap_or(0.0),
            s["p999_ms"].as_f64().unwrap_or(0.0),
            s["errors"],
        );
    }
    println!(
        "  ratio    gateway/direct = {ratio:.3}   (target >= 0.70: {})",
        if ratio >= 0.7 { "met" } else { "NOT met" }
    );
    if errors > 0 {
        println!("  WARNING: {errors} requests failed; see the first errors above");
    }
    let line = json!({
        "bench": "gateway",
        "rpc": "campaignos.identity.v1.IdentityService/GetMe",
        "date": date,
        "command": command,
        "machine": facts,
        "concurrency": args.concurrency,
        "duration_secs": args.duration_secs,
        "warmup_secs": args.warmup_secs,
        "channels": args.channels,
        "rounds": args.rounds,
        "db_connections": args.db_connections,
        "split_runtimes": args.split_runtimes,
        "listener_nodelay": args.listener_nodelay.label(),
        "server_threads": server_threads,
        "client_threads": client_threads,
        "set": args.set,
        "steps": steps,
        "direct": d,
        "gateway": g,
        "ratio": round3(ratio),
        "target_ratio": 0.7,
        "errors": errors,
    });
    println!("{line}");
    Ok(())
}
