//! JSON <-> protobuf for one route: builds the request message from body, path variables and
//! query string, and renders the response message as JSON (proto field names, defaults included,
//! 64-bit integers as strings per the proto3 JSON mapping).

use cos_errors::{ErrorCode, ServiceError};
use prost_reflect::{DeserializeOptions, DynamicMessage, SerializeOptions, Value};

use crate::routes::{BodyRule, Route, set_field_path};

const SERIALIZE: SerializeOptions = SerializeOptions::new()
    .use_proto_field_name(true)
    .skip_default_fields(false)
    .stringify_64_bit_integers(true);

fn malformed(field: impl Into<String>, message: impl Into<String>) -> ServiceError {
    let (field, message) = (field.into(), message.into());
    let mut e = ServiceError::new(ErrorCode::MalformedRequest, format!("{field}: {message}"));
    e.violations
        .push(cos_errors::FieldViolation { field, message });
    e
}

/// Parses a JSON body into a message of `desc`, naming the offending field on error.
fn parse_json(
    desc: prost_reflect::MessageDescriptor,
    body: &[u8],
    prefix: &str,
) -> Result<DynamicMessage, ServiceError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let mut track = serde_path_to_error::Track::new();
    let parsed = DynamicMessage::deserialize_with_options(
        desc,
        serde_path_to_error::Deserializer::new(&mut de, &mut track),
        &DeserializeOptions::new().deny_unknown_fields(true),
    );
    let msg = match parsed {
        Ok(m) => m,
        Err(err) => {
            let path = track.path().to_string();
            let field = match (prefix.is_empty(), path.as_str()) {
                (true, "." | "") => "body".to_owned(),
                (true, p) => p.to_owned(),
                (false, "." | "") => prefix.to_owned(),
                (false, p) => format!("{prefix}.{p}"),
            };
            // serde_json's message ends with "at line 1 column 17": keep it, it helps clients.
            return Err(malformed(field, err.to_string()));
        }
    };
    de.end()
        .map_err(|e| malformed("body", format!("trailing data after the JSON value: {e}")))?;
    Ok(msg)
}

fn decode_query_component(s: &str) -> Result<String, ServiceError> {
    let plus_as_space = s.replace('+', " ");
    percent_encoding::percent_decode_str(&plus_as_space)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| malformed("query", "is not valid UTF-8 after percent-decoding"))
}

/// The request message for `route`.
pub fn request_message(
    route: &Route,
    body: &[u8],
    path_vars: &[(String, String)],
    query: Option<&str>,
) -> Result<DynamicMessage, ServiceError> {
    let input = route.method.input();
    let has_body = !body.iter().all(u8::is_ascii_whitespace);
    let mut msg = match &route.body {
        BodyRule::Whole if has_body => parse_json(input.clone(), body, "")?,
        BodyRule::Field(field) if has_body => {
            let fd = input.get_field_by_name(field).ok_or_else(|| {
                ServiceError::new(ErrorCode::Internal, "route body field missing")
            })?;
            let mut msg = DynamicMessage::new(input.clone());
            match fd.kind().as_message() {
                Some(m) => {
                    let inner = parse_json(m.clone(), body, field)?;
                    msg.set_field(&fd, Value::Message(inner));
                }
                None => return Err(malformed(field.clone(), "body must be a JSON object")),
            }
            msg
        }
        BodyRule::None if has_body => {
            return Err(malformed("body", "this endpoint takes no request body"));
        }
        _ => DynamicMessage::new(input.clone()),
    };
    for (field, value) in path_vars {
        // A path variable always wins over the same field in the body.
        msg.clear_field_by_name(field);
        set_field_path(&mut msg, field, value).map_err(|e| malformed(e.field, e.message))?;
    }
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        for pair in q.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let key = decode_query_component(k)?;
            let value = decode_query_component(v)?;
            if path_vars.iter().any(|(f, _)| *f == key) {
                return Err(malformed(key, "is already given in the path"));
            }
            if matches!(route.body, BodyRule::Whole) {
                return Err(malformed(
                    key,
                    "query parameters are not accepted here; send fields in the JSON body",
                ));
            }
            set_field_path(&mut msg, &key, &value).map_err(|e| malformed(e.field, e.message))?;
        }
    }
    Ok(msg)
}

/// JSON body of a successful response.
pub fn response_json(route: &Route, msg: &DynamicMessage) -> Result<Vec<u8>, ServiceError> {
    let mut out = Vec::with_capacity(256);
    let mut ser = serde_json::Serializer::new(&mut out);
    let result = match &route.response_body {
        Some(field) => match msg.get_field_by_name(field).as_deref() {
            Some(Value::Message(inner)) => inner.serialize_with_options(&mut ser, &SERIALIZE),
            _ => msg.serialize_with_options(&mut ser, &SERIALIZE),
        },
        None => msg.serialize_with_options(&mut ser, &SERIALIZE),
    };
    result.map_err(|e| {
        tracing::error!(error = %e, "rendering response JSON failed");
        ServiceError::internal()
    })?;
    Ok(out)
}
