//! Service-to-service calls without a user: a background job (CSV import worker, scheduled
//! campaign launch) acting for one tenant calls an *internal* RPC of another service.
//!
//! Every service of the mesh shares one secret (`COS_AUTH__SERVICE_SECRET`). The caller never
//! sends it: it sends `x-cos-service-auth: v1 svc=<name> tenant=<uuid> ts=<unix secs> sig=<hex>`,
//! where `sig` is HMAC-SHA256 over the gRPC method path, the calling service, the tenant and the
//! time. The receiving auth layer accepts it only on methods whose policy says `internal: true`
//! (never exposed by the gateway, which also never forwards client headers), only within
//! [`MAX_SKEW_SECS`] of its own clock, and only for the method and tenant that were signed: a
//! captured header cannot be replayed against another method or another tenant, nor later.
//! Handlers read the tenant from the [`ServicePrincipal`] the layer attaches, never from the
//! request body.

use std::fmt;

use aws_lc_rs::hmac;
use uuid::Uuid;

/// Metadata key carrying a service credential.
pub const SERVICE_AUTH_HEADER: &str = "x-cos-service-auth";
/// Accepted clock difference between caller and callee, in seconds.
pub const MAX_SKEW_SECS: i64 = 120;
/// Shortest accepted shared secret.
pub const MIN_SERVICE_SECRET_LEN: usize = 32;

const VERSION: &str = "v1";

/// A background job of `service` acting for `tenant_id`, as proven by a service credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePrincipal {
    pub service: String,
    pub tenant_id: Uuid,
}

/// Why a service credential was refused (the caller gets UNAUTHENTICATED without the detail).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceAuthError {
    #[error("malformed service credential")]
    Malformed,
    #[error("service credential outside the accepted time window")]
    Expired,
    #[error("service credential signature mismatch")]
    BadSignature,
}

/// The shared mesh secret plus the name of the service using it.
#[derive(Clone)]
pub struct ServiceCredential {
    service: String,
    key: hmac::Key,
}

impl fmt::Debug for ServiceCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceCredential")
            .field("service", &self.service)
            .field("secret", &"[REDACTED]")
            .finish()
    }
}

