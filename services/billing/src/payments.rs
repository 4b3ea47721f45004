//! The payment provider behind a trait, and its real adapter: Stripe Checkout through
//! async-stripe, keyed from the stored integration settings (platform scope, provider
//! `stripe`) on every call, so a key set through `PUT /v1/admin/integrations/stripe` applies
//! without a restart. The configuration file's key is the fallback when nothing is stored.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_stripe as stripe;
use cos_crypto::{KeyRing, Secret};
use cos_db::Db;
use cos_integrations::{IntegrationStore, Scope};
use futures::future::BoxFuture;
use stripe::StripeRequest;
use stripe_checkout::checkout_session::{
    CreateCheckoutSession, CreateCheckoutSessionLineItems, CreateCheckoutSessionLineItemsPriceData,
    ProductData, RetrieveCheckoutSession,
};
use stripe_checkout::{
    CheckoutSession, CheckoutSessionMode, CheckoutSessionPaymentStatus, CheckoutSessionStatus,
};

use crate::domain::{CheckoutState, PaymentState, SessionState};

/// Where the Stripe settings live.
pub const INTEGRATIONS: IntegrationStore = IntegrationStore::new(crate::SCHEMA);
pub const STRIPE_PROVIDER: &str = "stripe";

/// A one-time payment to ask the provider for.
#[derive(Debug, Clone)]
pub struct NewCheckout {
    pub tenant_id: uuid::Uuid,
    pub plan_code: String,
    pub plan_name: String,
    pub months: i32,
    /// Lower-case ISO currency.
    pub currency: String,
    pub unit_amount_minor: i64,
    pub amount_minor: i64,
    pub success_url: String,
    pub cancel_url: String,
    /// Unix seconds.
    pub expires_at: i64,
    /// Makes a retried create return the same session.
    pub idempotency_key: String,
}

/// Why the provider call failed. Messages are safe to log and to show (no keys, no bodies).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    #[error("payments are not configured (no Stripe secret key)")]
    NotConfigured,
    #[error("no such checkout session at the payment provider")]
    NotFound,
    /// The provider refused the request (bad key, bad parameters).
    #[error("the payment provider refused the request: {0}")]
    Rejected(String),
    /// Network trouble, timeouts, 5xx, unreadable answers.
    #[error("the payment provider is unavailable: {0}")]
    Unavailable(String),
}

/// A payment provider that sells one-time Checkout sessions.
pub trait PaymentProvider: Send + Sync + 'static {
    fn create_checkout<'a>(
        &'a self,
        req: &'a NewCheckout,
    ) -> BoxFuture<'a, Result<CheckoutState, ProviderError>>;

    fn retrieve_checkout<'a>(
        &'a self,
        session_id: &'a str,
    ) -> BoxFuture<'a, Result<CheckoutState, ProviderError>>;
}

/// Stripe through async-stripe.
pub struct StripeProvider {
    db: Db,
    keyring: KeyRing,
    default_base: String,
    fallback_key: Option<Secret>,
    timeout: Duration,
    /// The client for the settings version it was built from (building one loads TLS roots).
    client: Mutex<Option<(ClientKey, stripe::Client)>>,
}

#[derive(Clone, PartialEq, Eq)]
struct ClientKey {
    version: i64,
    base: String,
}

impl StripeProvider {
    pub fn new(
        db: Db,
        keyring: KeyRing,
        default_base: &str,
        fallback_key: Option<Secret>,
        timeout: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            db,
            keyring,
            default_base: default_base.trim_end_matches('/').to_owned(),
            fallback_key,
            timeout,
            client: Mutex::new(None),
        })
    }

    async fn client(&self) -> Result<stripe::Client, ProviderError> {
        let stored = INTEGRATIONS
            .load(&self.db, &self.keyring, Scope::Platform, STRIPE_PROVIDER)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "loading the Stripe settings failed");
                ProviderError::Unavailable("payment settings cannot be read".into())
            })?;
        let (version, base, key) = match &stored {
            Some(cfg) => match cfg.secret("secret_key") {
                Some(key) => (
                    cfg.version,
                    cfg.setting("api_base")
                        .map(|b| b.trim_end_matches('/').to_owned())
                        .unwrap_or_else(|| self.default_base.clone()),
                    key.clone(),
                ),
                None => return Err(ProviderError::NotConfigured),
            },
            None => match &self.fallback_key {
                Some(key) => (0, self.default_base.clone(), key.clone()),
                None => return Err(ProviderError::NotConfigured),
            },
        };
        let wanted = ClientKey { version, base };
        {
            let cached = self.client.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((k, c)) = cached.as_ref()
                && *k == wanted
            {
                return Ok(c.clone());
            }
        }
        let client = stripe::ClientBuilder::new(key.expose_secret())
            .url(wanted.base.clone())
            .timeout(self.timeout)
            .app_info(
                "campaign-os",
                Some(env!("CARGO_PKG_VERSION").to_owned()),
                None,
            )
            .build()
            .map_err(|e| {
                // ConfigError texts name the setting, never the key.
                tracing::error!(error = %e, "building the Stripe client failed");
                ProviderError::Rejected("the stored Stripe settings are unusable".into())
            })?;
        *self.client.lock().unwrap_or_else(|p| p.into_inner()) = Some((wanted, client.clone()));
        Ok(client)
    }
}

