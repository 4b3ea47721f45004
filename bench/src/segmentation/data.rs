//! The benchmark's own database: created and migrated like any deployment
//! (`campaign_os::migrate`), one tenant (a user registered through the gateway), and a synthetic
//! audience generated in SQL (`generate.sql`). Kept between runs: a small table
//! `public.cos_bench_meta` records what was generated, and the data is reused when it matches.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use sqlx::{Connection as _, Executor as _, PgConnection, PgPool};
use uuid::Uuid;

/// Bump when `generate.sql` or the attribute catalog changes: stored data is then regenerated.
pub const GENERATOR_VERSION: &str = "seg-gen-1";

const GENERATE_SQL: &str = include_str!("generate.sql");

/// One soft-deleted contact every this many generated rows (g % 201 = 0 in generate.sql).
const DELETED_EVERY: u64 = 201;

/// The custom attributes the generator fills, as the tenant's catalog.
pub const ATTRIBUTES: &[(&str, &str, &str)] = &[
    ("plan", "Plan", "string"),
    ("score", "Lead score", "number"),
    ("signup_date", "Signup date", "date"),
    ("country", "Country", "string"),
    ("interests", "Interests", "string_list"),
];

/// What is in the database.
#[derive(Debug, Clone)]
pub struct Audience {
    pub rows: i64,
    pub live: i64,
    pub generated_at: String,
    /// Set when this run generated the data.
    pub generated_secs: Option<f64>,
    pub table_bytes: i64,
    pub indexes_bytes: i64,
}

pub fn url_with_database(base: &str, db: &str) -> String {
    match base.rsplit_once('/') {
        Some((head, tail)) => {
            let query = tail
                .split_once('?')
                .map(|(_, q)| format!("?{q}"))
                .unwrap_or_default();
            format!("{head}/{db}{query}")
        }
        None => format!("{base}/{db}"),
    }
}

fn check_name(db: &str) -> anyhow::Result<()> {
    let ok = db.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && db.len() <= 63
        && db
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    anyhow::ensure!(
        ok,
        "--database {db:?}: use lower-case letters, digits and _"
    );
    Ok(())
}

pub async fn drop_database(admin_url: &str, db: &str) -> anyhow::Result<()> {
    check_name(db)?;
    let mut conn = PgConnection::connect(admin_url).await?;
    conn.execute(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {db} WITH (FORCE)"
    )))
    .await?;
    conn.close().await?;
    Ok(())
}

/// Creates (if needed) and migrates the database. A database whose applied migrations no longer
/// match the code (the schema changed since the data was generated) is dropped and recreated.
pub async fn prepare(admin_url: &str, db: &str, regenerate: bool) -> anyhow::Result<String> {
    check_name(db)?;
    let url = url_with_database(admin_url, db);
    if regenerate {
        eprintln!("cos-bench: --regenerate: dropping database {db}");
        drop_database(admin_url, db).await?;
    }
    if let Err(e) = campaign_os::migrate(&url, "cos_app").await {
        eprintln!(
            "cos-bench: migrating {db} failed ({e:#}); the schema changed since its data was generated: dropping and recreating it"
        );
        drop_database(admin_url, db).await?;
        campaign_os::migrate(&url, "cos_app")
            .await
            .context("migrating the benchmark database")?;
    }
    let mut conn = PgConnection::connect(&url).await?;
    conn.execute(
        "CREATE TABLE IF NOT EXISTS public.cos_bench_meta (key text PRIMARY KEY, value text NOT NULL)",
    )
    .await?;
    conn.close().await?;
    Ok(url)
}

async fn meta(pool: &PgPool, key: &str) -> anyhow::Result<Option<String>> {
    Ok(
        sqlx::query_scalar("SELECT value FROM public.cos_bench_meta WHERE key = $1")
            .bind(key)
            .fetch_optional(pool)
            .await?,
    )
}

async fn set_meta(conn: &mut PgConnection, key: &str, value: &str) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO public.cos_bench_meta (key, value) VALUES ($1, $2)
         ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
    )
    .bind(key)
    .bind(value)
    .execute(conn)
    .await?;
    Ok(())
}

/// Rows to generate for `live` live contacts (plus one soft-deleted per 200 live).
fn total_rows(live: u64) -> u64 {
    // g % 201 = 0 is deleted: among `total` rows, floor(total / 201) are deleted.
    let mut total = live + live / (DELETED_EVERY - 1);
    while total - total / DELETED_EVERY < live {
        total += 1;
    }
    while total > 0 && total - 1 - (total - 1) / DELETED_EVERY >= live {
        total -= 1;
    }
    total
}

async fn sizes(pool: &PgPool) -> anyhow::Result<(i64, i64)> {
    Ok(sqlx::query_as(
        "SELECT pg_table_size('segmentation.contacts'), pg_indexes_size('segmentation.contacts')",
    )
    .fetch_one(pool)
    .await?)
}

