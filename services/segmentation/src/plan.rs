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

/// What a contact-creating request may do.
#[derive(Debug, Clone)]
pub struct ContactGate {
    pub plan: String,
    /// The plan's contact limit (None: unlimited).
    pub limit: Option<i64>,
}

impl ContactGate {
    pub fn over_limit_error(&self, limit: i64, usage: i64) -> ServiceError {
        plan_limit_error(&self.plan, Limit::Contacts, limit, usage, 1)
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

    /// Checks the workspace may create and returns its contact limit.
    pub async fn contact_gate(&self, tenant: Uuid, bearer: Option<&str>) -> Result<ContactGate> {
        let e = self.client.get(tenant, &auth(bearer)).await?;
        e.ensure_can_create()?;
        Ok(ContactGate {
            plan: e.plan.clone(),
            limit: e.limit(Limit::Contacts),
        })
    }
}
