//! Background loops, safe to run on any number of replicas (work is claimed with SKIP LOCKED):
//! - imports: queued CSV imports (and imports whose worker went silent);
//! - membership: contacts changed since their dynamic memberships were evaluated;
//! - refresh: dynamic segments whose periodic refresh is due (relative-date criteria move
//!   contacts in and out with time alone);
//! - usage: workspaces whose live-contact count changed since billing was last told.
//!
//! Each loop wakes on its NOTIFY channel, or after the poll interval at the latest.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::error::Result;
use crate::grpc::SegmentationApi;
use crate::segments_ops::{self, TenantSegments};
use crate::{events, store};

/// Waits for a notification on `channel`, the poll interval, or shutdown (true).
async fn idle(
    listener: &mut Option<PgListener>,
    poll: Duration,
    shutdown: &CancellationToken,
) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => true,
        _ = tokio::time::sleep(poll) => false,
        r = async {
            match listener.as_mut() {
                Some(l) => l.recv().await.map(|_| ()),
                None => std::future::pending().await,
            }
        } => {
            if r.is_err() {
                // Reconnects lazily on the next round.
                *listener = None;
            }
            false
        }
    }
}

async fn listen(api: &SegmentationApi, channel: &str) -> Option<PgListener> {
    let mut l = PgListener::connect_with(api.db.pool()).await.ok()?;
    l.listen(channel).await.ok()?;
    Some(l)
}

pub async fn imports(api: Arc<SegmentationApi>, shutdown: CancellationToken) -> anyhow::Result<()> {
    let mut listener = None;
    loop {
        if shutdown.is_cancelled() {
            return Ok(());
        }
        if listener.is_none() {
            listener = listen(&api, store::IMPORT_CHANNEL).await;
        }
        let claimed = async {
            let mut tx = api.db.system_tx("claim import job").await?;
            let abandoned =
                store::imports::fail_abandoned(&mut tx, api.config.import_stale_after).await?;
            if abandoned > 0 {
                tracing::error!(
                    jobs = abandoned,
                    "import jobs failed after five crashed attempts"
                );
            }
            let job = store::imports::claim(&mut tx, api.config.import_stale_after).await?;
            tx.commit().await?;
            Ok::<_, crate::error::Error>(job)
        }
        .await;
        match claimed {
            Ok(Some((tenant, job))) => {
                if let Err(e) = crate::import::run_job(&api, tenant, job).await {
                    tracing::error!(%tenant, import = %job, error = %e, "import failed");
                    if let Ok(mut tx) = api.db.tenant_tx(tenant).await {
                        let _ = store::imports::finish(&mut tx, tenant, job, "failed", Some("internal error while importing; the rows counted so far were saved — contact support if it persists")).await;
                        let _ = tx.commit().await;
                    }
                }
                continue;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "claiming import jobs failed"),
        }
        if idle(&mut listener, api.config.worker_poll, &shutdown).await {
            return Ok(());
        }
    }
}

/// Re-evaluates one tenant's changed contacts against its dynamic segments; returns how many
/// contacts it took.
async fn drain_dirty(api: &SegmentationApi, tenant: Uuid) -> Result<usize> {
    let mut tx = api.db.tenant_tx(tenant).await?;
    let claimed: Vec<Uuid> = sqlx::query_scalar(
        "DELETE FROM segmentation.dirty_contacts WHERE tenant_id = $1 AND contact_id IN (
             SELECT contact_id FROM segmentation.dirty_contacts WHERE tenant_id = $1
             ORDER BY marked_at LIMIT $2 FOR UPDATE SKIP LOCKED)
         RETURNING contact_id",
    )
    .bind(tenant)
    .bind(api.config.dirty_batch)
    .fetch_all(&mut *tx)
    .await?;
    if claimed.is_empty() {
        tx.commit().await?;
        return Ok(0);
    }
    let catalog = store::attributes::catalog(&mut tx, tenant).await?;
    let segments = TenantSegments::load(&mut tx, tenant, &catalog).await?;
    for row in segments.rows.iter().filter(|r| r.kind == "dynamic") {
        // Lock order: segment ids ascending (rows are sorted), same as everywhere else.
        if store::segments::get(&mut tx, tenant, row.id, true)
            .await?
            .is_none()
        {
            continue;
        }
        let compiled = match segments_ops::compile_stored(row, &catalog, &segments, 4) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(%tenant, segment = %row.id, error = %e, "segment skipped: criteria no longer compile");
                continue;
            }
        };
        let (entered, exited) =
            store::segments::apply_criteria(&mut tx, tenant, row.id, &compiled, Some(&claimed))
                .await?;
        events::membership(&mut tx, tenant, row.id, &entered, &exited).await?;
    }
    tx.commit().await?;
    Ok(claimed.len())
}