fn provider_error(e: stripe::StripeError) -> ProviderError {
    match e {
        stripe::StripeError::Stripe(api, status) => {
            let message = api.message.clone().unwrap_or_default();
            tracing::warn!(status, code = ?api.code, r#type = ?api.type_, stripe_message = %message, "Stripe refused a request");
            if status == 404 {
                ProviderError::NotFound
            } else if status >= 500 || status == 429 {
                ProviderError::Unavailable(format!("Stripe answered {status}"))
            } else if status == 401 || status == 403 {
                ProviderError::Rejected("Stripe rejected the configured API key".into())
            } else {
                ProviderError::Rejected(format!("Stripe answered {status}"))
            }
        }
        stripe::StripeError::Timeout => ProviderError::Unavailable("timed out".into()),
        other => {
            tracing::warn!(error = %other, "Stripe call failed");
            ProviderError::Unavailable("could not reach Stripe".into())
        }
    }
}

fn state(s: &CheckoutSession) -> CheckoutState {
    CheckoutState {
        id: s.id.as_str().to_owned(),
        url: s.url.clone(),
        status: match &s.status {
            Some(CheckoutSessionStatus::Open) => SessionState::Open,
            Some(CheckoutSessionStatus::Complete) => SessionState::Complete,
            Some(CheckoutSessionStatus::Expired) => SessionState::Expired,
            Some(other) => SessionState::Other(other.as_str().to_owned()),
            None => SessionState::Other(String::new()),
        },
        payment_status: match &s.payment_status {
            CheckoutSessionPaymentStatus::Paid => PaymentState::Paid,
            CheckoutSessionPaymentStatus::Unpaid => PaymentState::Unpaid,
            CheckoutSessionPaymentStatus::NoPaymentRequired => PaymentState::NoPaymentRequired,
            other => PaymentState::Other(other.as_str().to_owned()),
        },
        amount_total: s.amount_total,
        currency: s
            .currency
            .as_ref()
            .map(|c| c.to_string().to_ascii_lowercase()),
        client_reference_id: s.client_reference_id.clone(),
        metadata: s.metadata.clone().unwrap_or_default(),
        mode: s.mode.as_str().to_owned(),
        expires_at: s.expires_at,
    }
}

impl PaymentProvider for StripeProvider {
    fn create_checkout<'a>(
        &'a self,
        req: &'a NewCheckout,
    ) -> BoxFuture<'a, Result<CheckoutState, ProviderError>> {
        Box::pin(async move {
            let client = self.client().await?;
            let currency: stripe_types::Currency = req
                .currency
                .parse()
                .unwrap_or_else(|e: std::convert::Infallible| match e {});
            let mut price = CreateCheckoutSessionLineItemsPriceData::new(currency);
            price.unit_amount = Some(req.unit_amount_minor);
            let mut product =
                ProductData::new(format!("Campaign OS {} plan, 1 month", req.plan_name));
            product.description = Some(format!(
                "{} month(s) of the {} plan, paid once (no automatic renewal)",
                req.months, req.plan_name
            ));
            price.product_data = Some(product);
            let mut item = CreateCheckoutSessionLineItems::new();
            item.price_data = Some(price);
            item.quantity = Some(u64::try_from(req.months).unwrap_or(1));
            let metadata = HashMap::from([
                ("tenant_id".to_owned(), req.tenant_id.to_string()),
                ("plan".to_owned(), req.plan_code.clone()),
                ("months".to_owned(), req.months.to_string()),
                ("amount_minor".to_owned(), req.amount_minor.to_string()),
                ("currency".to_owned(), req.currency.clone()),
            ]);
            let key = stripe::IdempotencyKey::new(&req.idempotency_key)
                .map_err(|_| ProviderError::Rejected("bad idempotency key".into()))?;
            let session = CreateCheckoutSession::new()
                .mode(CheckoutSessionMode::Payment)
                .line_items(vec![item])
                .client_reference_id(req.tenant_id.to_string())
                .metadata(metadata)
                .success_url(req.success_url.clone())
                .cancel_url(req.cancel_url.clone())
                .expires_at(req.expires_at)
                .customize()
                .request_strategy(stripe::RequestStrategy::Idempotent(key))
                .send(&client)
                .await
                .map_err(provider_error)?;
            Ok(state(&session))
        })
    }

    fn retrieve_checkout<'a>(
        &'a self,
        session_id: &'a str,
    ) -> BoxFuture<'a, Result<CheckoutState, ProviderError>> {
        Box::pin(async move {
            let client = self.client().await?;
            let session = RetrieveCheckoutSession::new(session_id)
                .customize()
                .request_strategy(stripe::RequestStrategy::ExponentialBackoff(3))
                .send(&client)
                .await
                .map_err(provider_error)?;
            Ok(state(&session))
        })
    }
}
