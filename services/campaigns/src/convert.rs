//! Protobuf <-> stored JSON <-> domain conversions for campaign content, budgets, variants and
//! schedules.

use chrono::{DateTime, Utc};
use cos_proto::campaigns::v1 as pb;
use serde_json::{Map, Value, json};

use crate::domain::{input, state, template};
use crate::store::CampaignRow;

/// A segmentation contact as templates see it.
pub fn render_contact(c: &cos_proto::segmentation::v1::Contact) -> template::RenderContact {
    let opt = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    template::RenderContact {
        contact_id: c.id.clone(),
        email: opt(&c.email),
        phone: opt(&c.phone),
        external_id: opt(&c.external_id),
        first_name: opt(&c.first_name),
        last_name: opt(&c.last_name),
        locale: opt(&c.locale),
        time_zone: opt(&c.time_zone),
        attributes: c
            .attributes
            .as_ref()
            .map(|s| {
                s.fields
                    .iter()
                    .map(|(k, v)| (k.clone(), proto_value_to_json(v)))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// A Struct as a JSON object.
pub fn struct_to_json(s: &prost_types::Struct) -> Value {
    Value::Object(
        s.fields
            .iter()
            .map(|(k, v)| (k.clone(), proto_value_to_json(v)))
            .collect(),
    )
}

fn proto_value_to_json(v: &prost_types::Value) -> Value {
    use prost_types::value::Kind;
    match &v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(*b),
        // Whole numbers print as "42", not "42.0".
        Some(Kind::NumberValue(n)) if n.fract() == 0.0 && n.abs() < 9.0e15 => {
            Value::from(*n as i64)
        }
        Some(Kind::NumberValue(n)) => serde_json::Number::from_f64(*n)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        Some(Kind::StringValue(s)) => Value::String(s.clone()),
        Some(Kind::ListValue(l)) => {
            Value::Array(l.values.iter().map(proto_value_to_json).collect())
        }
        Some(Kind::StructValue(s)) => Value::Object(
            s.fields
                .iter()
                .map(|(k, v)| (k.clone(), proto_value_to_json(v)))
                .collect(),
        ),
    }
}

pub fn ts(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

/// The stored form of content: only the channels that have content.
pub fn content_to_json(c: &pb::Content) -> Value {
    let mut m = Map::new();
    if let Some(e) = &c.email {
        m.insert(
            "email".into(),
            json!({"subject": e.subject, "preheader": e.preheader,
                   "html_body": e.html_body, "text_body": e.text_body}),
        );
    }
    if let Some(s) = &c.sms {
        m.insert("sms".into(), json!({"text": s.text}));
    }
    if let Some(w) = &c.webhook {
        m.insert("webhook".into(), json!({"json_template": w.json_template}));
    }
    Value::Object(m)
}

fn text(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

pub fn content_from_json(v: &Value) -> pb::Content {
    pb::Content {
        email: v.get("email").map(|e| pb::EmailContent {
            subject: text(e, "subject"),
            preheader: text(e, "preheader"),
            html_body: text(e, "html_body"),
            text_body: text(e, "text_body"),
        }),
        sms: v.get("sms").map(|s| pb::SmsContent {
            text: text(s, "text"),
        }),
        webhook: v.get("webhook").map(|w| pb::WebhookContent {
            json_template: text(w, "json_template"),
        }),
    }
}

pub fn content_to_domain(c: &pb::Content) -> template::Content {
    template::Content {
        email: c.email.as_ref().map(|e| template::EmailContent {
            subject: e.subject.clone(),
            preheader: e.preheader.clone(),
            html_body: e.html_body.clone(),
            text_body: e.text_body.clone(),
        }),
        sms: c.sms.as_ref().map(|s| template::SmsContent {
            text: s.text.clone(),
        }),
        webhook: c.webhook.as_ref().map(|w| template::WebhookContent {
            json_template: w.json_template.clone(),
        }),
    }
}

pub fn variants_to_json(v: &[input::Variant]) -> Value {
    Value::Array(
        v.iter()
            .map(|v| json!({"key": v.key, "name": v.name, "weight": v.weight}))
            .collect(),
    )
}

pub fn variants_from_json(v: &Value) -> Vec<pb::Variant> {
    v.as_array()
        .map(|items| {
            items
                .iter()
                .map(|i| pb::Variant {
                    key: text(i, "key"),
                    name: text(i, "name"),
                    weight: i
                        .get("weight")
                        .and_then(Value::as_u64)
                        .and_then(|w| u32::try_from(w).ok())
                        .unwrap_or(1),
                })
                .collect()
        })
        .unwrap_or_default()
}

pub fn variants_to_domain(v: &[pb::Variant]) -> Vec<input::Variant> {
    v.iter()
        .map(|v| input::Variant {
            key: v.key.trim().to_owned(),
            name: v.name.trim().to_owned(),
            weight: v.weight,
        })
        .collect()
}

pub fn campaign_pb(r: &CampaignRow) -> pb::Campaign {
    let status = state::Status::parse(&r.status);
    pb::Campaign {
        id: r.id.to_string(),
        name: r.name.clone(),
        description: r.description.clone(),
        goal: r.goal.clone(),
        r#type: r.kind.clone(),
        status: r.status.clone(),
        channels: r.channels.clone(),
        platforms: r.platforms.clone(),
        target_segment_ids: r.target_segment_ids.iter().map(|u| u.to_string()).collect(),
        exclusion_segment_ids: r
            .exclusion_segment_ids
            .iter()
            .map(|u| u.to_string())
            .collect(),
        content: Some(content_from_json(&r.content.0)),
        budget: r.budget_amount_minor.zip(r.budget_currency.clone()).map(
            |(amount_minor, currency)| pb::Budget {
                amount_minor,
                currency,
            },
        ),
        schedule: match (r.send_at, &r.time_zone, r.local_send_at) {
            (Some(send_at), Some(tz), Some(local)) => Some(pb::Schedule {
                send_at: Some(ts(send_at)),
                time_zone: tz.clone(),
                local_send_at: local.format("%Y-%m-%dT%H:%M:%S").to_string(),
                ambiguous_local_time: r.ambiguous_local_time,
            }),
            _ => None,
        },
        variants: variants_from_json(&r.variants.0),
        owner_user_id: r.owner_user_id.to_string(),
        version: r.version,
        created_at: Some(ts(r.created_at)),
        updated_at: Some(ts(r.updated_at)),
        allowed_actions: status
            .map(|s| {
                state::allowed_actions(s)
                    .into_iter()
                    .map(|a| a.as_str().to_owned())
                    .collect()
            })
            .unwrap_or_default(),
        duplicated_from: r.duplicated_from.map(|u| u.to_string()).unwrap_or_default(),
        last_error: r.last_error.clone(),
    }
}