pub async fn membership(
    api: Arc<SegmentationApi>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut listener = None;
    loop {
        if shutdown.is_cancelled() {
            return Ok(());
        }
        if listener.is_none() {
            listener = listen(&api, store::DIRTY_CHANNEL).await;
        }
        let tenants = async {
            let mut tx = api
                .db
                .system_tx("find tenants with changed contacts")
                .await?;
            let t: Vec<Uuid> = sqlx::query_scalar(
                "SELECT DISTINCT tenant_id FROM segmentation.dirty_contacts LIMIT 50",
            )
            .fetch_all(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok::<_, crate::error::Error>(t)
        }
        .await;
        let mut worked = 0;
        match tenants {
            Ok(tenants) => {
                for tenant in tenants {
                    match drain_dirty(&api, tenant).await {
                        Ok(n) => worked += n,
                        Err(e) => {
                            tracing::warn!(%tenant, error = %e, "membership update failed; will retry")
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "reading changed contacts failed"),
        }
        if worked > 0 {
            continue;
        }
        if idle(&mut listener, api.config.worker_poll, &shutdown).await {
            return Ok(());
        }
    }
}

pub async fn refresh(api: Arc<SegmentationApi>, shutdown: CancellationToken) -> anyhow::Result<()> {
    let mut listener = None;
    loop {
        if shutdown.is_cancelled() {
            return Ok(());
        }
        let due = async {
            let mut tx = api.db.system_tx("claim due segment refreshes").await?;
            let d = store::segments::claim_due(&mut tx, 10).await?;
            tx.commit().await?;
            Ok::<_, crate::error::Error>(d)
        }
        .await;
        let mut worked = false;
        match due {
            Ok(due) => {
                for (tenant, segment) in due {
                    worked = true;
                    let done = async {
                        let mut tx = api.db.tenant_tx(tenant).await?;
                        let r = segments_ops::refresh(&mut tx, tenant, segment, None, true).await?;
                        tx.commit().await?;
                        Ok::<_, crate::error::Error>(r)
                    }
                    .await;
                    match done {
                        Ok(Some((_, entered, exited))) => {
                            tracing::debug!(%tenant, %segment, entered, exited, "segment refreshed")
                        }
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!(%tenant, %segment, error = %e, "periodic segment refresh failed")
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "claiming segment refreshes failed"),
        }
        if worked {
            continue;
        }
        if idle(
            &mut listener,
            api.config.worker_poll.max(Duration::from_secs(5)),
            &shutdown,
        )
        .await
        {
            return Ok(());
        }
    }
}

/// Workspaces per usage round.
const USAGE_BATCH: i64 = 100;

/// Reports each workspace's live-contact count to billing when it differs from the value last
/// reported (a gauge: billing shows it on the usage page; limits are enforced here, from
/// `tenant_stats`, not from the report). Eventually consistent: a failed report is retried the
/// next round, and two replicas reporting the same tenant converge because each round re-reads
/// the count. Bulk imports produce one report per round, not one per row.
pub async fn usage(api: Arc<SegmentationApi>, shutdown: CancellationToken) -> anyhow::Result<()> {
    let poll = api.config.worker_poll.max(Duration::from_secs(2));
    loop {
        if shutdown.is_cancelled() {
            return Ok(());
        }
        let pending = async {
            let mut tx = api.db.system_tx("find unreported contact counts").await?;
            let rows = store::contacts::unreported_counts(&mut tx, USAGE_BATCH).await?;
            tx.commit().await?;
            Ok::<_, crate::error::Error>(rows)
        }
        .await;
        let mut failed = false;
        match pending {
            Ok(rows) => {
                for (tenant, live) in rows {
                    let done = async {
                        api.plan.report_contacts(tenant, live).await?;
                        let mut tx = api.db.tenant_tx(tenant).await?;
                        store::contacts::mark_reported(&mut tx, tenant, live).await?;
                        tx.commit().await?;
                        Ok::<_, crate::error::Error>(())
                    }
                    .await;
                    if let Err(e) = done {
                        // Billing down: stop this round and try again after the poll interval.
                        tracing::warn!(%tenant, error = %e, "reporting the contact count to billing failed");
                        failed = true;
                        break;
                    }
                    tracing::debug!(%tenant, live, "contact count reported to billing");
                }
            }
            Err(e) => tracing::warn!(error = %e, "finding unreported contact counts failed"),
        }
        let wait = if failed { poll * 5 } else { poll };
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(wait) => {}
        }
    }
}
