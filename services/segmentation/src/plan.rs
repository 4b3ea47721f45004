//! Plan gating through billing's entitlements (cos-entitlements: Redis-cached, fails closed when
//! billing can't answer). Reads are never gated; creating contacts, segments and imports are.

use cos_entitlements::{CallAuth, EntitlementClient, Limit, plan_limit_error};
use cos_errors::ServiceError;
use uuid::Uuid;

use crate::error::Result;

#[derive(Clone)]
pub struct Plan {
    client: EntitlementClient,
}

/// What a contact-writing request may do. A read-only (expired) workspace may still change its
/// existing contacts (an unsubscribe must always be recordable) but not create new ones.
#[derive(Debug, Clone)]
pub struct ContactGate {
    pub plan: String,
    /// The plan's contact limit (None: unlimited); Some(0) when creating is not allowed.
    pub limit: Option<i64>,
    /// Why creating is refused altogether (read-only workspace), if it is.
    pub no_create: Option<ServiceError>,
}

impl ContactGate {
    pub fn over_limit_error(&self, limit: i64, usage: i64) -> ServiceError {
        match &self.no_create {
            Some(e) => e.clone(),
            None => plan_limit_error(&self.plan, Limit::Contacts, limit, usage, 1),
        }
    }
}

fn auth(bearer: Option<&str>) -> CallAuth {
    match bearer {
        Some(t) => CallAuth::Bearer(t.to_owned()),
        None => CallAuth::Service,
    }
}

impl Plan {
    pub fn new(client: EntitlementClient) -> Self {
        Self { client }
    }

    /// Refuses when the workspace is read-only (expired) or suspended.
    pub async fn ensure_can_write(&self, tenant: Uuid, bearer: Option<&str>) -> Result<()> {
        let e = self.client.get(tenant, &auth(bearer)).await?;
        e.ensure_can_create()?;
        Ok(())
    }

    /// Tells billing how many live contacts the workspace has (its usage page). A gauge: the
    /// latest value wins, so repeating a report is harmless.
    pub async fn report_contacts(&self, tenant: Uuid, live: i64) -> Result<()> {
        self.client
            .report_usage(tenant, Limit::Contacts, live, &CallAuth::Service)
            .await?;
        Ok(())
    }

    /// The workspace's contact limit, and whether it may create at all.
    pub async fn contact_gate(&self, tenant: Uuid, bearer: Option<&str>) -> Result<ContactGate> {
        let e = self.client.get(tenant, &auth(bearer)).await?;
        let no_create = e.ensure_can_create().err();
        Ok(ContactGate {
            plan: e.plan.clone(),
            limit: if no_create.is_some() {
                Some(0)
            } else {
                e.limit(Limit::Contacts)
            },
            no_create,
        })
    }
}