/// The generated audience of `tenant`, generating it first unless the database already holds
/// exactly that (same generator, same size, same tenant).
pub async fn ensure(
    owner: &PgPool,
    url: &str,
    tenant: Uuid,
    live: u64,
) -> anyhow::Result<Audience> {
    let want = format!("{GENERATOR_VERSION}/{live}/{tenant}");
    if meta(owner, "audience").await?.as_deref() == Some(want.as_str()) {
        let (rows, live_now): (i64, i64) = sqlx::query_as(
            "SELECT count(*), count(*) FILTER (WHERE deleted_at IS NULL) FROM segmentation.contacts WHERE tenant_id = $1",
        )
        .bind(tenant)
        .fetch_one(owner)
        .await?;
        if live_now == live as i64 {
            let (table_bytes, indexes_bytes) = sizes(owner).await?;
            return Ok(Audience {
                rows,
                live: live_now,
                generated_at: meta(owner, "generated_at").await?.unwrap_or_default(),
                generated_secs: None,
                table_bytes,
                indexes_bytes,
            });
        }
        eprintln!(
            "cos-bench: the stored audience has {live_now} live contacts, expected {live}: regenerating"
        );
    }
    let started = Instant::now();
    generate(owner, url, tenant, live).await?;
    let secs = started.elapsed().as_secs_f64();
    let now = Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let mut conn = owner.acquire().await?;
    set_meta(&mut conn, "audience", &want).await?;
    set_meta(&mut conn, "generated_at", &now).await?;
    set_meta(&mut conn, "generated_secs", &format!("{secs:.1}")).await?;
    drop(conn);
    let (rows, live_now): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE deleted_at IS NULL) FROM segmentation.contacts WHERE tenant_id = $1",
    )
    .bind(tenant)
    .fetch_one(owner)
    .await?;
    anyhow::ensure!(
        live_now == live as i64,
        "generated {live_now} live contacts, expected {live}"
    );
    let (table_bytes, indexes_bytes) = sizes(owner).await?;
    Ok(Audience {
        rows,
        live: live_now,
        generated_at: now,
        generated_secs: Some(secs),
        table_bytes,
        indexes_bytes,
    })
}

