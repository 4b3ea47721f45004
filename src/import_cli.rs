//! `campaign-os import-contacts FILE --tenant ID`: uploads a CSV of contacts through the gateway
//! (`POST /v1/contact-imports`, raw `text/csv`), follows the import job with a progress bar,
//! then prints the totals and the first rejected rows. A plain HTTP client of the public API: it
//! needs no server configuration, only the gateway's URL and a token.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use reqwest::{StatusCode, Url};
use serde_json::Value as Json;

#[derive(clap::Args, Debug)]
pub struct ImportContactsArgs {
    /// The CSV file (first row: the column headers).
    pub file: PathBuf,
    /// Tenant the contacts are imported into; must be the tenant of the token.
    #[arg(long, value_name = "TENANT_ID")]
    pub tenant: String,
    /// CSV header → target as a JSON object, e.g. '{"E-Mail":"email","Firma":"attributes.company"}'
    /// (targets: email, phone, external_id, first_name, last_name, locale, time_zone, tags,
    /// attributes.<key>, consent.<channel>, last_activity_at, ignore). Default: inferred from
    /// the header names.
    #[arg(long, value_name = "JSON")]
    pub mapping: Option<String>,
    /// Also add every imported contact to this static segment.
    #[arg(long, value_name = "SEGMENT_ID")]
    pub segment: Option<String>,
    /// Leave existing contacts untouched (only create new ones).
    #[arg(long)]
    pub skip_existing: bool,
    /// Base URL of the gateway.
    #[arg(
        long,
        value_name = "URL",
        env = "COS_GATEWAY_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub gateway: String,
    /// Access token or API key (`cos_...`) of the tenant.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "COS_API_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// How many rejected rows to list at the end.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub show_rejections: u32,
    /// Seconds between progress checks.
    #[arg(long, value_name = "SECS", default_value_t = 1.0)]
    pub poll_interval: f64,
}

/// A `mapping` argument checked before anything is uploaded.
fn parse_mapping(raw: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let value: Json =
        serde_json::from_str(raw).map_err(|e| anyhow!("--mapping is not valid JSON: {e}"))?;
    let Json::Object(object) = value else {
        bail!(
            "--mapping must be a JSON object of CSV header → target, e.g. '{{\"E-Mail\":\"email\"}}'"
        );
    };
    object
        .into_iter()
        .map(|(header, target)| match target {
            Json::String(t) => Ok((header, t)),
            other => Err(anyhow!(
                "--mapping: the target of `{header}` must be a string, got {other}"
            )),
        })
        .collect()
}

/// Data rows in a CSV (lines after the header), for the progress bar's total. An estimate:
/// quoted fields spanning lines count once per line.
fn estimate_rows(csv: &[u8]) -> u64 {
    let lines = csv.iter().filter(|&&b| b == b'\n').count() as u64
        + u64::from(!csv.is_empty() && !csv.ends_with(b"\n"));
    lines.saturating_sub(1)
}

/// `12345` -> `12,345`.
fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// An int64 field of a JSON response (the API writes 64-bit integers as strings).
fn int(job: &Json, field: &str) -> i64 {
    match &job[field] {
        Json::String(s) => s.parse().unwrap_or(0),
        Json::Number(n) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

fn text<'a>(json: &'a Json, field: &str) -> &'a str {
    json[field].as_str().unwrap_or_default()
}

/// One-line message of an error response (problem+json, or whatever the body is).
fn describe_error(status: StatusCode, body: &str) -> String {
    let Ok(problem) = serde_json::from_str::<Json>(body) else {
        let body = body.trim();
        return if body.is_empty() {
            format!("HTTP {status}")
        } else {
            format!(
                "HTTP {status}: {}",
                body.chars().take(300).collect::<String>()
            )
        };
    };
    let mut msg = format!("HTTP {}", status.as_u16());
    let detail = text(&problem, "detail");
    let title = text(&problem, "title");
    if !detail.is_empty() {
        msg.push_str(&format!(": {detail}"));
    } else if !title.is_empty() {
        msg.push_str(&format!(": {title}"));
    }
    if let Some(errors) = problem["errors"].as_array() {
        for e in errors {
            let line = format!("{}: {}", text(e, "field"), text(e, "message"));
            if !msg.contains(&line) {
                msg.push_str(&format!("\n  {line}"));
            }
        }
    }
    let rid = text(&problem, "request_id");
    if !rid.is_empty() {
        msg.push_str(&format!(" (request id {rid})"));
    }
    msg
}

/// The gateway, with the caller's token.
struct Api {
    http: reqwest::Client,
    base: Url,
    token: String,
}