fn valid_service_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl ServiceCredential {
    /// `service` names the caller in logs (`segmentation`, `campaigns`); `secret` is the shared
    /// mesh secret, at least [`MIN_SERVICE_SECRET_LEN`] characters.
    pub fn new(service: &str, secret: &str) -> Result<Self, String> {
        if !valid_service_name(service) {
            return Err("service name must be 1-32 characters of a-z, 0-9 and -".to_owned());
        }
        if secret.len() < MIN_SERVICE_SECRET_LEN {
            return Err(format!(
                "the service secret must be at least {MIN_SERVICE_SECRET_LEN} characters"
            ));
        }
        Ok(Self {
            service: service.to_owned(),
            key: hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()),
        })
    }

    pub fn service(&self) -> &str {
        &self.service
    }

    fn message(path: &str, service: &str, tenant: Uuid, ts: i64) -> String {
        format!("cos-service-auth/{VERSION}\n{path}\n{service}\n{tenant}\n{ts}")
    }

    /// The header value for a call of `grpc_path` (`/pkg.Service/Method`) acting for `tenant_id`.
    pub fn header_value(&self, grpc_path: &str, tenant_id: Uuid) -> String {
        self.header_value_at(grpc_path, tenant_id, chrono::Utc::now().timestamp())
    }

    fn header_value_at(&self, grpc_path: &str, tenant_id: Uuid, ts: i64) -> String {
        let tag = hmac::sign(
            &self.key,
            Self::message(grpc_path, &self.service, tenant_id, ts).as_bytes(),
        );
        let sig: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        format!(
            "{VERSION} svc={} tenant={tenant_id} ts={ts} sig={sig}",
            self.service
        )
    }

    /// Checks a header received on `grpc_path`.
    pub fn verify(
        &self,
        grpc_path: &str,
        header: &str,
    ) -> Result<ServicePrincipal, ServiceAuthError> {
        self.verify_at(grpc_path, header, chrono::Utc::now().timestamp())
    }

    fn verify_at(
        &self,
        grpc_path: &str,
        header: &str,
        now: i64,
    ) -> Result<ServicePrincipal, ServiceAuthError> {
        let mut parts = header.split(' ');
        if parts.next() != Some(VERSION) {
            return Err(ServiceAuthError::Malformed);
        }
        let (mut svc, mut tenant, mut ts, mut sig) = (None, None, None, None);
        for part in parts {
            let (k, v) = part.split_once('=').ok_or(ServiceAuthError::Malformed)?;
            let slot = match k {
                "svc" => &mut svc,
                "tenant" => &mut tenant,
                "ts" => &mut ts,
                "sig" => &mut sig,
                _ => return Err(ServiceAuthError::Malformed),
            };
            if slot.replace(v).is_some() {
                return Err(ServiceAuthError::Malformed);
            }
        }
        let (Some(svc), Some(tenant), Some(ts), Some(sig)) = (svc, tenant, ts, sig) else {
            return Err(ServiceAuthError::Malformed);
        };
        if !valid_service_name(svc) {
            return Err(ServiceAuthError::Malformed);
        }
        let tenant_id = Uuid::parse_str(tenant).map_err(|_| ServiceAuthError::Malformed)?;
        let ts: i64 = ts.parse().map_err(|_| ServiceAuthError::Malformed)?;
        let sig = decode_hex(sig).ok_or(ServiceAuthError::Malformed)?;
        if (now - ts).abs() > MAX_SKEW_SECS {
            return Err(ServiceAuthError::Expired);
        }
        // Constant-time comparison inside aws-lc.
        hmac::verify(
            &self.key,
            Self::message(grpc_path, svc, tenant_id, ts).as_bytes(),
            &sig,
        )
        .map_err(|_| ServiceAuthError::BadSignature)?;
        Ok(ServicePrincipal {
            service: svc.to_owned(),
            tenant_id,
        })
    }
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The service principal the auth layer attached, if the call came with a service credential.
pub fn service_principal_of<T>(req: &tonic::Request<T>) -> Option<&ServicePrincipal> {
    req.extensions().get::<ServicePrincipal>()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef-mesh";
    const PATH: &str = "/campaignos.billing.v1.BillingService/ConsumeQuota";

    #[test]
    fn a_signed_header_verifies_for_its_method_and_tenant() {
        let cred = ServiceCredential::new("segmentation", SECRET).unwrap();
        let tenant = Uuid::now_v7();
        let h = cred.header_value_at(PATH, tenant, 1_000_000);
        let p = cred.verify_at(PATH, &h, 1_000_030).unwrap();
        assert_eq!(p.tenant_id, tenant);
        assert_eq!(p.service, "segmentation");
    }

    #[test]
    fn a_header_cannot_be_moved_to_another_method_tenant_or_time() {
        let cred = ServiceCredential::new("campaigns", SECRET).unwrap();
        let tenant = Uuid::now_v7();
        let h = cred.header_value_at(PATH, tenant, 1_000_000);
        let other_path = "/campaignos.billing.v1.BillingService/ReleaseQuota";
        assert_eq!(
            cred.verify_at(other_path, &h, 1_000_000),
            Err(ServiceAuthError::BadSignature)
        );
        let forged = h.replace(&tenant.to_string(), &Uuid::now_v7().to_string());
        assert_eq!(
            cred.verify_at(PATH, &forged, 1_000_000),
            Err(ServiceAuthError::BadSignature)
        );
        assert_eq!(
            cred.verify_at(PATH, &h, 1_000_000 + MAX_SKEW_SECS + 1),
            Err(ServiceAuthError::Expired)
        );
        let renamed = h.replace("svc=campaigns", "svc=billing");
        assert_eq!(
            cred.verify_at(PATH, &renamed, 1_000_000),
            Err(ServiceAuthError::BadSignature)
        );
    }

    #[test]
    fn another_secret_or_garbage_is_refused() {
        let cred = ServiceCredential::new("campaigns", SECRET).unwrap();
        let other = ServiceCredential::new("campaigns", &format!("{SECRET}-other")).unwrap();
        let tenant = Uuid::now_v7();
        let h = other.header_value_at(PATH, tenant, 5);
        assert_eq!(
            cred.verify_at(PATH, &h, 5),
            Err(ServiceAuthError::BadSignature)
        );
        for bad in [
            "",
            "v1",
            "v2 svc=a tenant=b ts=1 sig=00",
            "v1 svc=a svc=b",
            "Bearer abc",
        ] {
            assert_eq!(
                cred.verify_at(PATH, bad, 5),
                Err(ServiceAuthError::Malformed),
                "{bad}"
            );
        }
    }

    #[test]
    fn short_secrets_and_odd_names_are_refused_and_debug_hides_the_secret() {
        assert!(ServiceCredential::new("billing", "short").is_err());
        assert!(ServiceCredential::new("Billing!", SECRET).is_err());
        let cred = ServiceCredential::new("billing", SECRET).unwrap();
        assert!(!format!("{cred:?}").contains(SECRET));
    }
}
