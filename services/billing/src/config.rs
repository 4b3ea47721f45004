//! Billing's own settings (the shared ones are in `cos_config::CommonConfig`).

use std::net::SocketAddr;
use std::time::Duration;

use cos_config::Reader;

#[derive(Clone)]
pub struct BillingConfig {
    /// Where the gRPC server listens.
    pub grpc_addr: SocketAddr,
    /// Where /healthz, /readyz and /metrics listen.
    pub admin_addr: SocketAddr,
    /// Identity's gRPC endpoint, for the JWKS that verifies access tokens.
    pub identity_url: String,
    /// Stripe API base, a bare `http(s)://host[:port]` (the `api_base` of the stored Stripe
    /// integration settings wins over it).
    pub stripe_api_base: String,
    /// Fallback Stripe secret key when no integration settings are stored (e.g. from a
    /// Kubernetes secret); the stored settings win.
    pub stripe_secret_key: Option<String>,
    /// Per-attempt timeout of Stripe calls.
    pub stripe_timeout: Duration,
    /// Public URL of the web app: Stripe sends buyers back to
    /// `{app_url}/billing/checkout/success?session_id={CHECKOUT_SESSION_ID}` (or `/cancel`).
    pub app_url: String,
    /// How long a Checkout session stays payable (Stripe accepts 30 minutes to 24 hours).
    pub checkout_expiry: Duration,
    /// Days after the end of a period during which everything still works.
    pub grace_days: u32,
    /// Length of the trial new tenants get.
    pub trial_days: u32,
    /// Lifetime of cached entitlements in Redis (billing deletes them on every change).
    pub cache_ttl: Duration,
}

impl std::fmt::Debug for BillingConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BillingConfig")
            .field("grpc_addr", &self.grpc_addr)
            .field("admin_addr", &self.admin_addr)
            .field("identity_url", &self.identity_url)
            .field("stripe_api_base", &self.stripe_api_base)
            .field(
                "stripe_secret_key",
                &self.stripe_secret_key.as_ref().map(|_| "[REDACTED]"),
            )
            .field("stripe_timeout", &self.stripe_timeout)
            .field("app_url", &self.app_url)
            .field("checkout_expiry", &self.checkout_expiry)
            .field("grace_days", &self.grace_days)
            .field("trial_days", &self.trial_days)
            .field("cache_ttl", &self.cache_ttl)
            .finish()
    }
}

impl BillingConfig {
    pub fn read(r: &mut Reader<'_>) -> Self {
        let cfg = Self {
            grpc_addr: r.get(
                "billing.grpc_addr",
                SocketAddr::from(([127, 0, 0, 1], 50052)),
            ),
            admin_addr: r.get(
                "billing.admin_addr",
                SocketAddr::from(([127, 0, 0, 1], 9102)),
            ),
            identity_url: r.get("billing.identity_url", "http://127.0.0.1:50051".to_owned()),
            stripe_api_base: r.get(
                "billing.stripe_api_base",
                "https://api.stripe.com".to_owned(),
            ),
            stripe_secret_key: r.optional("billing.stripe_secret_key"),
            stripe_timeout: r.seconds("billing.stripe_timeout_secs", 15),
            app_url: r.get("billing.app_url", "http://localhost:3000".to_owned()),
            checkout_expiry: r.seconds("billing.checkout_expiry_secs", 3600),
            grace_days: r.get("billing.grace_days", 7),
            trial_days: r.get("billing.trial_days", 14),
            cache_ttl: r.seconds("billing.cache_ttl_secs", 30),
        };
        if cos_integrations::providers::http_base_url(&cfg.stripe_api_base).is_err() {
            r.invalid(
                "billing.stripe_api_base",
                "must be a bare http(s)://host[:port] URL",
            );
        }
        if let Some(key) = &cfg.stripe_secret_key
            && cos_integrations::providers::stripe_secret_key(key).is_err()
        {
            r.invalid(
                "billing.stripe_secret_key",
                "must be a Stripe secret key (sk_test_..., sk_live_..., rk_...)",
            );
        }
        let app = cfg.app_url.trim_end_matches('/');
        if !(app.starts_with("https://") || app.starts_with("http://")) || app.contains('?') {
            r.invalid(
                "billing.app_url",
                "must be an http(s) URL without a query string",
            );
        }
        if cfg.stripe_timeout.is_zero() || cfg.stripe_timeout > Duration::from_secs(120) {
            r.invalid("billing.stripe_timeout_secs", "must be between 1 and 120");
        }
        if !(1800..=86_400).contains(&cfg.checkout_expiry.as_secs()) {
            r.invalid(
                "billing.checkout_expiry_secs",
                "must be between 1800 and 86400 (Stripe's bounds)",
            );
        }
        if cfg.grace_days > 90 {
            r.invalid("billing.grace_days", "must be between 0 and 90");
        }
        if !(1..=365).contains(&cfg.trial_days) {
            r.invalid("billing.trial_days", "must be between 1 and 365");
        }
        if cfg.cache_ttl.is_zero() || cfg.cache_ttl > Duration::from_secs(600) {
            r.invalid("billing.cache_ttl_secs", "must be between 1 and 600");
        }
        cfg
    }

    pub(crate) fn grace(&self) -> chrono::Duration {
        chrono::Duration::days(i64::from(self.grace_days))
    }

    pub(crate) fn success_url(&self) -> String {
        format!(
            "{}/billing/checkout/success?session_id={{CHECKOUT_SESSION_ID}}",
            self.app_url.trim_end_matches('/')
        )
    }

    pub(crate) fn cancel_url(&self) -> String {
        format!(
            "{}/billing/checkout/cancel",
            self.app_url.trim_end_matches('/')
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cos_config::Source;

    fn read(vars: &[(&str, &str)]) -> Result<BillingConfig, String> {
        let source = Source::from_env_pairs(vars.iter().map(|(k, v)| (*k, *v)));
        let mut r = source.reader();
        let cfg = BillingConfig::read(&mut r);
        r.finish().map(|_| cfg).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_valid_and_urls_carry_the_session_placeholder() {
        let cfg = read(&[]).unwrap();
        assert_eq!(cfg.grpc_addr.port(), 50052);
        assert_eq!(cfg.admin_addr.port(), 9102);
        assert_eq!(
            cfg.success_url(),
            "http://localhost:3000/billing/checkout/success?session_id={CHECKOUT_SESSION_ID}"
        );
    }

    #[test]
    fn bad_values_name_their_variable_and_never_echo_a_key() {
        let err = read(&[
            ("COS_BILLING__STRIPE_API_BASE", "https://api.stripe.com/v1"),
            ("COS_BILLING__STRIPE_SECRET_KEY", "sk_prod_notakeyatall"),
            ("COS_BILLING__TRIAL_DAYS", "0"),
        ])
        .unwrap_err();
        assert!(err.contains("COS_BILLING__STRIPE_API_BASE"), "{err}");
        assert!(err.contains("COS_BILLING__STRIPE_SECRET_KEY"), "{err}");
        assert!(err.contains("COS_BILLING__TRIAL_DAYS"), "{err}");
        assert!(!err.contains("notakeyatall"), "{err}");
        let cfg = read(&[("COS_BILLING__STRIPE_SECRET_KEY", "sk_test_abc123")]).unwrap();
        assert!(!format!("{cfg:?}").contains("abc123"));
    }
}