async fn generate(owner: &PgPool, url: &str, tenant: Uuid, live: u64) -> anyhow::Result<()> {
    let total = total_rows(live);
    let now: DateTime<Utc> = Utc::now();
    eprintln!(
        "cos-bench: generating {live} live contacts (+{} soft-deleted) for tenant {tenant} ...",
        total - live
    );
    let mut conn = owner.acquire().await?;
    // This database holds only the benchmark tenant: start from empty tables, no bloat.
    sqlx::raw_sql(
        "TRUNCATE segmentation.contacts, segmentation.segments, segmentation.segment_members,
             segmentation.dirty_contacts, segmentation.attribute_definitions, segmentation.tenant_stats CASCADE",
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM public.cos_bench_meta WHERE key = 'audience'")
        .execute(&mut *conn)
        .await?;
    for (key, label, ty) in ATTRIBUTES {
        sqlx::query(
            "INSERT INTO segmentation.attribute_definitions (tenant_id, key, label, type, description)
             VALUES ($1, $2, $3, $4, 'cos-bench synthetic attribute')",
        )
        .bind(tenant)
        .bind(key)
        .bind(label)
        .bind(ty)
        .execute(&mut *conn)
        .await?;
    }
    // Secondary indexes are dropped during the bulk insert and rebuilt from their own
    // definitions afterwards (several times faster than maintaining two GIN indexes row by row).
    let indexes: Vec<(String, String)> = sqlx::query_as(
        "SELECT i.indexname::text, i.indexdef FROM pg_indexes i
         WHERE i.schemaname = 'segmentation' AND i.tablename = 'contacts'
           AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conname = i.indexname
                           AND k.conrelid = 'segmentation.contacts'::regclass)
         ORDER BY 1",
    )
    .fetch_all(&mut *conn)
    .await?;
    for (name, _) in &indexes {
        conn.execute(sqlx::AssertSqlSafe(format!(
            "DROP INDEX segmentation.{}",
            quote_ident(name)
        )))
        .await?;
    }
    drop(conn);
    // Two connections fill disjoint id ranges at once (the generator is CPU-bound in SQL).
    let chunk = 50_000u64;
    let ranges: Vec<(u64, u64)> = (0..total.div_ceil(chunk))
        .map(|i| (i * chunk + 1, ((i + 1) * chunk).min(total)))
        .collect();
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let ranges = std::sync::Arc::new(ranges);
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..crate::nproc().clamp(1, 4) {
        let (url, next, ranges) = (url.to_owned(), next.clone(), ranges.clone());
        workers.spawn(async move {
            let mut c = PgConnection::connect(&url).await?;
            c.execute("SET synchronous_commit = off").await?;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(&(from, to)) = ranges.get(i) else {
                    break;
                };
                let sql = GENERATE_SQL.replace(
                    "generate_series(1, $2::bigint)",
                    "generate_series($4::bigint, $5::bigint)",
                );
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(tenant)
                    .bind(total as i64)
                    .bind(now)
                    .bind(from as i64)
                    .bind(to as i64)
                    .execute(&mut c)
                    .await
                    .with_context(|| format!("generating rows {from}..{to}"))?;
                if i % 4 == 3 {
                    eprintln!(
                        "cos-bench:   {} of {} rows, {:.0} s",
                        to,
                        total,
                        started.elapsed().as_secs_f64()
                    );
                }
            }
            c.close().await?;
            anyhow::Ok(())
        });
    }
    while let Some(done) = workers.join_next().await {
        done.context("generator task panicked")??;
    }
    let mut conn = owner.acquire().await?;
    conn.execute("SET maintenance_work_mem = '512MB'").await?;
    for (name, def) in &indexes {
        let t = Instant::now();
        conn.execute(sqlx::AssertSqlSafe(def.clone())).await?;
        eprintln!(
            "cos-bench:   index {name} rebuilt in {:.1} s",
            t.elapsed().as_secs_f64()
        );
    }
    sqlx::query(
        "INSERT INTO segmentation.tenant_stats (tenant_id, live_contacts)
         SELECT $1, count(*) FROM segmentation.contacts WHERE tenant_id = $1 AND deleted_at IS NULL
         ON CONFLICT (tenant_id) DO UPDATE SET live_contacts = EXCLUDED.live_contacts",
    )
    .bind(tenant)
    .execute(&mut *conn)
    .await?;
    eprintln!("cos-bench:   VACUUM ANALYZE ...");
    // One statement each: several in one simple query would form a transaction block.
    for table in ["contacts", "attribute_definitions", "tenant_stats"] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "VACUUM (ANALYZE) segmentation.{table}"
        )))
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Removes segments left by earlier runs (the benchmark soft-deletes its segment at the end) and
/// empties the membership table, so every run starts from the same state: no segment, and a
/// membership table without statistics, as on a fresh deployment. (The plans PostgreSQL picks
/// for the member pages depend on those statistics; leftovers of an earlier run would change
/// them from run to run.)
pub async fn clean_segments(owner: &PgPool, tenant: Uuid) -> anyhow::Result<u64> {
    let gone = sqlx::query("DELETE FROM segmentation.segments WHERE tenant_id = $1")
        .bind(tenant)
        .execute(owner)
        .await?
        .rows_affected();
    // This database holds only the benchmark tenant.
    sqlx::raw_sql("TRUNCATE segmentation.segment_members")
        .execute(owner)
        .await?;
    sqlx::raw_sql(
        "DELETE FROM pg_catalog.pg_statistic WHERE starelid = 'segmentation.segment_members'::regclass",
    )
    .execute(owner)
    .await?;
    sqlx::query("DELETE FROM segmentation.dirty_contacts WHERE tenant_id = $1")
        .bind(tenant)
        .execute(owner)
        .await?;
    sqlx::raw_sql("VACUUM (ANALYZE) segmentation.segments")
        .execute(owner)
        .await?;
    // Flush dirty pages now (generation, the last run's membership) rather than have a
    // checkpoint write them in the background while counts are timed.
    sqlx::raw_sql("CHECKPOINT").execute(owner).await?;
    Ok(gone)
}

/// Distribution facts of the stored audience (printed with the results).
pub async fn facts(owner: &PgPool, tenant: Uuid) -> anyhow::Result<serde_json::Value> {
    let row: (i64, i64, i64, i64, i64, i64, i64, f64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE email IS NOT NULL), count(*) FILTER (WHERE phone IS NOT NULL),
                count(*) FILTER (WHERE email_consent = 'subscribed'),
                count(*) FILTER (WHERE 'beta-tester' = ANY(tags)),
                count(*) FILTER (WHERE 'newsletter' = ANY(tags)),
                count(*) FILTER (WHERE attributes->>'plan' IN ('pro', 'enterprise')),
                count(*) FILTER (WHERE last_activity_at IS NULL),
                avg(pg_column_size(c.*))::float8
         FROM segmentation.contacts c WHERE tenant_id = $1 AND deleted_at IS NULL",
    )
    .bind(tenant)
    .fetch_one(owner)
    .await?;
    Ok(serde_json::json!({
        "with_email": row.0,
        "with_phone": row.1,
        "email_subscribed": row.2,
        "tag_beta_tester": row.3,
        "tag_newsletter": row.4,
        "plan_pro_or_enterprise": row.5,
        "never_active": row.6,
        "avg_row_bytes": (row.7 * 10.0).round() / 10.0,
    }))
}

pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn total_rows_gives_exactly_the_live_count() {
        for live in [1u64, 199, 200, 201, 1000, 1_000_000, 12_345] {
            let total = total_rows(live);
            assert_eq!(total - total / DELETED_EVERY, live, "live {live}");
        }
    }
}