impl Api {
    fn new(gateway: &str, token: String) -> anyhow::Result<Self> {
        let mut base =
            Url::parse(gateway).with_context(|| format!("--gateway {gateway:?} is not a URL"))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            bail!("--gateway must be an http:// or https:// URL, got {gateway:?}");
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        // https: rustls with the same aws-lc crypto the rest of the binary uses.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("campaign-os/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the HTTP client")?;
        Ok(Self { http, base, token })
    }

    /// `base` + `/`-joined, percent-encoded path segments.
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// Sends a request; a non-2xx answer becomes an error describing the problem.
    async fn send(&self, request: reqwest::RequestBuilder, what: &str) -> anyhow::Result<Json> {
        let response = request
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("{what}: cannot reach the gateway at {}", self.base))?;
        let status = response.status();
        let body = response
            .text()
            .await
            .with_context(|| format!("{what}: reading the response"))?;
        if !status.is_success() {
            return Err(ApiError {
                status,
                message: format!("{what}: {}", describe_error(status, &body)),
            }
            .into());
        }
        serde_json::from_str(&body)
            .with_context(|| format!("{what}: the gateway answered something that is not JSON"))
    }

    async fn get(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
        what: &str,
    ) -> anyhow::Result<Json> {
        let mut url = self.url(segments);
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        self.send(self.http.get(url).timeout(Duration::from_secs(30)), what)
            .await
    }
}

/// A non-2xx answer of the gateway.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ApiError {}

fn status_of(e: &anyhow::Error) -> Option<StatusCode> {
    e.downcast_ref::<ApiError>().map(|e| e.status)
}

/// Refuses to go on unless the token belongs to `tenant` (checked with `GET /v1/me`).
async fn verify_tenant(api: &Api, tenant: &str) -> anyhow::Result<String> {
    let me = match api.get(&["v1", "me"], &[], "checking the token").await {
        Ok(me) => me,
        Err(e) => {
            return Err(match status_of(&e) {
                Some(StatusCode::UNAUTHORIZED) => anyhow!(
                    "the gateway rejected the token (expired access token, or revoked API key): {e}"
                ),
                Some(StatusCode::FORBIDDEN) => anyhow!(
                    "cannot verify that the token belongs to tenant {tenant}: it lacks the \
                     profile.read permission (give the API key the profile.read scope): {e}"
                ),
                _ => e,
            });
        }
    };
    let id = text(&me["tenant"], "id");
    let name = text(&me["tenant"], "name");
    if id.is_empty() {
        bail!("GET /v1/me did not name the token's tenant");
    }
    if !id.eq_ignore_ascii_case(tenant.trim()) {
        bail!(
            "--tenant {tenant} does not match the token, which belongs to tenant {id} ({name}); \
             use a token or API key of tenant {tenant}"
        );
    }
    Ok(name.to_owned())
}

/// Progress display: one redrawn line on a terminal, a line every few seconds otherwise.
struct Progress {
    tty: bool,
    estimated_rows: u64,
    last_line: Option<Instant>,
    drawn: bool,
}

const BAR_WIDTH: usize = 30;
const PLAIN_EVERY: Duration = Duration::from_secs(5);

fn progress_line(job: &Json, estimated_rows: u64, bar: bool) -> String {
    let read = int(job, "rows_read");
    let counts = format!(
        "read {} · imported {} · updated {} · rejected {}",
        thousands(read),
        thousands(int(job, "rows_imported")),
        thousands(int(job, "rows_updated")),
        thousands(int(job, "rows_rejected")),
    );
    let status = text(job, "status");
    if estimated_rows == 0 {
        return format!("{status:<9} {counts}");
    }
    let fraction = (read.max(0) as f64 / estimated_rows as f64).min(1.0);
    let percent = (fraction * 100.0).floor() as u32;
    if bar {
        let filled = (fraction * BAR_WIDTH as f64).round() as usize;
        format!(
            "[{}{}] {percent:>3}%  {counts}",
            "█".repeat(filled),
            "░".repeat(BAR_WIDTH - filled)
        )
    } else {
        format!(
            "{status}: {percent}% ({} of ~{} rows) {counts}",
            thousands(read),
            thousands(i64::try_from(estimated_rows).unwrap_or(i64::MAX))
        )
    }
}

impl Progress {
    fn update(&mut self, job: &Json) {
        let mut err = std::io::stderr().lock();
        if self.tty {
            let line = progress_line(job, self.estimated_rows, true);
            let _ = write!(err, "\r\x1b[2K{line}");
            let _ = err.flush();
            self.drawn = true;
        } else if self.last_line.is_none_or(|t| t.elapsed() >= PLAIN_EVERY) {
            let _ = writeln!(err, "{}", progress_line(job, self.estimated_rows, false));
            self.last_line = Some(Instant::now());
        }
    }

