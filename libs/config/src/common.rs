//! Settings every process of the mesh reads: environment, PostgreSQL, RabbitMQ, Redis,
//! telemetry, the encryption key ring and token lifetimes.

use std::time::Duration;

use crate::{ConfigError, Reader, Source};

/// Deployment environment. `production` refuses dev conveniences (generated keys, demo login).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Dev,
    Test,
    Production,
}

impl std::str::FromStr for Environment {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "dev" | "development" => Ok(Self::Dev),
            "test" => Ok(Self::Test),
            "prod" | "production" => Ok(Self::Production),
            other => Err(format!("expected dev, test or production, got {other:?}")),
        }
    }
}

#[derive(Clone)]
pub struct DatabaseSettings {
    /// Connection URL; its user owns the schemas (runs migrations) and the app switches to
    /// `app_role` for tenant work.
    pub url: String,
    pub max_connections: u32,
    pub app_role: String,
    pub acquire_timeout: Duration,
}

#[derive(Clone)]
pub struct AmqpSettings {
    pub url: String,
    pub exchange: String,
    /// The durable work queue of delivery batches (campaigns publishes, publishing consumes).
    pub delivery_queue: String,
}

#[derive(Clone)]
pub struct RedisSettings {
    pub url: String,
    /// Prefix of every key this deployment writes (tests use a unique one each).
    pub key_prefix: String,
}

#[derive(Debug, Clone)]
pub struct TelemetrySettings {
    pub log_format: String,
    pub log_filter: String,
    pub otlp_endpoint: Option<String>,
    pub log_dir: Option<String>,
}

#[derive(Clone)]
pub struct CryptoSettings {
    /// `kid:base64key,...`; None in dev means "generate and keep a local ring".
    pub keys: Option<String>,
    pub active_key_id: Option<String>,
}

#[derive(Clone)]
pub struct AuthSettings {
    pub issuer: String,
    pub audience: String,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    /// How often services re-read the identity service's JWKS.
    pub jwks_refresh: Duration,
    /// Shared mesh secret for service-to-service calls of internal RPCs by background jobs
    /// (`cos_auth::ServiceCredential`); at least 32 characters. None: such calls are refused.
    pub service_secret: Option<String>,
}

/// Settings shared by every process.
#[derive(Debug, Clone)]
pub struct CommonConfig {
    pub environment: Environment,
    pub database: DatabaseSettings,
    pub amqp: AmqpSettings,
    pub redis: RedisSettings,
    pub telemetry: TelemetrySettings,
    pub crypto: CryptoSettings,
    pub auth: AuthSettings,
}

