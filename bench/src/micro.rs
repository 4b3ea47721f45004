//! The gateway's per-request steps timed in isolation, on one task, against the running mesh:
//! what a request through the gateway pays on top of the direct call. Mirrors (does not call:
//! those are private) the gateway's code paths with the same libraries and settings:
//!
//! - JWT verification: `cos_auth::TokenVerifier::verify` with identity's JWKS (Ed25519 signature
//!   check plus header/claims JSON parsing), which the gateway runs on every request;
//! - the rate-limit round trip: the gateway's Redis script (INCR + PEXPIRE + PTTL per window) for
//!   the two windows an authenticated request counts against (IP and tenant); mean wall time
//!   per call, and Redis server CPU per call;
//! - transcoding: decoding the `GetMeResponse` bytes into a `DynamicMessage` and rendering it
//!   as JSON with the gateway's serializer options.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use cos_auth::{Jwk, KeySet, TokenVerifier};
use cos_proto::identity::v1::identity_service_client::IdentityServiceClient;
use cos_proto::identity::v1::{GetJwksRequest, GetMeRequest};
use prost_reflect::{DynamicMessage, SerializeOptions};
use serde_json::{Value, json};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;

use crate::cpu;

/// The gateway's rate-limit script (gateway/src/ratelimit.rs), verbatim.
const SCRIPT: &str = r"
local out = {}
for i, key in ipairs(KEYS) do
  local n = redis.call('INCR', key)
  if n == 1 then redis.call('PEXPIRE', key, ARGV[1]) end
  local ttl = redis.call('PTTL', key)
  if ttl < 0 then redis.call('PEXPIRE', key, ARGV[1]); ttl = tonumber(ARGV[1]) end
  out[#out + 1] = n
  out[#out + 1] = ttl
end
return out
";

const SERIALIZE: SerializeOptions = SerializeOptions::new()
    .use_proto_field_name(true)
    .skip_default_fields(false)
    .stringify_64_bit_integers(true);

/// Runs `f` for about `budget` (at least 100 times) and returns mean µs per call.
fn time_per_op(budget: Duration, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    let start = Instant::now();
    let mut n = 0u64;
    while n < 100 || start.elapsed() < budget {
        f()?;
        n += 1;
    }
    Ok(start.elapsed().as_secs_f64() * 1e6 / n as f64)
}

pub struct Inputs<'a> {
    pub channel: Channel,
    pub auth: MetadataValue<Ascii>,
    pub token: &'a str,
    pub issuer: &'a str,
    pub audience: &'a str,
    pub redis_url: &'a str,
}

pub async fn measure(i: Inputs<'_>) -> anyhow::Result<Value> {
    let budget = Duration::from_millis(500);
    let mut client = IdentityServiceClient::new(i.channel.clone());

    // JWT verification, as the gateway (and identity itself) does per request.
    let jwks = client.get_jwks(GetJwksRequest {}).await?.into_inner();
    let keys = KeySet::new();
    keys.replace(
        &jwks
            .keys
            .into_iter()
            .map(|k| Jwk {
                kty: k.kty,
                crv: k.crv,
                x: k.x,
                kid: k.kid,
                alg: k.alg,
                use_: k.r#use,
            })
            .collect::<Vec<_>>(),
    )?;
    let verifier = TokenVerifier::new(keys, i.issuer, i.audience);
    verifier
        .verify(i.token)
        .context("verifying the bench token")?;
    let jwt_us = time_per_op(budget, || {
        verifier.verify(i.token)?;
        Ok(())
    })?;

    // Transcoding the response: protobuf bytes -> DynamicMessage -> JSON.
    let mut req = tonic::Request::new(GetMeRequest {});
    req.metadata_mut().insert("authorization", i.auth.clone());
    let me = client.get_me(req).await?.into_inner();
    let bytes = bytes_of(&me);
    let desc = cos_proto::descriptor_pool()
        .get_message_by_name("campaignos.identity.v1.GetMeResponse")
        .context("GetMeResponse descriptor")?;
    let mut json_len = 0;
    let transcode_us = time_per_op(budget, || {
        let msg = DynamicMessage::decode(desc.clone(), bytes.as_slice())?;
        let mut out = Vec::with_capacity(256);
        msg.serialize_with_options(&mut serde_json::Serializer::new(&mut out), &SERIALIZE)?;
        json_len = out.len();
        Ok(())
    })?;

    // The rate-limit round trip: one script call with the IP and tenant windows. Best effort:
    // a run that points the gateway at no Redis (to see the fail-open path) has none to time.
    let (redis_rtt_us, redis_cpu_us) = match redis_roundtrip(i.redis_url, budget).await {
        Ok((rtt, cpu)) => (json!(round1(rtt)), json!(round1(cpu))),
        Err(e) => {
            eprintln!("note: rate-limit round trip not timed: {e}");
            (Value::Null, Value::Null)
        }
    };

    Ok(json!({
        "jwt_verify_us": round1(jwt_us),
        "transcode_getme_response_us": round1(transcode_us),
        "getme_response_bytes": bytes.len(),
        "getme_json_bytes": json_len,
        "redis_ratelimit_roundtrip_us": redis_rtt_us,
        "redis_server_cpu_per_call_us": redis_cpu_us,
    }))
}

/// Mean wall time (µs) of the gateway's rate-limit script call, and Redis server CPU per call.
async fn redis_roundtrip(url: &str, budget: Duration) -> anyhow::Result<(f64, f64)> {
    let redis = redis::Client::open(url)?;
    let mut conn = redis.get_multiplexed_async_connection().await?;
    let script = redis::Script::new(SCRIPT);
    let prefix = format!("cos:bench:micro:{}:", cos_testkit::unique_suffix());
    let keys = [
        format!("{prefix}rl:ip:127.0.0.1"),
        format!("{prefix}rl:tenant:t"),
    ];
    let call = |conn: &mut redis::aio::MultiplexedConnection| {
        let mut inv = script.prepare_invoke();
        for k in &keys {
            inv.key(k);
        }
        inv.arg(60_000u64);
        let mut conn = conn.clone();
        async move { inv.invoke_async::<Vec<i64>>(&mut conn).await }
    };
    call(&mut conn).await?;
    let before = cpu::sample();
    let start = Instant::now();
    let mut n = 0u64;
    while n < 200 || start.elapsed() < budget {
        call(&mut conn).await?;
        n += 1;
    }
    let rtt_us = start.elapsed().as_secs_f64() * 1e6 / n as f64;
    let usage = cpu::sample().usage_since(&before);
    let cpu_us = usage.by_group.get("redis").copied().unwrap_or(0.0) * 1e6 / n as f64;
    let mut del = redis::cmd("DEL");
    for k in &keys {
        del.arg(k);
    }
    let _: Result<i64, _> = del.query_async(&mut conn).await;
    Ok((rtt_us, cpu_us))
}

fn bytes_of(m: &impl prost::Message) -> Vec<u8> {
    m.encode_to_vec()
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}