    fn finish(&mut self) {
        if self.tty && self.drawn {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
            let _ = std::io::stderr().flush();
            self.drawn = false;
        }
    }
}

fn is_final(status: &str) -> bool {
    matches!(status, "completed" | "failed" | "cancelled")
}

fn print_summary(job: &Json) {
    let id = text(job, "id");
    println!(
        "Import {id} {}: {}",
        text(job, "status"),
        text(job, "file_name")
    );
    let rows = [
        ("rows read", "rows_read"),
        ("imported (new)", "rows_imported"),
        ("updated", "rows_updated"),
        ("unchanged", "rows_unchanged"),
        ("rejected", "rows_rejected"),
        ("over plan limit", "rows_over_limit"),
    ];
    for (label, field) in rows {
        let n = int(job, field);
        if n != 0 || matches!(field, "rows_read" | "rows_imported" | "rows_rejected") {
            println!("  {label:<16} {:>12}", thousands(n));
        }
    }
    if let Some(unknown) = job["unknown_columns"].as_array().filter(|u| !u.is_empty()) {
        let names: Vec<&str> = unknown.iter().filter_map(Json::as_str).collect();
        println!("  ignored columns  {}", names.join(", "));
    }
    let error = text(job, "error");
    if !error.is_empty() {
        println!("  error            {error}");
    }
}

async fn print_rejections(api: &Api, job: &Json, limit: u32) -> anyhow::Result<()> {
    let rejected = int(job, "rows_rejected");
    if rejected == 0 || limit == 0 {
        return Ok(());
    }
    let id = text(job, "id");
    let page = api
        .get(
            &["v1", "contact-imports", id, "rejections"],
            &[("page_size", limit.min(1000).to_string())],
            "listing the rejected rows",
        )
        .await?;
    let list = page["rejections"].as_array().cloned().unwrap_or_default();
    println!();
    println!("Rejected rows (first {}):", list.len().min(limit as usize));
    for r in list.iter().take(limit as usize) {
        println!("  line {:>7}  {}", int(r, "line"), text(r, "reason"));
    }
    let more = rejected - list.len().min(limit as usize) as i64;
    if more > 0 {
        println!(
            "  … and {} more: GET /v1/contact-imports/{id}/rejections",
            thousands(more)
        );
    }
    Ok(())
}

fn read_file(path: &Path) -> anyhow::Result<Vec<u8>> {
    let content = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    if content.is_empty() {
        bail!("{} is empty", path.display());
    }
    Ok(content)
}