impl CommonConfig {
    pub fn read(r: &mut Reader<'_>) -> Self {
        let environment = r.get("env", Environment::Dev);
        let database = DatabaseSettings {
            url: r.get(
                "database.url",
                "postgres://postgres:postgres@127.0.0.1:5432/campaign_os".to_owned(),
            ),
            max_connections: r.get("database.max_connections", 20),
            app_role: r.get("database.app_role", "cos_app".to_owned()),
            acquire_timeout: r.seconds("database.acquire_timeout_secs", 5),
        };
        if !valid_identifier(&database.app_role) {
            r.invalid("database.app_role", "must be a lowercase SQL identifier");
        }
        let amqp = AmqpSettings {
            url: r.get(
                "amqp.url",
                "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned(),
            ),
            exchange: r.get("amqp.exchange", "cos.events".to_owned()),
            delivery_queue: r.get("amqp.delivery_queue", "publishing.deliveries".to_owned()),
        };
        if amqp.delivery_queue.is_empty()
            || amqp.delivery_queue.len() > 200
            || amqp.delivery_queue.starts_with("amq.")
        {
            r.invalid(
                "amqp.delivery_queue",
                "must be 1 to 200 characters and not start with amq.",
            );
        }
        let redis = RedisSettings {
            url: r.get("redis.url", "redis://127.0.0.1:6379".to_owned()),
            key_prefix: r.get("redis.key_prefix", "cos:".to_owned()),
        };
        let telemetry = TelemetrySettings {
            log_format: r.get("telemetry.log_format", "json".to_owned()),
            log_filter: r.get(
                "telemetry.log_filter",
                "info,sqlx=warn,lapin=warn,h2=warn".to_owned(),
            ),
            otlp_endpoint: r.optional("telemetry.otlp_endpoint"),
            log_dir: r.optional("telemetry.log_dir"),
        };
        if !matches!(telemetry.log_format.as_str(), "json" | "pretty") {
            r.invalid("telemetry.log_format", "expected json or pretty");
        }
        let crypto = CryptoSettings {
            keys: r.optional("crypto.keys"),
            active_key_id: r.optional("crypto.active_key_id"),
        };
        // Required only by services that encrypt (identity today): the binary's `load_keyring`
        // refuses to start those without it outside dev, naming both variables.
        if crypto.keys.is_some() && crypto.active_key_id.is_none() {
            r.invalid(
                "crypto.active_key_id",
                "is required when COS_CRYPTO__KEYS is set",
            );
        }
        let auth = AuthSettings {
            issuer: r.get("auth.issuer", "campaign-os".to_owned()),
            audience: r.get("auth.audience", "campaign-os".to_owned()),
            access_ttl: r.seconds("auth.access_ttl_secs", 900),
            refresh_ttl: r.seconds("auth.refresh_ttl_secs", 30 * 24 * 3600),
            jwks_refresh: r.seconds("auth.jwks_refresh_secs", 60),
            service_secret: r.optional("auth.service_secret"),
        };
        if auth.service_secret.as_ref().is_some_and(|s| s.len() < 32) {
            r.invalid("auth.service_secret", "must be at least 32 characters");
        }
        if auth.access_ttl.is_zero() || auth.access_ttl > Duration::from_secs(24 * 3600) {
            r.invalid("auth.access_ttl_secs", "must be between 1 and 86400");
        }
        if auth.refresh_ttl < Duration::from_secs(60)
            || auth.refresh_ttl > Duration::from_secs(365 * 24 * 3600)
        {
            r.invalid("auth.refresh_ttl_secs", "must be between 60 and 31536000");
        }
        if auth.jwks_refresh.is_zero() || auth.jwks_refresh > Duration::from_secs(3600) {
            r.invalid("auth.jwks_refresh_secs", "must be between 1 and 3600");
        }
        Self {
            environment,
            database,
            amqp,
            redis,
            telemetry,
            crypto,
            auth,
        }
    }

    /// Reads only the common settings (tools that need nothing else).
    pub fn load(source: &Source) -> Result<Self, ConfigError> {
        let mut r = source.reader();
        let cfg = Self::read(&mut r);
        r.finish()?;
        Ok(cfg)
    }
}

/// `[a-z_][a-z0-9_]{0,62}`: safe to format into DDL.
pub fn valid_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && s.len() <= 63
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

// Hand-written Debug: these hold key material and credentials, and configs get logged.
impl std::fmt::Debug for CryptoSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CryptoSettings")
            .field("keys", &self.keys.as_ref().map(|_| "[REDACTED]"))
            .field("active_key_id", &self.active_key_id)
            .finish()
    }
}

impl std::fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("url", &"[REDACTED]")
            .field("max_connections", &self.max_connections)
            .field("app_role", &self.app_role)
            .field("acquire_timeout", &self.acquire_timeout)
            .finish()
    }
}

impl std::fmt::Debug for AmqpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpSettings")
            .field("url", &"[REDACTED]")
            .field("exchange", &self.exchange)
            .field("delivery_queue", &self.delivery_queue)
            .finish()
    }
}

impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &"[REDACTED]")
            .field("key_prefix", &self.key_prefix)
            .finish()
    }
}

impl std::fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthSettings")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("access_ttl", &self.access_ttl)
            .field("refresh_ttl", &self.refresh_ttl)
            .field("jwks_refresh", &self.jwks_refresh)
            .field(
                "service_secret",
                &self.service_secret.as_ref().map(|_| "[REDACTED]"),
            )
            .finish()
    }
}
