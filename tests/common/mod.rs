//! Harness for end-to-end tests: a fresh database, exchange and Redis prefix per test, the mesh
//! started in-process on random ports, and an HTTP client that talks only to the gateway.
#![allow(dead_code)]

use std::time::Duration;

use campaign_os::{Mesh, MeshListeners, Settings};
use cos_config::Source;
use cos_crypto::KeyRing;
use cos_testkit::{TestAmqp, TestDatabase};
use serde_json::{Value, json};

pub struct TestMesh {
    pub mesh: Option<Mesh>,
    pub url: String,
    pub http: reqwest::Client,
    pub db: TestDatabase,
    pub amqp: TestAmqp,
    pub keyring: KeyRing,
    pub settings: Settings,
}

pub async fn test_database() -> TestDatabase {
    TestDatabase::create(&campaign_os::migrations_fingerprint(), |url| async move {
        campaign_os::migrate(&url, "cos_app").await
    })
    .await
    .expect("test database")
}

/// Settings for a test: its own database, exchange and key prefix; generous rate limits unless
/// the test sets its own through `extra`.
pub fn test_settings(db: &TestDatabase, amqp: &TestAmqp, extra: &[(&str, &str)]) -> Settings {
    let prefix = cos_testkit::redis_prefix();
    let mut vars: Vec<(String, String)> = vec![
        ("COS_ENV".into(), "test".into()),
        ("COS_DATABASE__URL".into(), db.url.clone()),
        ("COS_DATABASE__MAX_CONNECTIONS".into(), "5".into()),
        ("COS_AMQP__URL".into(), amqp.url.clone()),
        ("COS_AMQP__EXCHANGE".into(), amqp.exchange.clone()),
        ("COS_AMQP__DELIVERY_QUEUE".into(), amqp.queue("deliveries")),
        // Local test servers (webhook receivers) listen on 127.0.0.1; retries come fast.
        (
            "COS_PUBLISHING__ALLOW_PRIVATE_WEBHOOK_TARGETS".into(),
            "true".into(),
        ),
        ("COS_PUBLISHING__RETRY_BASE_MS".into(), "50".into()),
        ("COS_PUBLISHING__RETRY_CAP_SECS".into(), "1".into()),
        ("COS_CAMPAIGNS__RUNNER_INTERVAL_MS".into(), "200".into()),
        ("COS_PUBLISHING__SEND_CONCURRENCY".into(), "4".into()),
        ("COS_REDIS__URL".into(), cos_testkit::redis_url()),
        ("COS_REDIS__KEY_PREFIX".into(), prefix),
        (
            "COS_GATEWAY__RATE_LIMIT__PER_IP_PER_MINUTE".into(),
            "100000".into(),
        ),
        (
            "COS_GATEWAY__RATE_LIMIT__PER_TENANT_PER_MINUTE".into(),
            "100000".into(),
        ),
        (
            "COS_GATEWAY__RATE_LIMIT__AUTH_PER_IP_PER_MINUTE".into(),
            "100000".into(),
        ),
    ];
    for (k, v) in extra {
        vars.retain(|(name, _)| name != k);
        vars.push(((*k).to_owned(), (*v).to_owned()));
    }
    Settings::load(&Source::from_env_pairs(vars)).expect("valid test settings")
}

pub async fn spawn_mesh() -> TestMesh {
    spawn_mesh_with(&[]).await
}

pub async fn spawn_mesh_with(extra: &[(&str, &str)]) -> TestMesh {
    let db = test_database().await;
    let amqp = TestAmqp::new();
    let settings = test_settings(&db, &amqp, extra);
    start(db, amqp, settings).await
}

pub async fn start(db: TestDatabase, amqp: TestAmqp, settings: Settings) -> TestMesh {
    let keyring = KeyRing::generate("test1").expect("key ring");
    let listeners = MeshListeners::ephemeral().await.expect("listeners");
    let mesh = Mesh::start(settings.clone(), keyring.clone(), listeners)
        .await
        .expect("mesh starts");
    let url = mesh.gateway_url();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    TestMesh {
        mesh: Some(mesh),
        url,
        http,
        db,
        amqp,
        keyring,
        settings,
    }
}

