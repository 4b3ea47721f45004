//! Criteria glue: parse stored/submitted criteria against the tenant's catalog and segments,
//! compile them, and (re)materialise dynamic segments with their events.

use std::collections::{BTreeSet, HashMap};

use chrono::Utc;
use cos_errors::{FieldViolation, ServiceError};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::attributes::AttributeCatalog;
use crate::domain::criteria::{
    self, CompiledSql, Criteria, CriteriaError, Limits, SegmentRef, check_cycles,
};
use crate::error::{Error, Result};
use crate::events;
use crate::store::{self, segments::SegmentRow};

pub fn criteria_errors(errs: Vec<CriteriaError>) -> Error {
    ServiceError::invalid_fields(
        errs.into_iter()
            .map(|e| FieldViolation {
                field: e.path,
                message: e.message,
            })
            .collect(),
    )
    .into()
}

/// The tenant's segments as the compiler sees them. A stored criteria tree that no longer parses
/// (an attribute was deleted out from under it) leaves that segment unresolvable.
pub struct TenantSegments {
    pub rows: Vec<SegmentRow>,
    pub refs: HashMap<Uuid, SegmentRef>,
}

impl TenantSegments {
    pub async fn load(
        conn: &mut PgConnection,
        tenant: Uuid,
        catalog: &AttributeCatalog,
    ) -> Result<Self> {
        let rows = store::segments::all_live(conn, tenant).await?;
        let mut refs = HashMap::new();
        for row in &rows {
            match (&row.kind[..], &row.criteria) {
                ("static", _) => {
                    refs.insert(row.id, SegmentRef::Static);
                }
                ("dynamic", Some(c)) => match criteria::parse(&c.0, catalog, &Limits::default()) {
                    Ok(parsed) => {
                        refs.insert(row.id, SegmentRef::Dynamic(parsed));
                    }
                    Err(e) => {
                        tracing::warn!(segment = %row.id, errors = ?e, "stored segment criteria no longer valid")
                    }
                },
                _ => {}
            }
        }
        Ok(Self { rows, refs })
    }

    pub fn graph(&self, except: Option<Uuid>) -> HashMap<Uuid, BTreeSet<Uuid>> {
        self.rows
            .iter()
            .filter(|r| Some(r.id) != except)
            .map(|r| (r.id, r.depends_on.iter().copied().collect()))
            .collect()
    }
}

/// Parses submitted criteria for segment `id` and checks cycles and resolvability.
pub fn validate_criteria(
    json: &Value,
    id: Uuid,
    catalog: &AttributeCatalog,
    segments: &TenantSegments,
) -> Result<(Criteria, Vec<Uuid>)> {
    let parsed = criteria::parse(json, catalog, &Limits::default()).map_err(criteria_errors)?;
    let refs = parsed.referenced_segments();
    if refs.contains(&id) {
        return Err(ServiceError::invalid("criteria", "a segment cannot contain itself").into());
    }
    check_cycles(id, &refs, &segments.graph(Some(id)))
        .map_err(|m| ServiceError::invalid("criteria", m))?;
    criteria::compile(&parsed, &segments.refs, Utc::now(), 4).map_err(criteria_errors)?;
    Ok((parsed, refs.into_iter().collect()))
}

/// Compiles a stored segment's criteria (for refresh), parameters from `first_param`.
pub fn compile_stored(
    row: &SegmentRow,
    catalog: &AttributeCatalog,
    segments: &TenantSegments,
    first_param: usize,
) -> Result<CompiledSql> {
    let Some(SegmentRef::Dynamic(parsed)) = segments.refs.get(&row.id) else {
        let _ = catalog;
        return Err(ServiceError::failed_precondition(format!(
            "segment '{}' has criteria that no longer validate (was an attribute it uses deleted?); update its criteria",
            row.name
        ))
        .into());
    };
    criteria::compile(parsed, &segments.refs, Utc::now(), first_param).map_err(criteria_errors)
}

/// Re-evaluates a dynamic segment (whole tenant, or only `only`) under its row lock; emits
/// entered/exited events unless this is the segment's baseline materialisation.
pub async fn refresh(
    conn: &mut PgConnection,
    tenant: Uuid,
    segment: Uuid,
    only: Option<&[Uuid]>,
    emit_events: bool,
) -> Result<Option<(SegmentRow, usize, usize)>> {
    let Some(row) = store::segments::get(conn, tenant, segment, true).await? else {
        return Ok(None);
    };
    if row.kind != "dynamic" {
        return Ok(Some((row, 0, 0)));
    }
    let catalog = store::attributes::catalog(conn, tenant).await?;
    let segments = TenantSegments::load(conn, tenant, &catalog).await?;
    let compiled = compile_stored(&row, &catalog, &segments, 4)?;
    let (entered, exited) =
        store::segments::apply_criteria(conn, tenant, segment, &compiled, only).await?;
    if emit_events {
        events::membership(conn, tenant, segment, &entered, &exited).await?;
    }
    let row = store::segments::get(conn, tenant, segment, false)
        .await?
        .unwrap_or(row);
    Ok(Some((row, entered.len(), exited.len())))
}