pub async fn run(args: ImportContactsArgs) -> anyhow::Result<()> {
    let token = args
        .token
        .clone()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| anyhow!("no token: pass --token or set COS_API_TOKEN (an access token or API key of the tenant)"))?;
    let tenant = args.tenant.trim();
    if tenant.is_empty() {
        bail!("--tenant must not be empty");
    }
    if let Some(raw) = &args.mapping {
        parse_mapping(raw)?;
    }
    if !(args.poll_interval > 0.0 && args.poll_interval <= 60.0) {
        bail!("--poll-interval must be between 0 and 60 seconds");
    }
    let content = read_file(&args.file)?;
    let file_name = args
        .file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "contacts.csv".to_owned());
    let api = Api::new(&args.gateway, token)?;

    let tenant_name = verify_tenant(&api, tenant).await?;
    let estimated_rows = estimate_rows(&content);
    eprintln!(
        "Uploading {file_name} ({} bytes, ~{} rows) to tenant {tenant} ({tenant_name})…",
        thousands(i64::try_from(content.len()).unwrap_or(i64::MAX)),
        thousands(i64::try_from(estimated_rows).unwrap_or(i64::MAX)),
    );

    let mut url = api.url(&["v1", "contact-imports"]);
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("file_name", &file_name);
        if let Some(mapping) = &args.mapping {
            q.append_pair("mapping", mapping);
        }
        if let Some(segment) = args.segment.as_deref().filter(|s| !s.trim().is_empty()) {
            q.append_pair("static_segment_id", segment.trim());
        }
        if args.skip_existing {
            q.append_pair("skip_existing", "true");
        }
    }
    let upload = api
        .http
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "text/csv; charset=utf-8")
        .timeout(Duration::from_secs(600))
        .body(content);
    let mut job = api.send(upload, "uploading the file").await?;
    let id = text(&job, "id").to_owned();
    if id.is_empty() {
        bail!("the gateway accepted the upload but returned no import id");
    }
    eprintln!(
        "Import {id} queued; following its progress (Ctrl-C stops watching, not the import)."
    );

    let mut progress = Progress {
        tty: std::io::stderr().is_terminal(),
        estimated_rows,
        last_line: None,
        drawn: false,
    };
    let interval = Duration::from_secs_f64(args.poll_interval);
    let mut failures = 0u32;
    while !is_final(text(&job, "status")) {
        progress.update(&job);
        tokio::time::sleep(interval).await;
        match api
            .get(&["v1", "contact-imports", &id], &[], "checking the import")
            .await
        {
            Ok(j) => {
                job = j;
                failures = 0;
            }
            // Transient trouble (a restarting gateway, a blip): keep watching for a while.
            Err(e)
                if failures < 10
                    && status_of(&e).is_none_or(|s| s.is_server_error() || s.as_u16() == 429) =>
            {
                failures += 1;
                progress.finish();
                eprintln!("warning: {e:#}; retrying");
            }
            Err(e) => {
                progress.finish();
                return Err(e.context(format!(
                    "lost track of import {id}; it continues on the server (GET /v1/contact-imports/{id})"
                )));
            }
        }
    }
    progress.update(&job);
    progress.finish();

    print_summary(&job);
    if let Err(e) = print_rejections(&api, &job, args.show_rejections).await {
        eprintln!("warning: {e:#}");
    }
    match text(&job, "status") {
        "completed" => Ok(()),
        "cancelled" => bail!("import {id} was cancelled"),
        _ => {
            let error = text(&job, "error");
            bail!(
                "import {id} failed{}",
                if error.is_empty() {
                    String::new()
                } else {
                    format!(": {error}")
                }
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn mapping_must_be_an_object_of_strings() {
        let m = parse_mapping(r#"{"E-Mail":"email","Firma":"attributes.company"}"#).unwrap();
        assert_eq!(m["Firma"], "attributes.company");
        for bad in ["{", "[]", r#"{"a": 1}"#, "\"email\""] {
            assert!(
                parse_mapping(bad)
                    .unwrap_err()
                    .to_string()
                    .contains("--mapping"),
                "{bad}"
            );
        }
    }

    #[test]
    fn counts_rows_and_formats_numbers() {
        assert_eq!(estimate_rows(b""), 0);
        assert_eq!(estimate_rows(b"email\n"), 0);
        assert_eq!(estimate_rows(b"email\na@x\nb@x\n"), 2);
        assert_eq!(estimate_rows(b"email\na@x\nb@x"), 2);
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(-45_000), "-45,000");
    }

    #[test]
    fn progress_lines() {
        let job = json!({
            "status": "running", "rows_read": "500", "rows_imported": "400",
            "rows_updated": "50", "rows_rejected": "50",
        });
        let bar = progress_line(&job, 1000, true);
        assert!(
            bar.starts_with(&format!("[{}{}]  50%", "█".repeat(15), "░".repeat(15))),
            "{bar}"
        );
        assert!(
            bar.ends_with("read 500 · imported 400 · updated 50 · rejected 50"),
            "{bar}"
        );
        let plain = progress_line(&job, 1000, false);
        assert!(
            plain.starts_with("running: 50% (500 of ~1,000 rows)"),
            "{plain}"
        );
        // More rows than estimated (quoted newlines): capped at 100%.
        assert!(progress_line(&job, 10, true).contains("100%"));
        assert!(progress_line(&job, 0, true).starts_with("running"));
    }

    #[test]
    fn problems_are_described_with_their_fields() {
        let body = r#"{"type":"x","title":"The request could not be parsed","status":400,
            "detail":"mapping: is not valid JSON","code":"malformed_request","request_id":"r1",
            "errors":[{"field":"mapping","message":"is not valid JSON"},
                      {"field":"file","message":"is empty"}]}"#;
        let msg = describe_error(StatusCode::BAD_REQUEST, body);
        assert_eq!(
            msg,
            "HTTP 400: mapping: is not valid JSON\n  file: is empty (request id r1)"
        );
        assert_eq!(
            describe_error(StatusCode::BAD_GATEWAY, "upstream down"),
            "HTTP 502 Bad Gateway: upstream down"
        );
        assert_eq!(
            describe_error(StatusCode::BAD_GATEWAY, ""),
            "HTTP 502 Bad Gateway"
        );
    }

    #[test]
    fn urls_keep_a_path_prefix_and_encode_segments() {
        let api = Api::new("https://api.example.com/cos", "t".into()).unwrap();
        assert_eq!(
            api.url(&["v1", "contact-imports", "a/b"]).as_str(),
            "https://api.example.com/cos/v1/contact-imports/a%2Fb"
        );
        let api = Api::new("http://127.0.0.1:8080", "t".into()).unwrap();
        assert_eq!(
            api.url(&["v1", "me"]).as_str(),
            "http://127.0.0.1:8080/v1/me"
        );
        assert!(Api::new("ftp://x", "t".into()).is_err());
        assert!(Api::new("not a url", "t".into()).is_err());
    }
}