impl TestMesh {
    pub async fn stop(mut self) {
        if let Some(mesh) = self.mesh.take() {
            mesh.stop().await.expect("graceful shutdown");
        }
        let _ = self.db.clone().drop_database().await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// A request with a JSON body (or none) and an optional bearer token.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let mut req = self.http.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body");
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, json, headers)
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        let (s, v, _) = self
            .call(reqwest::Method::POST, path, token, Some(body))
            .await;
        (s, v)
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let (s, v, _) = self.call(reqwest::Method::GET, path, token, None).await;
        (s, v)
    }

    /// Registers a user with their own tenant; returns the register response.
    pub async fn register(&self, email: &str, tenant: &str) -> Value {
        let (status, body) = self
            .post("/v1/auth/register", None, json!({"email": email, "password": "correct horse battery", "display_name": "Test User", "tenant_name": tenant}))
            .await;
        assert_eq!(status, 201, "register {email}: {body}");
        body
    }

    pub async fn login(&self, email: &str, tenant_id: Option<&str>) -> Value {
        let mut body = json!({"email": email, "password": "correct horse battery"});
        if let Some(t) = tenant_id {
            body["tenant_id"] = json!(t);
        }
        let (status, body) = self.post("/v1/auth/login", None, body).await;
        assert_eq!(status, 200, "login {email}: {body}");
        body
    }

    /// Makes the account a platform administrator, as an operator would with
    /// `campaign-os platform-admin grant`.
    pub async fn grant_platform_admin(&self, email: &str) {
        let db = cos_db::Db::connect(&cos_db::PoolSettings {
            url: self.db.url.clone(),
            max_connections: 1,
            app_role: "cos_app".into(),
            acquire_timeout: Duration::from_secs(5),
        })
        .await
        .expect("db");
        assert!(
            cos_identity::set_platform_admin(&db, email, true)
                .await
                .expect("grant")
        );
        db.pool().close().await;
    }

    /// Moves a tenant to another plan as a platform admin would (complimentary, audited), e.g.
    /// "enterprise" for tests that need more than the trial's limits.
    pub async fn comp_plan(&self, tenant_token: &str, tenant_id: &str, plan: &str) {
        // Billing starts a tenant's subscription on the tenant's first request.
        let (s, b) = self
            .get("/v1/billing/subscription", Some(tenant_token))
            .await;
        assert_eq!(s, 200, "subscription: {b}");
        let email = format!("ops-{}@platform.example", uuid::Uuid::new_v4().simple());
        self.register(&email, "Platform Ops").await;
        self.grant_platform_admin(&email).await;
        let admin = access_token(&self.login(&email, None).await);
        let (s, b) = self
            .post(
                &format!("/v1/admin/tenants/{tenant_id}/subscription:override"),
                Some(&admin),
                json!({"plan": plan, "comp": true, "extend_days": 30, "reason": "test needs a bigger plan"}),
            )
            .await;
        assert_eq!(s, 200, "plan override: {b}");
    }

    /// Direct SQL on the test database as the owner (for "nothing was written" checks).
    pub async fn count(&self, sql: &'static str) -> i64 {
        let pool = sqlx::PgPool::connect(&self.db.url).await.expect("db");
        let n: i64 = sqlx::query_scalar(sql)
            .fetch_one(&pool)
            .await
            .expect("count");
        pool.close().await;
        n
    }
}

pub fn access_token(auth: &Value) -> String {
    auth["tokens"]["access_token"]
        .as_str()
        .expect("access token")
        .to_owned()
}

pub fn assert_problem(status: u16, body: &Value, expected: u16, field: Option<&str>) {
    assert_eq!(status, expected, "unexpected status; body: {body}");
    assert_eq!(body["status"], expected, "problem body: {body}");
    assert!(
        body["type"]
            .as_str()
            .is_some_and(|t| t.starts_with("https://")),
        "problem type: {body}"
    );
    if let Some(f) = field {
        let named = body["errors"]
            .as_array()
            .is_some_and(|errs| errs.iter().any(|e| e["field"] == f));
        assert!(named, "expected a violation naming {f:?}: {body}");
    }
}
