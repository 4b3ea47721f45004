//! The IdentityService gRPC implementation: maps protobuf to domain types, runs each change in
//! one transaction with its audit entry and outbox events, and mints tokens. Permission checks
//! happen before this code, in the auth layer, from each RPC's policy.

use std::sync::Arc;
use std::time::Duration;

use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use chrono::{DateTime, Utc};
use cos_auth::{
    Principal, PrincipalKind, Role, TokenIssuer, api_key_grantable, permissions_of, principal_of,
    random_token, sha256_hex,
};
use cos_db::Db;
use cos_errors::{ErrorCode, FieldViolation, ServiceError};
use cos_proto::identity::v1 as pb;
use cos_proto::identity::v1::identity_service_server::IdentityService;
use sqlx::PgConnection;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::domain::{
    DisplayName, Email, MembershipChange, Password, TenantName, check_membership_change, slug_base,
};
use crate::error::{Error, Result};
use crate::events;
use crate::store::{self, NewAudit};
use cos_entitlements::{CallAuth, EntitlementClient, Entitlements, Limit};

/// Everything the handlers need.
pub struct IdentityApi {
    pub(crate) db: Db,
    pub(crate) issuer: TokenIssuer,
    pub(crate) jwks: Vec<cos_auth::Jwk>,
    pub(crate) refresh_ttl: Duration,
    pub(crate) api_key_token_ttl: Duration,
    /// A real argon2id hash of a random password: verifying against it when the email is unknown
    /// makes "no such user" take as long as "wrong password".
    pub(crate) dummy_hash: String,
    /// Bounds concurrent argon2 work (memory- and CPU-hard by design).
    pub(crate) password_slots: Arc<tokio::sync::Semaphore>,
    /// Plan limits (seats, API keys) from billing; None when billing is not configured.
    pub(crate) entitlements: Option<EntitlementClient>,
}

const INVALID_CREDENTIALS: &str = "invalid email or password";
const INVALID_REFRESH: &str = "invalid or expired refresh token";
const API_KEY_PREFIX: &str = "cos_";
const MAX_PAGE: i32 = 200;

fn request_id<T>(req: &Request<T>) -> Option<String> {
    req.metadata()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn ts(t: DateTime<Utc>) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    })
}

fn parse_uuid(field: &str, raw: &str) -> Result<Uuid> {
    if raw.trim().is_empty() {
        return Err(ServiceError::invalid(field, "is required").into());
    }
    Uuid::parse_str(raw.trim())
        .map_err(|_| ServiceError::invalid(field, "is not a valid id").into())
}

fn parse_role(field: &str, raw: &str) -> Result<Role> {
    raw.parse::<Role>()
        .map_err(|m| ServiceError::invalid(field, m).into())
}

fn stored_role(raw: &str) -> Result<Role> {
    raw.parse::<Role>()
        .map_err(|_| Error::Internal(format!("unknown role {raw:?} in database")))
}

fn page_size(raw: i32) -> Result<i64> {
    match raw {
        0 => Ok(50),
        1..=MAX_PAGE => Ok(i64::from(raw)),
        _ => Err(
            ServiceError::invalid("page_size", format!("must be between 1 and {MAX_PAGE}")).into(),
        ),
    }
}

fn page_token(raw: &str) -> Result<Option<Uuid>> {
    if raw.is_empty() {
        return Ok(None);
    }
    Uuid::parse_str(raw)
        .map(Some)
        .map_err(|_| ServiceError::invalid("page_token", "is not a token this API issued").into())
}

fn user_pb(u: &store::UserRow, platform_admin: bool) -> pb::User {
    pb::User {
        id: u.id.to_string(),
        email: u.email.clone(),
        display_name: u.display_name.clone(),
        created_at: ts(u.created_at),
        platform_admin,
    }
}

fn tenant_pb(t: &store::TenantRow) -> pb::Tenant {
    pb::Tenant {
        id: t.id.to_string(),
        name: t.name.clone(),
        slug: t.slug.clone(),
        created_at: ts(t.created_at),
    }
}

fn member_pb(m: store::MemberRow) -> pb::Member {
    pb::Member {
        user_id: m.user_id.to_string(),
        email: m.email,
        display_name: m.display_name,
        role: m.role,
        joined_at: ts(m.joined_at),
    }
}

fn api_key_pb(k: store::ApiKeyRow) -> pb::ApiKey {
    pb::ApiKey {
        id: k.id.to_string(),
        name: k.name,
        masked_key: k.masked_key,
        scopes: k.scopes,
        created_by: k.created_by.to_string(),
        created_at: ts(k.created_at),
        last_used_at: k.last_used_at.and_then(ts),
        revoked_at: k.revoked_at.and_then(ts),
    }
}

fn violation(field: &str, message: String) -> FieldViolation {
    FieldViolation {
        field: field.to_owned(),
        message,
    }
}

/// Collects per-field parse results, so one response names every bad field.
fn collect<T>(
    field: &str,
    r: std::result::Result<T, String>,
    errs: &mut Vec<FieldViolation>,
) -> Option<T> {
    r.map_err(|m| errs.push(violation(field, m))).ok()
}

/// The caller's bearer token, to ask billing with.
fn call_auth<T>(req: &Request<T>) -> Result<CallAuth> {
    CallAuth::from_metadata(req.metadata())
        .ok_or_else(|| ServiceError::unauthenticated("missing bearer token").into())
}

/// How long a password operation waits for a free slot before telling the client to retry.
const PASSWORD_SLOT_WAIT: Duration = Duration::from_secs(10);

impl IdentityApi {
    /// The tenant's plan, asked before any transaction opens (a call to billing must not hold
    /// row locks). None when billing is not configured. Fails closed: when billing cannot be
    /// asked, the creation is refused with UNAVAILABLE rather than let through unchecked.
    async fn plan(&self, tenant_id: Uuid, auth: &CallAuth) -> Result<Option<Entitlements>> {
        match &self.entitlements {
            Some(client) => Ok(Some(client.get(tenant_id, auth).await?)),
            None => Ok(None),
        }
    }

    /// Tells billing the new value of a gauge for usage pages; best effort, off the request path.
    fn report_usage(&self, tenant_id: Uuid, limit: Limit, value: i64, auth: CallAuth) {
        if let Some(client) = self.entitlements.clone() {
            tokio::spawn(async move {
                if let Err(e) = client.report_usage(tenant_id, limit, value, &auth).await {
                    tracing::warn!(error = %e, %tenant_id, limit = limit.as_str(), "could not report usage to billing");
                }
            });
        }
    }

    /// Argon2id takes ~19 MiB and a core for tens of milliseconds per call; a bounded number run at
    /// once, so a burst of logins queues (then gets UNAVAILABLE) instead of exhausting memory.
    async fn password_slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit> {
        match tokio::time::timeout(
            PASSWORD_SLOT_WAIT,
            self.password_slots.clone().acquire_owned(),
        )
        .await
        {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(ServiceError::new(
                ErrorCode::Unavailable,
                "too many sign-ins in progress; retry shortly",
            )
            .into()),
        }
    }

    async fn hash_password(&self, password: Password) -> Result<String> {
        let permit = self.password_slot().await?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            argon2::Argon2::default()
                .hash_password(password.expose().as_bytes())
                .map(|h| h.to_string())
                .map_err(|e| Error::Internal(format!("password hashing failed: {e}")))
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))?
    }

    async fn password_matches(&self, password: String, hash: String) -> Result<bool> {
        let permit = self.password_slot().await?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            argon2::Argon2::default()
                .verify_password(password.as_bytes(), hash.as_str())
                .is_ok()
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))
    }

    /// The caller as the database sees them now, not as their token remembers them: a member
    /// demoted or removed while their access token is still valid must not keep the old powers
    /// for changes. (API-key principals are re-checked at every key exchange.)
    async fn current_principal(
        conn: &mut PgConnection,
        p: &Principal,
        permission: &str,
    ) -> Result<Principal> {
        let mut fresh = p.clone();
        if p.kind == PrincipalKind::User {
            let role = store::membership_role(conn, p.tenant_id, p.user_id)
                .await?
                .ok_or_else(|| {
                    ServiceError::permission_denied("you are no longer a member of this tenant")
                })?;
            fresh.role = stored_role(&role)?;
        }
        if !fresh.has(permission) {
            return Err(ServiceError::permission_denied(format!(
                "requires permission {permission}"
            ))
            .into());
        }
        Ok(fresh)
    }

    /// Platform administration is a flag operators set (`campaign-os platform-admin grant`), never
    /// something an account can claim by registering an address.
    fn is_platform_admin(&self, u: &store::UserRow) -> bool {
        u.platform_admin
    }

    fn user_principal(
        &self,
        u: &store::UserRow,
        tenant_id: Uuid,
        role: Role,
        session: Uuid,
    ) -> Principal {
        Principal {
            kind: PrincipalKind::User,
            user_id: u.id,
            tenant_id,
            role,
            api_key_id: None,
            scopes: Vec::new(),
            platform_admin: self.is_platform_admin(u),
            session_id: Some(session),
        }
    }

    /// Starts a session (a new refresh-token family) and returns its first token pair.
    async fn start_session(
        &self,
        conn: &mut PgConnection,
        u: &store::UserRow,
        tenant_id: Uuid,
        role: Role,
    ) -> Result<pb::Tokens> {
        let family = Uuid::now_v7();
        self.tokens_in_family(conn, u, tenant_id, role, family)
            .await
    }

    async fn tokens_in_family(
        &self,
        conn: &mut PgConnection,
        u: &store::UserRow,
        tenant_id: Uuid,
        role: Role,
        family: Uuid,
    ) -> Result<pb::Tokens> {
        let refresh = format!("rt_{}", random_token(32));
        let expires = Utc::now()
            + chrono::Duration::from_std(self.refresh_ttl).unwrap_or(chrono::Duration::days(30));
        store::insert_refresh(
            conn,
            tenant_id,
            family,
            u.id,
            &sha256_hex(&refresh),
            expires,
        )
        .await?;
        let principal = self.user_principal(u, tenant_id, role, family);
        let (access, expires_in) = self
            .issuer
            .issue(&principal)
            .map_err(|e| Error::Internal(e.to_string()))?;
        Ok(pb::Tokens {
            access_token: access,
            refresh_token: refresh,
            token_type: "Bearer".into(),
            expires_in,
        })
    }

    fn audit<'a>(
        p: &Principal,
        action: &'a str,
        target_type: &'a str,
        target_id: String,
        details: serde_json::Value,
        request_id: Option<&'a str>,
    ) -> NewAudit<'a> {
        NewAudit {
            tenant_id: p.tenant_id,
            actor_user_id: Some(p.user_id),
            actor_api_key_id: p.api_key_id,
            action,
            target_type,
            target_id,
            details,
            request_id,
        }
    }

    async fn register(&self, req: Request<pb::RegisterRequest>) -> Result<pb::AuthResponse> {
        let rid = request_id(&req);
        let r = req.into_inner();
        let mut errs = Vec::new();
        let email = collect("email", Email::parse(&r.email), &mut errs);
        let password = collect("password", Password::parse(&r.password), &mut errs);
        let display = collect(
            "display_name",
            DisplayName::parse(&r.display_name),
            &mut errs,
        );
        let tenant_name = collect("tenant_name", TenantName::parse(&r.tenant_name), &mut errs);
        let (Some(email), Some(password), Some(display), Some(tenant_name)) =
            (email, password, display, tenant_name)
        else {
            return Err(ServiceError::invalid_fields(errs).into());
        };
        let password_hash = self.hash_password(password).await?;
        let now = Utc::now();
        let user = store::UserRow {
            id: Uuid::now_v7(),
            email: email.as_str().to_owned(),
            display_name: display.0,
            password_hash,
            platform_admin: false,
            created_at: now,
        };
        let tenant = store::TenantRow {
            id: Uuid::now_v7(),
            slug: format!(
                "{}-{}",
                slug_base(&tenant_name.0),
                &Uuid::new_v4().simple().to_string()[..12]
            ),
            name: tenant_name.0,
            created_at: now,
        };
        // The new tenant's own transaction: RLS checks every tenant-owned row we write.
        let mut tx = self.db.tenant_tx(tenant.id).await?;
        if let Err(e) = store::insert_user(&mut tx, &user, email.normalized()).await {
            if cos_db::unique_violation(&e) == Some("users_email_key") {
                return Err(ServiceError::already_exists(
                    "an account with this email already exists",
                )
                .with_violation("email", "is already registered")
                .into());
            }
            return Err(e.into());
        }
        store::insert_tenant(&mut tx, &tenant, user.id).await?;
        store::insert_membership(&mut tx, tenant.id, user.id, Role::Owner.as_str()).await?;
        let tokens = self
            .start_session(&mut tx, &user, tenant.id, Role::Owner)
            .await?;
        let owner = self.user_principal(&user, tenant.id, Role::Owner, Uuid::nil());
        let rid = rid.as_deref();
        store::insert_audit(
            &mut tx,
            Self::audit(
                &owner,
                "user.registered",
                "user",
                user.id.to_string(),
                serde_json::json!({"email": user.email}),
                rid,
            ),
        )
        .await?;
        store::insert_audit(
            &mut tx,
            Self::audit(
                &owner,
                "tenant.created",
                "tenant",
                tenant.id.to_string(),
                serde_json::json!({"name": tenant.name}),
                rid,
            ),
        )
        .await?;
        events::emit(
            &mut tx,
            events::USER_REGISTERED,
            tenant.id,
            &pb::UserRegistered {
                user_id: user.id.to_string(),
                email: user.email.clone(),
                display_name: user.display_name.clone(),
            },
        )
        .await?;
        emit_tenant_created(&mut tx, &tenant, user.id).await?;
        tx.commit().await?;
        tracing::info!(user_id = %user.id, tenant_id = %tenant.id, "user registered");
        Ok(pb::AuthResponse {
            user: Some(user_pb(&user, self.is_platform_admin(&user))),
            tenant: Some(tenant_pb(&tenant)),
            tokens: Some(tokens),
            role: Role::Owner.as_str().into(),
        })
    }

    async fn login(&self, req: Request<pb::LoginRequest>) -> Result<pb::AuthResponse> {
        let rid = request_id(&req);
        let r = req.into_inner();
        let mut errs = Vec::new();
        if r.email.trim().is_empty() {
            errs.push(violation("email", "is required".into()));
        }
        if r.password.is_empty() {
            errs.push(violation("password", "is required".into()));
        }
        if !errs.is_empty() {
            return Err(ServiceError::invalid_fields(errs).into());
        }
        let wanted_tenant = if r.tenant_id.is_empty() {
            None
        } else {
            Some(parse_uuid("tenant_id", &r.tenant_id)?)
        };
        let email = Email::parse(&r.email).map_err(|m| ServiceError::invalid("email", m))?;
        let normalized = email.normalized().to_owned();
        let user = {
            let mut tx = self.db.app_tx().await?;
            let u = store::user_by_email(&mut tx, &normalized).await?;
            tx.commit().await?;
            u
        };
        let Some(user) = user else {
            // Same work, same answer as a wrong password.
            let _ = self
                .password_matches(r.password, self.dummy_hash.clone())
                .await?;
            return Err(ServiceError::unauthenticated(INVALID_CREDENTIALS).into());
        };
        if !self
            .password_matches(r.password, user.password_hash.clone())
            .await?
        {
            return Err(ServiceError::unauthenticated(INVALID_CREDENTIALS).into());
        }
        let memberships = {
            let mut tx = self.db.system_tx("login: list the user's tenants").await?;
            let m = store::memberships_of_user(&mut tx, user.id).await?;
            tx.commit().await?;
            m
        };
        let chosen = match wanted_tenant {
            Some(t) => memberships.into_iter().find(|m| m.id == t).ok_or_else(|| {
                ServiceError::new(ErrorCode::NotFound, "tenant not found")
                    .with_violation("tenant_id", "you are not a member of this tenant")
            })?,
            None => memberships.into_iter().next().ok_or_else(|| {
                ServiceError::permission_denied("this account is not a member of any tenant")
            })?,
        };
        let role = stored_role(&chosen.role)?;
        let mut tx = self.db.tenant_tx(chosen.id).await?;
        let tokens = self.start_session(&mut tx, &user, chosen.id, role).await?;
        let p = self.user_principal(&user, chosen.id, role, Uuid::nil());
        store::insert_audit(
            &mut tx,
            Self::audit(
                &p,
                "session.created",
                "user",
                user.id.to_string(),
                serde_json::json!({"method": "password"}),
                rid.as_deref(),
            ),
        )
        .await?;
        tx.commit().await?;
        let tenant = store::TenantRow {
            id: chosen.id,
            name: chosen.name,
            slug: chosen.slug,
            created_at: chosen.created_at,
        };
        Ok(pb::AuthResponse {
            user: Some(user_pb(&user, self.is_platform_admin(&user))),
            tenant: Some(tenant_pb(&tenant)),
            tokens: Some(tokens),
            role: role.as_str().into(),
        })
    }

    async fn refresh(&self, req: Request<pb::RefreshRequest>) -> Result<pb::RefreshResponse> {
        let rid = request_id(&req);
        let presented = req.into_inner().refresh_token;
        if presented.is_empty() {
            return Err(ServiceError::invalid("refresh_token", "is required").into());
        }
        let mut tx = self
            .db
            .system_tx("refresh: find the session of a refresh token")
            .await?;
        let Some(row) = store::refresh_by_hash_for_update(&mut tx, &sha256_hex(&presented)).await?
        else {
            return Err(ServiceError::unauthenticated(INVALID_REFRESH).into());
        };
        // One session at a time: refresh, reuse handling and logout of a family serialise here,
        // so a revocation can never miss the token a concurrent refresh is minting.
        store::lock_family(&mut tx, row.family_id).await?;
        if row.revoked_at.is_some()
            || row.expires_at <= Utc::now()
            || store::family_revoked(&mut tx, row.family_id).await?
        {
            return Err(ServiceError::unauthenticated(INVALID_REFRESH).into());
        }
        if row.used_at.is_some() {
            // A rotated token came back: someone holds a copy. End the whole session.
            let revoked = store::revoke_family(&mut tx, row.family_id).await?;
            store::insert_audit(
                &mut tx,
                NewAudit {
                    tenant_id: row.tenant_id,
                    actor_user_id: Some(row.user_id),
                    actor_api_key_id: None,
                    action: "session.reuse_detected",
                    target_type: "session",
                    target_id: row.family_id.to_string(),
                    details: serde_json::json!({"revoked_tokens": revoked}),
                    request_id: rid.as_deref(),
                },
            )
            .await?;
            tx.commit().await?;
            tracing::warn!(user_id = %row.user_id, tenant_id = %row.tenant_id, family = %row.family_id, "refresh token reuse: session revoked");
            return Err(ServiceError::unauthenticated(
                "refresh token was already used; the session has been revoked",
            )
            .into());
        }
        let role = match store::membership_role(&mut tx, row.tenant_id, row.user_id).await? {
            Some(r) => stored_role(&r)?,
            None => {
                store::revoke_family(&mut tx, row.family_id).await?;
                tx.commit().await?;
                return Err(ServiceError::unauthenticated(INVALID_REFRESH).into());
            }
        };
        let user = store::user_by_id(&mut tx, row.user_id)
            .await?
            .ok_or_else(|| Error::Internal("refresh token of a deleted user".into()))?;
        store::mark_refresh_used(&mut tx, row.id).await?;
        let tokens = self
            .tokens_in_family(&mut tx, &user, row.tenant_id, role, row.family_id)
            .await?;
        tx.commit().await?;
        Ok(pb::RefreshResponse {
            tokens: Some(tokens),
        })
    }

    async fn logout(&self, req: Request<pb::LogoutRequest>) -> Result<pb::LogoutResponse> {
        let rid = request_id(&req);
        let presented = req.into_inner().refresh_token;
        if presented.is_empty() {
            return Err(ServiceError::invalid("refresh_token", "is required").into());
        }
        let mut tx = self
            .db
            .system_tx("logout: revoke the session of a refresh token")
            .await?;
        // An unknown token is not an error: logging out twice is fine, and saying "unknown"
        // would confirm guesses.
        if let Some(row) =
            store::refresh_by_hash_for_update(&mut tx, &sha256_hex(&presented)).await?
        {
            store::lock_family(&mut tx, row.family_id).await?;
            let revoked = store::revoke_family(&mut tx, row.family_id).await?;
            if revoked > 0 {
                store::insert_audit(
                    &mut tx,
                    NewAudit {
                        tenant_id: row.tenant_id,
                        actor_user_id: Some(row.user_id),
                        actor_api_key_id: None,
                        action: "session.revoked",
                        target_type: "session",
                        target_id: row.family_id.to_string(),
                        details: serde_json::json!({}),
                        request_id: rid.as_deref(),
                    },
                )
                .await?;
            }
        }
        tx.commit().await?;
        Ok(pb::LogoutResponse {})
    }

    async fn get_me(&self, p: &Principal) -> Result<pb::GetMeResponse> {
        let mut tx = self.db.tenant_tx(p.tenant_id).await?;
        let tenant = store::tenant(&mut tx, p.tenant_id).await?;
        let user = store::user_by_id(&mut tx, p.user_id).await?;
        let role = match p.kind {
            PrincipalKind::User => store::membership_role(&mut tx, p.tenant_id, p.user_id).await?,
            PrincipalKind::ApiKey => Some(p.role.as_str().to_owned()),
        };
        tx.commit().await?;
        let (Some(tenant), Some(user), Some(role)) = (tenant, user, role) else {
            return Err(ServiceError::permission_denied(
                "you are no longer a member of this tenant",
            )
            .into());
        };
        let role = stored_role(&role)?;
        let permissions = permissions_of(role)
            .into_iter()
            .filter(|perm| p.has(perm))
            .map(str::to_owned)
            .collect();
        Ok(pb::GetMeResponse {
            user: Some(user_pb(&user, self.is_platform_admin(&user))),
            tenant: Some(tenant_pb(&tenant)),
            role: role.as_str().into(),
            permissions,
        })
    }

    async fn list_my_tenants(&self, p: &Principal) -> Result<pb::ListMyTenantsResponse> {
        let mut tx = self.db.system_tx("list the caller's own tenants").await?;
        let rows = store::memberships_of_user(&mut tx, p.user_id).await?;
        tx.commit().await?;
        Ok(pb::ListMyTenantsResponse {
            tenants: rows
                .into_iter()
                .map(|m| pb::TenantMembership {
                    tenant: Some(pb::Tenant {
                        id: m.id.to_string(),
                        name: m.name,
                        slug: m.slug,
                        created_at: ts(m.created_at),
                    }),
                    role: m.role,
                })
                .collect(),
        })
    }

    async fn create_tenant(
        &self,
        req: Request<pb::CreateTenantRequest>,
    ) -> Result<pb::SwitchTenantResponse> {
        let p = principal_of(&req)?.clone();
        let rid = request_id(&req);
        let name =
            TenantName::parse(&req.get_ref().name).map_err(|m| ServiceError::invalid("name", m))?;
        let tenant = store::TenantRow {
            id: Uuid::now_v7(),
            slug: format!(
                "{}-{}",
                slug_base(&name.0),
                &Uuid::new_v4().simple().to_string()[..12]
            ),
            name: name.0,
            created_at: Utc::now(),
        };
        let mut tx = self.db.tenant_tx(tenant.id).await?;
        let user = store::user_by_id(&mut tx, p.user_id)
            .await?
            .ok_or_else(|| ServiceError::unauthenticated("unknown user"))?;
        store::insert_tenant(&mut tx, &tenant, user.id).await?;
        store::insert_membership(&mut tx, tenant.id, user.id, Role::Owner.as_str()).await?;
        let tokens = self
            .start_session(&mut tx, &user, tenant.id, Role::Owner)
            .await?;
        let owner = Principal {
            tenant_id: tenant.id,
            ..p.clone()
        };
        store::insert_audit(
            &mut tx,
            Self::audit(
                &owner,
                "tenant.created",
                "tenant",
                tenant.id.to_string(),
                serde_json::json!({"name": tenant.name}),
                rid.as_deref(),
            ),
        )
        .await?;
        emit_tenant_created(&mut tx, &tenant, user.id).await?;
        tx.commit().await?;
        Ok(pb::SwitchTenantResponse {
            tenant: Some(tenant_pb(&tenant)),
            role: Role::Owner.as_str().into(),
            tokens: Some(tokens),
        })
    }

    async fn switch_tenant(
        &self,
        req: Request<pb::SwitchTenantRequest>,
    ) -> Result<pb::SwitchTenantResponse> {
        let p = principal_of(&req)?.clone();
        let rid = request_id(&req);
        let target = parse_uuid("tenant_id", &req.get_ref().tenant_id)?;
        let mut tx = self.db.tenant_tx(target).await?;
        // Not a member and no such tenant look the same: 404.
        let role = store::membership_role(&mut tx, target, p.user_id)
            .await?
            .ok_or_else(|| ServiceError::not_found("tenant"))?;
        let role = stored_role(&role)?;
        let tenant = store::tenant(&mut tx, target)
            .await?
            .ok_or_else(|| ServiceError::not_found("tenant"))?;
        let user = store::user_by_id(&mut tx, p.user_id)
            .await?
            .ok_or_else(|| ServiceError::unauthenticated("unknown user"))?;
        let tokens = self.start_session(&mut tx, &user, target, role).await?;
        let actor = Principal {
            tenant_id: target,
            ..p.clone()
        };
        let details = serde_json::json!({"method": "switch_tenant", "from_tenant": p.tenant_id});
        store::insert_audit(
            &mut tx,
            Self::audit(
                &actor,
                "session.created",
                "user",
                user.id.to_string(),
                details,
                rid.as_deref(),
            ),
        )
        .await?;
        tx.commit().await?;
        Ok(pb::SwitchTenantResponse {
            tenant: Some(tenant_pb(&tenant)),
            role: role.as_str().into(),
            tokens: Some(tokens),
        })
    }

    async fn list_members(&self, p: &Principal) -> Result<pb::ListMembersResponse> {
        let mut tx = self.db.tenant_tx(p.tenant_id).await?;
        let rows = store::members(&mut tx, p.tenant_id).await?;
        tx.commit().await?;
        Ok(pb::ListMembersResponse {
            members: rows.into_iter().map(member_pb).collect(),
        })
    }

    async fn add_member(&self, req: Request<pb::AddMemberRequest>) -> Result<pb::Member> {
        let p = principal_of(&req)?.clone();
        let rid = request_id(&req);
        let auth = call_auth(&req)?;
        let r = req.into_inner();
        let mut errs = Vec::new();
        let email = collect("email", Email::parse(&r.email), &mut errs);
        let role = collect("role", r.role.parse::<Role>(), &mut errs);
        let (Some(email), Some(role)) = (email, role) else {
            return Err(ServiceError::invalid_fields(errs).into());
        };
        let plan = self.plan(p.tenant_id, &auth).await?;
        if let Some(plan) = &plan {
            plan.ensure_can_create()?;
        }
        let mut tx = self.db.tenant_tx(p.tenant_id).await?;
        store::lock_tenant(&mut tx, p.tenant_id).await?;
        let p = Self::current_principal(&mut tx, &p, "members.write").await?;
        check_membership_change(p.role, MembershipChange::Add { role }, 0)
            .map_err(ServiceError::permission_denied)?;
        let user = store::user_by_email(&mut tx, email.normalized())
            .await?
            .ok_or_else(|| {
                ServiceError::not_found("user").with_violation(
                    "email",
                    "no account uses this email; ask them to register first",
                )
            })?;
        let seats = store::count_members(&mut tx, p.tenant_id).await?;
        if let Some(plan) = &plan {
            if store::membership_role(&mut tx, p.tenant_id, user.id)
                .await?
                .is_some()
            {
                return Err(
                    ServiceError::already_exists("this user is already a member")
                        .with_violation("email", "is already a member")
                        .into(),
                );
            }
            plan.check_limit(Limit::Seats, seats, 1)?;
        }
        if let Err(e) = store::insert_membership(&mut tx, p.tenant_id, user.id, role.as_str()).await
        {
            if cos_db::unique_violation(&e) == Some("memberships_pkey") {
                return Err(
                    ServiceError::already_exists("this user is already a member")
                        .with_violation("email", "is already a member")
                        .into(),
                );
            }
            return Err(e.into());
        }
        store::insert_audit(
            &mut tx,
            Self::audit(
                &p,
                "member.added",
                "user",
                user.id.to_string(),
                serde_json::json!({"role": role.as_str()}),
                rid.as_deref(),
            ),
        )
        .await?;
        events::emit(
            &mut tx,
            events::MEMBER_ADDED,
            p.tenant_id,
            &pb::MemberChanged {
                tenant_id: p.tenant_id.to_string(),
                user_id: user.id.to_string(),
                role: role.as_str().into(),
                previous_role: String::new(),
                actor_user_id: p.user_id.to_string(),
            },
        )
        .await?;
        let member = store::member(&mut tx, p.tenant_id, user.id)
            .await?
            .ok_or_else(|| Error::Internal("member vanished".into()))?;
        tx.commit().await?;
        self.report_usage(p.tenant_id, Limit::Seats, seats + 1, auth);
        Ok(member_pb(member))
    }

    async fn update_member(&self, req: Request<pb::UpdateMemberRequest>) -> Result<pb::Member> {
        let p = principal_of(&req)?.clone();
        let rid = request_id(&req);
        let r = req.into_inner();
        let user_id = parse_uuid("user_id", &r.user_id)?;
        let new = parse_role("role", &r.role)?;
        let mut tx = self.db.tenant_tx(p.tenant_id).await?;
        let owners = store::lock_owners(&mut tx, p.tenant_id).await?;
        // Read after the owner rows are locked, so a concurrent demotion of the caller is seen.
        let p = Self::current_principal(&mut tx, &p, "members.write").await?;
        let current = store::membership_role_for_update(&mut tx, p.tenant_id, user_id)
            .await?
            .ok_or_else(|| ServiceError::not_found("member"))?;
        let current = stored_role(&current)?;
        check_membership_change(p.role, MembershipChange::SetRole { current, new }, owners)
            .map_err(|m| {
                if m.starts_with("the last owner") {
                    ServiceError::failed_precondition(m)
                } else {
                    ServiceError::permission_denied(m)
                }
            })?;
        if current != new {
            store::set_role(&mut tx, p.tenant_id, user_id, new.as_str()).await?;
            store::insert_audit(
                &mut tx,
                Self::audit(
                    &p,
                    "member.role_changed",
                    "user",
                    user_id.to_string(),
                    serde_json::json!({"from": current.as_str(), "to": new.as_str()}),
                    rid.as_deref(),
                ),
            )
            .await?;
            events::emit(
                &mut tx,
                events::MEMBER_ROLE_CHANGED,
                p.tenant_id,
                &pb::MemberChanged {
                    tenant_id: p.tenant_id.to_string(),
                    user_id: user_id.to_string(),
                    role: new.as_str().into(),
                    previous_role: current.as_str().into(),
                    actor_user_id: p.user_id.to_string(),
                },
            )
            .await?;
        }
        let member = store::member(&mut tx, p.tenant_id, user_id)
            .await?
            .ok_or_else(|| ServiceError::not_found("member"))?;
        tx.commit().await?;
        Ok(member_pb(member))
    }

    async fn remove_member(
        &self,
        req: Request<pb::RemoveMemberRequest>,
    ) -> Result<pb::RemoveMemberResponse> {
        let p = principal_of(&req)?.clone();
        let rid = request_id(&req);
        let user_id = parse_uuid("user_id", &req.get_ref().user_id)?;
        let mut tx = self.db.tenant_tx(p.tenant_id).await?;
        let owners = store::lock_owners(&mut tx, p.tenant_id).await?;
        // Read after the owner rows are locked, so a concurrent demotion of the caller is seen.
        let p = Self::current_principal(&mut tx, &p, "members.write").await?;
        let current = store::membership_role_for_update(&mut tx, p.tenant_id, user_id)
            .await?
            .ok_or_else(|| ServiceError::not_found("member"))?;
        let current = stored_role(&current)?;
        check_membership_change(p.role, MembershipChange::Remove { current }, owners).map_err(
            |m| {
                if m.starts_with("the last owner") {
                    ServiceError::failed_precondition(m)
                } else {
                    ServiceError::permission_denied(m)
                }
            },
        )?;
        store::delete_membership(&mut tx, p.tenant_id, user_id).await?;
        let seats = store::count_members(&mut tx, p.tenant_id).await?;
        let sessions = store::revoke_user_sessions(&mut tx, p.tenant_id, user_id).await?;
        store::insert_audit(
            &mut tx,
            Self::audit(
                &p,
                "member.removed",
                "user",
                user_id.to_string(),
                serde_json::json!({"role": current.as_str(), "revoked_sessions": sessions}),
                rid.as_deref(),
            ),
        )
        .await?;
        events::emit(
            &mut tx,
            events::MEMBER_REMOVED,
            p.tenant_id,
            &pb::MemberChanged {
                tenant_id: p.tenant_id.to_string(),
                user_id: user_id.to_string(),
                role: String::new(),
                previous_role: current.as_str().into(),
                actor_user_id: p.user_id.to_string(),
            },
        )
        .await?;
        tx.commit().await?;
        if let Ok(auth) = call_auth(&req) {
            self.report_usage(p.tenant_id, Limit::Seats, seats, auth);
        }
        Ok(pb::RemoveMemberResponse {})
    }

    async fn list_api_keys(&self, p: &Principal) -> Result<pb::ListApiKeysResponse> {
        let mut tx = self.db.tenant_tx(p.tenant_id).await?;
        let rows = store::api_keys(&mut tx, p.tenant_id).await?;
        tx.commit().await?;
        Ok(pb::ListApiKeysResponse {
            api_keys: rows.into_iter().map(api_key_pb).collect(),
        })
    }

    async fn create_api_key(
        &self,
        req: Request<pb::CreateApiKeyRequest>,
    ) -> Result<pb::CreateApiKeyResponse> {
        let p = principal_of(&req)?.clone();
        let rid = request_id(&req);
        let auth = call_auth(&req)?;
        let r = req.into_inner();
        let plan = self.plan(p.tenant_id, &auth).await?;
        // Scopes are checked against what the caller holds now, so the transaction starts first;
        // a validation error rolls it back with nothing written.
        let mut tx = self.db.tenant_tx(p.tenant_id).await?;
        store::lock_tenant(&mut tx, p.tenant_id).await?;
        let p = Self::current_principal(&mut tx, &p, "api_keys.write").await?;
        let mut errs = Vec::new();
        let name = collect("name", DisplayName::parse(&r.name), &mut errs);
        let mut scopes: Vec<String> = Vec::new();
        for (i, s) in r.scopes.iter().enumerate() {
            if !api_key_grantable(s) {
                errs.push(violation(
                    &format!("scopes[{i}]"),
                    format!("{s:?} is not a permission an API key can hold"),
                ));
            } else if !p.has(s) {
                errs.push(violation(
                    &format!("scopes[{i}]"),
                    format!("you do not hold {s:?} yourself"),
                ));
            } else if !scopes.contains(s) {
                scopes.push(s.clone());
            }
        }
        let Some(name) = name else {
            return Err(ServiceError::invalid_fields(errs).into());
        };
        if !errs.is_empty() {
            return Err(ServiceError::invalid_fields(errs).into());
        }
        let keys = store::count_active_api_keys(&mut tx, p.tenant_id).await?;
        if let Some(plan) = &plan {
            plan.check_limit(Limit::ApiKeys, keys, 1)?;
        }
        if scopes.is_empty() {
            scopes = permissions_of(p.role)
                .into_iter()
                .filter(|s| api_key_grantable(s))
                .map(str::to_owned)
                .collect();
        }
        let secret = format!("{API_KEY_PREFIX}{}", random_token(32));
        let row = store::ApiKeyRow {
            id: Uuid::now_v7(),
            tenant_id: p.tenant_id,
            name: name.0,
            masked_key: cos_crypto::mask(&secret),
            role: p.role.as_str().into(),
            scopes,
            created_by: p.user_id,
            created_at: Utc::now(),
            last_used_at: None,
            revoked_at: None,
        };
        store::insert_api_key(&mut tx, &row, &sha256_hex(&secret)).await?;
        store::insert_audit(
            &mut tx,
            Self::audit(
                &p,
                "api_key.created",
                "api_key",
                row.id.to_string(),
                serde_json::json!({"name": row.name, "scopes": row.scopes}),
                rid.as_deref(),
            ),
        )
        .await?;
        events::emit(
            &mut tx,
            events::API_KEY_CREATED,
            p.tenant_id,
            &pb::ApiKeyChanged {
                tenant_id: p.tenant_id.to_string(),
                api_key_id: row.id.to_string(),
                name: row.name.clone(),
                scopes: row.scopes.clone(),
                actor_user_id: p.user_id.to_string(),
            },
        )
        .await?;
        tx.commit().await?;
        self.report_usage(p.tenant_id, Limit::ApiKeys, keys + 1, auth);
        Ok(pb::CreateApiKeyResponse {
            api_key: Some(api_key_pb(row)),
            secret,
        })
    }

    async fn revoke_api_key(
        &self,
        req: Request<pb::RevokeApiKeyRequest>,
    ) -> Result<pb::RevokeApiKeyResponse> {
        let p = principal_of(&req)?.clone();
        let rid = request_id(&req);
        let id = parse_uuid("api_key_id", &req.get_ref().api_key_id)?;
        let mut tx = self.db.tenant_tx(p.tenant_id).await?;
        let p = Self::current_principal(&mut tx, &p, "api_keys.write").await?;
        let key = store::api_key_for_update(&mut tx, p.tenant_id, id)
            .await?
            .ok_or_else(|| ServiceError::not_found("API key"))?;
        let revoked_now = key.revoked_at.is_none();
        if revoked_now {
            store::revoke_api_key(&mut tx, id).await?;
            store::insert_audit(
                &mut tx,
                Self::audit(
                    &p,
                    "api_key.revoked",
                    "api_key",
                    id.to_string(),
                    serde_json::json!({"name": key.name}),
                    rid.as_deref(),
                ),
            )
            .await?;
            events::emit(
                &mut tx,
                events::API_KEY_REVOKED,
                p.tenant_id,
                &pb::ApiKeyChanged {
                    tenant_id: p.tenant_id.to_string(),
                    api_key_id: id.to_string(),
                    name: key.name.clone(),
                    scopes: key.scopes.clone(),
                    actor_user_id: p.user_id.to_string(),
                },
            )
            .await?;
        }
        let keys = store::count_active_api_keys(&mut tx, p.tenant_id).await?;
        tx.commit().await?;
        if revoked_now && let Ok(auth) = call_auth(&req) {
            self.report_usage(p.tenant_id, Limit::ApiKeys, keys, auth);
        }
        Ok(pb::RevokeApiKeyResponse {})
    }

    async fn list_all_tenants(
        &self,
        req: Request<pb::ListAllTenantsRequest>,
    ) -> Result<pb::ListAllTenantsResponse> {
        let p = principal_of(&req)?.clone();
        let rid = request_id(&req);
        let limit = page_size(req.get_ref().page_size)?;
        let after = page_token(&req.get_ref().page_token)?;
        let mut tx = self
            .db
            .system_tx("platform admin: list every tenant")
            .await?;
        store::insert_platform_audit(
            &mut tx,
            p.user_id,
            "tenants.listed",
            serde_json::json!({"after": after}),
            rid.as_deref(),
        )
        .await?;
        let rows = store::all_tenants_page(&mut tx, after, limit + 1).await?;
        tx.commit().await?;
        let more = rows.len() as i64 > limit;
        let rows: Vec<_> = rows
            .into_iter()
            .take(usize::try_from(limit).unwrap_or(50))
            .collect();
        let next = if more {
            rows.last().map(|r| r.id.to_string()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(pb::ListAllTenantsResponse {
            tenants: rows
                .into_iter()
                .map(|r| pb::AdminTenant {
                    tenant: Some(pb::Tenant {
                        id: r.id.to_string(),
                        name: r.name,
                        slug: r.slug,
                        created_at: ts(r.created_at),
                    }),
                    member_count: i32::try_from(r.member_count).unwrap_or(i32::MAX),
                    owner_emails: r.owner_emails,
                })
                .collect(),
            next_page_token: next,
        })
    }

    async fn list_audit_log(
        &self,
        req: Request<pb::ListAuditLogRequest>,
    ) -> Result<pb::ListAuditLogResponse> {
        let p = principal_of(&req)?.clone();
        let limit = page_size(req.get_ref().page_size)?;
        let before = page_token(&req.get_ref().page_token)?;
        let mut tx = self.db.tenant_tx(p.tenant_id).await?;
        let rows = store::audit_page(&mut tx, p.tenant_id, before, limit + 1).await?;
        tx.commit().await?;
        let more = rows.len() as i64 > limit;
        let rows: Vec<_> = rows
            .into_iter()
            .take(usize::try_from(limit).unwrap_or(50))
            .collect();
        let next = if more {
            rows.last().map(|r| r.id.to_string()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(pb::ListAuditLogResponse {
            entries: rows
                .into_iter()
                .map(|r| pb::AuditEntry {
                    id: r.id.to_string(),
                    actor_user_id: r.actor_user_id.map(|u| u.to_string()).unwrap_or_default(),
                    actor_api_key_id: r
                        .actor_api_key_id
                        .map(|u| u.to_string())
                        .unwrap_or_default(),
                    action: r.action,
                    target_type: r.target_type,
                    target_id: r.target_id,
                    details: Some(json_to_struct(r.details)),
                    request_id: r.request_id.unwrap_or_default(),
                    occurred_at: ts(r.occurred_at),
                })
                .collect(),
            next_page_token: next,
        })
    }

    async fn authenticate_api_key(
        &self,
        req: Request<pb::AuthenticateApiKeyRequest>,
    ) -> Result<pb::AuthenticateApiKeyResponse> {
        let key = req.into_inner().api_key;
        if !key.starts_with(API_KEY_PREFIX) {
            return Err(ServiceError::unauthenticated("invalid API key").into());
        }
        let mut tx = self.db.system_tx("authenticate an API key").await?;
        let row = store::active_api_key_by_hash(&mut tx, &sha256_hex(&key))
            .await?
            .ok_or_else(|| ServiceError::unauthenticated("invalid API key"))?;
        // A key never holds more than its creator does today: demoting the creator narrows it,
        // removing the creator from the tenant disables it.
        let Some(creator_role) =
            store::membership_role(&mut tx, row.tenant_id, row.created_by).await?
        else {
            tx.commit().await?;
            return Err(ServiceError::unauthenticated("invalid API key").into());
        };
        store::touch_api_key(&mut tx, row.id).await?;
        tx.commit().await?;
        // Roles order from most to least powerful, so the larger is the weaker.
        let role = stored_role(&row.role)?.max(stored_role(&creator_role)?);
        let principal = Principal {
            kind: PrincipalKind::ApiKey,
            user_id: row.created_by,
            tenant_id: row.tenant_id,
            role,
            api_key_id: Some(row.id),
            scopes: row.scopes,
            platform_admin: false,
            session_id: None,
        };
        let (token, _) = self
            .issuer
            .issue_for(&principal, self.api_key_token_ttl)
            .map_err(|e| Error::Internal(e.to_string()))?;
        Ok(pb::AuthenticateApiKeyResponse {
            access_token: token,
            tenant_id: row.tenant_id.to_string(),
            api_key_id: row.id.to_string(),
        })
    }
}

/// A new tenant and its first owner: `identity.tenant.created` then `identity.member.added`.
async fn emit_tenant_created(
    conn: &mut PgConnection,
    tenant: &store::TenantRow,
    owner: Uuid,
) -> Result<()> {
    events::emit(
        conn,
        events::TENANT_CREATED,
        tenant.id,
        &pb::TenantCreated {
            tenant_id: tenant.id.to_string(),
            name: tenant.name.clone(),
            created_by: owner.to_string(),
        },
    )
    .await?;
    events::emit(
        conn,
        events::MEMBER_ADDED,
        tenant.id,
        &pb::MemberChanged {
            tenant_id: tenant.id.to_string(),
            user_id: owner.to_string(),
            role: Role::Owner.as_str().into(),
            previous_role: String::new(),
            actor_user_id: owner.to_string(),
        },
    )
    .await?;
    Ok(())
}

fn json_to_struct(v: serde_json::Value) -> prost_types::Struct {
    fn value(v: serde_json::Value) -> prost_types::Value {
        use prost_types::value::Kind;
        let kind = match v {
            serde_json::Value::Null => Kind::NullValue(0),
            serde_json::Value::Bool(b) => Kind::BoolValue(b),
            serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
            serde_json::Value::String(s) => Kind::StringValue(s),
            serde_json::Value::Array(a) => Kind::ListValue(prost_types::ListValue {
                values: a.into_iter().map(value).collect(),
            }),
            serde_json::Value::Object(o) => Kind::StructValue(prost_types::Struct {
                fields: o.into_iter().map(|(k, v)| (k, value(v))).collect(),
            }),
        };
        prost_types::Value { kind: Some(kind) }
    }
    match v {
        serde_json::Value::Object(o) => prost_types::Struct {
            fields: o.into_iter().map(|(k, v)| (k, value(v))).collect(),
        },
        _ => prost_types::Struct::default(),
    }
}

/// The tonic service: thin wrappers that turn results into responses.
#[derive(Clone)]
pub struct IdentityGrpc(pub Arc<IdentityApi>);

type Reply<T> = std::result::Result<Response<T>, Status>;

fn reply<T>(r: Result<T>) -> Reply<T> {
    r.map(Response::new).map_err(Status::from)
}

#[tonic::async_trait]
impl IdentityService for IdentityGrpc {
    async fn register(&self, req: Request<pb::RegisterRequest>) -> Reply<pb::AuthResponse> {
        reply(self.0.register(req).await)
    }
    async fn login(&self, req: Request<pb::LoginRequest>) -> Reply<pb::AuthResponse> {
        reply(self.0.login(req).await)
    }
    async fn refresh(&self, req: Request<pb::RefreshRequest>) -> Reply<pb::RefreshResponse> {
        reply(self.0.refresh(req).await)
    }
    async fn logout(&self, req: Request<pb::LogoutRequest>) -> Reply<pb::LogoutResponse> {
        reply(self.0.logout(req).await)
    }
    async fn get_me(&self, req: Request<pb::GetMeRequest>) -> Reply<pb::GetMeResponse> {
        let p = principal_of(&req)?;
        reply(self.0.get_me(p).await)
    }
    async fn list_my_tenants(
        &self,
        req: Request<pb::ListMyTenantsRequest>,
    ) -> Reply<pb::ListMyTenantsResponse> {
        let p = principal_of(&req)?;
        reply(self.0.list_my_tenants(p).await)
    }
    async fn create_tenant(
        &self,
        req: Request<pb::CreateTenantRequest>,
    ) -> Reply<pb::SwitchTenantResponse> {
        reply(self.0.create_tenant(req).await)
    }
    async fn switch_tenant(
        &self,
        req: Request<pb::SwitchTenantRequest>,
    ) -> Reply<pb::SwitchTenantResponse> {
        reply(self.0.switch_tenant(req).await)
    }
    async fn list_members(
        &self,
        req: Request<pb::ListMembersRequest>,
    ) -> Reply<pb::ListMembersResponse> {
        let p = principal_of(&req)?;
        reply(self.0.list_members(p).await)
    }
    async fn add_member(&self, req: Request<pb::AddMemberRequest>) -> Reply<pb::Member> {
        reply(self.0.add_member(req).await)
    }
    async fn update_member(&self, req: Request<pb::UpdateMemberRequest>) -> Reply<pb::Member> {
        reply(self.0.update_member(req).await)
    }
    async fn remove_member(
        &self,
        req: Request<pb::RemoveMemberRequest>,
    ) -> Reply<pb::RemoveMemberResponse> {
        reply(self.0.remove_member(req).await)
    }
    async fn list_api_keys(
        &self,
        req: Request<pb::ListApiKeysRequest>,
    ) -> Reply<pb::ListApiKeysResponse> {
        let p = principal_of(&req)?;
        reply(self.0.list_api_keys(p).await)
    }
    async fn create_api_key(
        &self,
        req: Request<pb::CreateApiKeyRequest>,
    ) -> Reply<pb::CreateApiKeyResponse> {
        reply(self.0.create_api_key(req).await)
    }
    async fn revoke_api_key(
        &self,
        req: Request<pb::RevokeApiKeyRequest>,
    ) -> Reply<pb::RevokeApiKeyResponse> {
        reply(self.0.revoke_api_key(req).await)
    }
    async fn get_jwks(&self, _req: Request<pb::GetJwksRequest>) -> Reply<pb::Jwks> {
        Ok(Response::new(pb::Jwks {
            keys: self
                .0
                .jwks
                .iter()
                .map(|k| pb::Jwk {
                    kty: k.kty.clone(),
                    crv: k.crv.clone(),
                    x: k.x.clone(),
                    kid: k.kid.clone(),
                    alg: k.alg.clone(),
                    r#use: k.use_.clone(),
                })
                .collect(),
        }))
    }
    async fn list_all_tenants(
        &self,
        req: Request<pb::ListAllTenantsRequest>,
    ) -> Reply<pb::ListAllTenantsResponse> {
        reply(self.0.list_all_tenants(req).await)
    }
    async fn list_audit_log(
        &self,
        req: Request<pb::ListAuditLogRequest>,
    ) -> Reply<pb::ListAuditLogResponse> {
        reply(self.0.list_audit_log(req).await)
    }
    async fn authenticate_api_key(
        &self,
        req: Request<pb::AuthenticateApiKeyRequest>,
    ) -> Reply<pb::AuthenticateApiKeyResponse> {
        reply(self.0.authenticate_api_key(req).await)
    }
}
