//! OpenAPI 3.1 document generated from the route table and the descriptor set (served at
//! `/openapi.json`).
//!
//! One operation per route; schemas follow the proto3 JSON mapping with proto (snake_case) field
//! names; summaries and descriptions come from the proto comments. Errors reference a shared
//! RFC 9457 `Problem` schema. The output is deterministic (maps are sorted, lists follow the
//! declaration order in the protos) so it can be snapshot-diffed.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use http::Method;
use prost_reflect::{
    EnumDescriptor, FieldDescriptor, FileDescriptor, Kind, MessageDescriptor, MethodDescriptor,
};
use serde_json::{Map, Value as Json, json};

use crate::routes::{BodyRule, PathTemplate, Route, RouteTable, Segment, resolve_field_path};

/// Name of the shared problem+json schema.
const PROBLEM: &str = "Problem";
const PROBLEM_FIELD_ERROR: &str = "ProblemFieldError";
const BEARER_AUTH: &str = "bearerAuth";

/// Error responses every operation may return: status, component name, description.
const ERROR_RESPONSES: &[(u16, &str, &str)] = &[
    (
        400,
        "BadRequest",
        "The request could not be parsed (malformed JSON, bad parameter).",
    ),
    (401, "Unauthorized", "Authentication is missing or invalid."),
    (
        402,
        "PaymentRequired",
        "A limit of the tenant's plan is reached.",
    ),
    (
        403,
        "Forbidden",
        "The caller lacks the required permission.",
    ),
    (
        404,
        "NotFound",
        "The resource does not exist (or is not visible to the caller).",
    ),
    (
        409,
        "Conflict",
        "The resource exists, changed meanwhile, or is in the wrong state.",
    ),
    (
        405,
        "MethodNotAllowed",
        "The path exists but not for this method; see the `Allow` header.",
    ),
    (413, "PayloadTooLarge", "The request body is too large."),
    (
        415,
        "UnsupportedMediaType",
        "The body is not `application/json`.",
    ),
    (
        422,
        "UnprocessableEntity",
        "Some fields are invalid; see `errors`.",
    ),
    (
        429,
        "TooManyRequests",
        "Rate limit exceeded; retry after `Retry-After` seconds.",
    ),
    (500, "InternalError", "Unexpected server error."),
    (
        503,
        "ServiceUnavailable",
        "The service is temporarily unavailable.",
    ),
    (504, "GatewayTimeout", "The service did not answer in time."),
];

fn schema_ref(name: &str) -> Json {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// Comment attached to the element at `path` in `file` (leading, else trailing).
fn comments(file: &FileDescriptor, path: &[i32]) -> Option<String> {
    let info = file.file_descriptor_proto().source_code_info.as_ref()?;
    let location = info.location.iter().find(|l| l.path == path)?;
    let text = location
        .leading_comments
        .as_deref()
        .filter(|c| !c.trim().is_empty())
        .or(location.trailing_comments.as_deref())?;
    let cleaned = text
        .lines()
        .map(|l| l.strip_prefix(' ').unwrap_or(l).trim_end())
        .collect::<Vec<_>>()
        .join("\n");
    let cleaned = cleaned.trim();
    (!cleaned.is_empty()).then(|| cleaned.to_owned())
}

fn field_comments(field: &FieldDescriptor) -> Option<String> {
    comments(&field.parent_file(), field.path())
}

fn message_comments(message: &MessageDescriptor) -> Option<String> {
    comments(&message.parent_file(), message.path())
}

/// First sentence (or first paragraph line) of a comment, for `summary`.
fn summary_of(comment: &str) -> String {
    let first_line = comment.lines().next().unwrap_or_default();
    for (i, _) in first_line.match_indices(". ") {
        let word = first_line[..i].rsplit(' ').next().unwrap_or_default();
        let next = first_line[i + 2..].chars().next();
        // Not after an abbreviation such as `e.g.`, and only before a new sentence.
        if !word.contains('.') && next.is_some_and(char::is_uppercase) {
            return first_line[..=i].to_owned();
        }
    }
    first_line.to_owned()
}

/// `ListApiKeys` -> `List api keys`.
fn humanize(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push(' ');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// OpenAPI path of a template: variables as `{field.path}`, verbs kept (`/v1/x/{id}:launch`).
pub fn openapi_path(template: &PathTemplate) -> String {
    let segments = template.segments();
    let mut out = String::new();
    let mut i = 0;
    while i < segments.len() {
        out.push('/');
        if let Some(var) = template.variables().iter().find(|v| v.start == i) {
            out.push('{');
            out.push_str(&var.field_path);
            out.push('}');
            i = var.end;
            continue;
        }
        match &segments[i] {
            Segment::Literal(l) => out.push_str(l),
            Segment::Wildcard => out.push('*'),
            Segment::MultiWildcard => out.push_str("**"),
        }
        i += 1;
    }
    if let Some(verb) = template.verb() {
        out.push(':');
        out.push_str(verb);
    }
    out
}

/// Schema of a well-known type that has a special JSON form, if `name` is one.
fn well_known_schema(name: &str) -> Option<Json> {
    let nullable = |ty: &str, format: Option<&str>| {
        let mut s = json!({ "type": [ty, "null"] });
        if let Some(f) = format {
            s["format"] = json!(f);
        }
        s
    };
    Some(match name {
        "google.protobuf.Timestamp" => json!({ "type": "string", "format": "date-time" }),
        "google.protobuf.Duration" => json!({
            "type": "string",
            "pattern": "^-?[0-9]+(\\.[0-9]{1,9})?s$",
            "examples": ["1.5s"],
        }),
        "google.protobuf.FieldMask" => json!({
            "type": "string",
            "description": "Comma-separated field paths.",
        }),
        "google.protobuf.Struct" => json!({ "type": "object" }),
        "google.protobuf.Value" => json!({}),
        "google.protobuf.ListValue" => json!({ "type": "array", "items": {} }),
        "google.protobuf.Empty" => json!({ "type": "object" }),
        "google.protobuf.Any" => json!({
            "type": "object",
            "properties": { "@type": { "type": "string" } },
            "required": ["@type"],
        }),
        "google.protobuf.DoubleValue" => nullable("number", Some("double")),
        "google.protobuf.FloatValue" => nullable("number", Some("float")),
        "google.protobuf.Int64Value" => nullable("string", Some("int64")),
        "google.protobuf.UInt64Value" => nullable("string", Some("uint64")),
        "google.protobuf.Int32Value" => nullable("integer", Some("int32")),
        "google.protobuf.UInt32Value" => nullable("integer", Some("uint32")),
        "google.protobuf.BoolValue" => nullable("boolean", None),
        "google.protobuf.StringValue" => nullable("string", None),
        "google.protobuf.BytesValue" => nullable("string", Some("byte")),
        _ => return None,
    })
}

/// Proto3 JSON schema of a scalar kind; `None` for messages and enums.
fn scalar_schema(kind: &Kind) -> Option<Json> {
    Some(match kind {
        Kind::Double => json!({ "type": "number", "format": "double" }),
        Kind::Float => json!({ "type": "number", "format": "float" }),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            json!({ "type": "integer", "format": "int32" })
        }
        Kind::Uint32 | Kind::Fixed32 => {
            json!({ "type": "integer", "format": "uint32", "minimum": 0 })
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            json!({ "type": "string", "format": "int64" })
        }
        Kind::Uint64 | Kind::Fixed64 => json!({ "type": "string", "format": "uint64" }),
        Kind::Bool => json!({ "type": "boolean" }),
        Kind::String => json!({ "type": "string" }),
        Kind::Bytes => json!({ "type": "string", "format": "byte" }),
        Kind::Message(_) | Kind::Enum(_) => return None,
    })
}

fn is_inline_message(message: &MessageDescriptor) -> bool {
    well_known_schema(message.full_name()).is_some()
}

fn is_null_value(e: &EnumDescriptor) -> bool {
    e.full_name() == "google.protobuf.NullValue"
}

/// A message or enum that gets a component schema.
enum Named {
    Message(MessageDescriptor),
    Enum(EnumDescriptor),
}

/// Builds component schemas on demand: every `$ref` handed out queues its target.
struct Schemas {
    /// Full proto name -> component name.
    names: HashMap<String, String>,
    queued: BTreeSet<String>,
    pending: Vec<Named>,
    defined: BTreeMap<String, Json>,
}

impl Schemas {
    /// Names every message and enum reachable from the routes: the name without the package
    /// (`Member`, `Campaign.Step`), or the full name where that would clash.
    fn new(routes: &[Route]) -> Schemas {
        let mut seen: BTreeMap<String, String> = BTreeMap::new();
        let mut stack: Vec<MessageDescriptor> = Vec::new();
        for route in routes {
            stack.push(route.method.input());
            stack.push(route.method.output());
        }
        let short = |full: &str, package: &str| {
            full.strip_prefix(package)
                .and_then(|s| s.strip_prefix('.'))
                .unwrap_or(full)
                .to_owned()
        };
        while let Some(message) = stack.pop() {
            if is_inline_message(&message) || seen.contains_key(message.full_name()) {
                continue;
            }
            if !message.is_map_entry() {
                let name = short(message.full_name(), message.package_name());
                seen.insert(message.full_name().to_owned(), name);
            }
            for field in message.fields() {
                match field.kind() {
                    Kind::Message(m) => stack.push(m),
                    Kind::Enum(e) if !is_null_value(&e) => {
                        let name = short(e.full_name(), e.package_name());
                        seen.insert(e.full_name().to_owned(), name);
                    }
                    _ => {}
                }
            }
        }
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for short_name in seen.values() {
            *counts.entry(short_name).or_default() += 1;
        }
        let names = seen
            .iter()
            .map(|(full, short_name)| {
                let clash = counts[short_name.as_str()] > 1
                    || short_name == PROBLEM
                    || short_name == PROBLEM_FIELD_ERROR;
                let name = if clash {
                    full.clone()
                } else {
                    short_name.clone()
                };
                (full.clone(), name)
            })
            .collect();
        Schemas {
            names,
            queued: BTreeSet::new(),
            pending: Vec::new(),
            defined: BTreeMap::new(),
        }
    }

    fn name_of(&self, full_name: &str) -> String {
        self.names
            .get(full_name)
            .cloned()
            .unwrap_or_else(|| full_name.to_owned())
    }

    fn queue(&mut self, full_name: &str, named: Named) -> Json {
        let name = self.name_of(full_name);
        if self.queued.insert(full_name.to_owned()) {
            self.pending.push(named);
        }
        schema_ref(&name)
    }

    /// Inline schema of a well-known type, else a `$ref` to the message's component.
    fn message(&mut self, message: &MessageDescriptor) -> Json {
        well_known_schema(message.full_name())
            .unwrap_or_else(|| self.queue(message.full_name(), Named::Message(message.clone())))
    }

    fn kind(&mut self, kind: &Kind) -> Json {
        match kind {
            Kind::Message(m) => self.message(m),
            Kind::Enum(e) if is_null_value(e) => json!({ "type": "null" }),
            Kind::Enum(e) => self.queue(e.full_name(), Named::Enum(e.clone())),
            scalar => scalar_schema(scalar).unwrap_or_else(|| json!({})),
        }
    }

    /// Schema of a field without its description (repeated -> array, map -> object).
    fn field_type(&mut self, field: &FieldDescriptor) -> Json {
        if field.is_map() {
            let value = match field.kind() {
                Kind::Message(entry) => self.kind(&entry.map_entry_value_field().kind()),
                _ => json!({}),
            };
            json!({ "type": "object", "additionalProperties": value })
        } else if field.is_list() {
            json!({ "type": "array", "items": self.kind(&field.kind()) })
        } else {
            self.kind(&field.kind())
        }
    }

    /// Schema of a field with its comment as description.
    fn field(&mut self, field: &FieldDescriptor) -> Json {
        let mut schema = self.field_type(field);
        if let Some(doc) = field_comments(field) {
            schema["description"] = json!(doc);
        }
        if field
            .field_descriptor_proto()
            .options
            .as_ref()
            .and_then(|o| o.deprecated)
            == Some(true)
        {
            schema["deprecated"] = json!(true);
        }
        schema
    }

    /// Object schema of `message` with only the fields `keep` accepts.
    fn object(
        &mut self,
        message: &MessageDescriptor,
        keep: impl Fn(&FieldDescriptor) -> bool,
    ) -> Json {
        let mut properties = Map::new();
        for field in message.fields().filter(|f| keep(f)) {
            properties.insert(field.name().to_owned(), self.field(&field));
        }
        let mut schema = json!({ "type": "object", "properties": properties });
        if let Some(doc) = message_comments(message) {
            schema["description"] = json!(doc);
        }
        schema
    }

    fn enumeration(e: &EnumDescriptor) -> Json {
        let names: Vec<String> = e.values().map(|v| v.name().to_owned()).collect();
        let mut doc: Vec<String> = comments(&e.parent_file(), e.path()).into_iter().collect();
        for value in e.values() {
            if let Some(c) = comments(&value.parent_file(), value.path()) {
                doc.push(format!("- `{}`: {}", value.name(), c.replace('\n', " ")));
            }
        }
        let mut schema = json!({ "type": "string", "enum": names });
        if !doc.is_empty() {
            schema["description"] = json!(doc.join("\n"));
        }
        schema
    }

    /// Defines every queued component (and whatever those reference).
    fn finish(mut self) -> BTreeMap<String, Json> {
        while let Some(named) = self.pending.pop() {
            let (full_name, schema) = match named {
                Named::Message(m) => (m.full_name().to_owned(), self.object(&m, |_| true)),
                Named::Enum(e) => (e.full_name().to_owned(), Schemas::enumeration(&e)),
            };
            let name = self.name_of(&full_name);
            self.defined.insert(name, schema);
        }
        self.defined
    }
}

fn problem_schemas() -> [(String, Json); 2] {
    let codes: Vec<&str> = cos_errors::ErrorCode::ALL
        .iter()
        .map(|c| c.as_str())
        .collect();
    [
        (
            PROBLEM.to_owned(),
            json!({
                "type": "object",
                "description": "Problem details (RFC 9457), sent as `application/problem+json` \
                                with every error response.",
                "required": ["type", "title", "status", "code"],
                "properties": {
                    "type": {
                        "type": "string",
                        "format": "uri",
                        "description": "URI identifying the problem type; ends with `code`.",
                    },
                    "title": {
                        "type": "string",
                        "description": "Short, human-readable summary of the problem type.",
                    },
                    "status": {
                        "type": "integer",
                        "format": "int32",
                        "description": "The HTTP status code.",
                    },
                    "detail": {
                        "type": "string",
                        "description": "Explanation specific to this occurrence.",
                    },
                    "instance": {
                        "type": "string",
                        "format": "uri-reference",
                        "description": "The request path.",
                    },
                    "code": {
                        "type": "string",
                        "enum": codes,
                        "description": "Stable, machine-readable error code.",
                    },
                    "request_id": {
                        "type": "string",
                        "description": "ID of the request, for support and log correlation.",
                    },
                    "errors": {
                        "type": "array",
                        "items": schema_ref(PROBLEM_FIELD_ERROR),
                        "description": "The invalid fields, for `invalid_argument`.",
                    },
                    "metadata": {
                        "type": "object",
                        "additionalProperties": { "type": "string" },
                        "description": "Extra facts, e.g. a plan limit's name, value and usage.",
                    },
                },
            }),
        ),
        (
            PROBLEM_FIELD_ERROR.to_owned(),
            json!({
                "type": "object",
                "description": "One invalid field of the request.",
                "required": ["field", "message"],
                "properties": {
                    "field": {
                        "type": "string",
                        "description": "snake_case path of the field as sent, e.g. \
                                        `tokens.access_token` or `members[2].role`.",
                    },
                    "message": {
                        "type": "string",
                        "description": "What is wrong with it.",
                    },
                },
            }),
        ),
    ]
}

fn error_responses() -> Map<String, Json> {
    ERROR_RESPONSES
        .iter()
        .map(|&(status, name, description)| {
            let mut response = json!({
                "description": description,
                "content": { (cos_errors::PROBLEM_CONTENT_TYPE): { "schema": schema_ref(PROBLEM) } },
            });
            if status == 429 {
                response["headers"] = json!({
                    "Retry-After": {
                        "description": "Seconds to wait before retrying.",
                        "schema": { "type": "integer" },
                    },
                });
            }
            (name.to_owned(), response)
        })
        .collect()
}

fn is_deprecated(method: &MethodDescriptor) -> bool {
    method
        .method_descriptor_proto()
        .options
        .as_ref()
        .and_then(|o| o.deprecated)
        == Some(true)
}

/// OpenAPI's name for an HTTP method, if OpenAPI 3.1 has an operation field for it.
fn operation_key(method: &Method) -> Option<&'static str> {
    Some(match *method {
        Method::GET => "get",
        Method::PUT => "put",
        Method::POST => "post",
        Method::DELETE => "delete",
        Method::OPTIONS => "options",
        Method::HEAD => "head",
        Method::PATCH => "patch",
        Method::TRACE => "trace",
        _ => return None,
    })
}

fn operation(route: &Route, operation_id: String, schemas: &mut Schemas) -> Json {
    let method = &route.method;
    let service = method.parent_service();
    let input = method.input();
    let output = method.output();
    let mut op = Map::new();
    op.insert("operationId".into(), json!(operation_id));
    match comments(&method.parent_file(), method.path()) {
        Some(doc) => {
            let summary = summary_of(&doc);
            if summary != doc {
                op.insert("description".into(), json!(doc));
            }
            op.insert("summary".into(), json!(summary));
        }
        None => {
            op.insert("summary".into(), json!(humanize(method.name())));
        }
    }
    op.insert("tags".into(), json!([service.name()]));
    if is_deprecated(method) {
        op.insert("deprecated".into(), json!(true));
    }

    // Parameters: path variables, then (unless the body is the whole message) the remaining
    // top-level scalar fields as query parameters.
    let mut parameters = Vec::new();
    let mut path_bound: BTreeSet<&str> = BTreeSet::new();
    for var in route.template.variables() {
        path_bound.insert(&var.field_path);
        let mut parameter = json!({ "name": var.field_path, "in": "path", "required": true });
        match resolve_field_path(&input, &var.field_path) {
            Ok(field) => {
                parameter["schema"] = schemas.field_type(&field);
                let mut doc = field_comments(&field);
                if !var.is_single_segment(route.template.segments()) {
                    let note = "May contain `/`.".to_owned();
                    doc = Some(doc.map_or(note.clone(), |d| format!("{d}\n\n{note}")));
                }
                if let Some(doc) = doc {
                    parameter["description"] = json!(doc);
                }
            }
            Err(_) => parameter["schema"] = json!({ "type": "string" }),
        }
        parameters.push(parameter);
    }
    let body_field = match &route.body {
        BodyRule::Field(name) => Some(name.as_str()),
        _ => None,
    };
    if route.body != BodyRule::Whole {
        for field in input.fields() {
            if path_bound.contains(field.name())
                || Some(field.name()) == body_field
                || field.is_map()
                || !crate::routes::is_scalar_like(&field)
            {
                continue;
            }
            let mut parameter = json!({
                "name": field.name(),
                "in": "query",
                "schema": schemas.field_type(&field),
            });
            if field.is_list() {
                parameter["style"] = json!("form");
                parameter["explode"] = json!(true);
            }
            if let Some(doc) = field_comments(&field) {
                parameter["description"] = json!(doc);
            }
            parameters.push(parameter);
        }
    }
    if !parameters.is_empty() {
        op.insert("parameters".into(), Json::Array(parameters));
    }

    let request_body = match &route.body {
        BodyRule::None => None,
        BodyRule::Whole if path_bound.iter().all(|p| p.contains('.')) => {
            Some((schemas.message(&input), input.fields().next().is_some()))
        }
        BodyRule::Whole => {
            let schema = schemas.object(&input, |f| !path_bound.contains(f.name()));
            let non_empty = schema["properties"]
                .as_object()
                .is_some_and(|p| !p.is_empty());
            Some((schema, non_empty))
        }
        BodyRule::Field(name) => input
            .get_field_by_name(name)
            .map(|field| (schemas.field(&field), true)),
    };
    if let Some((schema, required)) = request_body {
        op.insert(
            "requestBody".into(),
            json!({
                "required": required,
                "content": { "application/json": { "schema": schema } },
            }),
        );
    }

    let mut responses = Map::new();
    let status = route.success_status;
    let reason = status.canonical_reason().unwrap_or("Success");
    let success = if status == http::StatusCode::NO_CONTENT {
        json!({ "description": reason })
    } else {
        let schema = match route
            .response_body
            .as_deref()
            .and_then(|f| output.get_field_by_name(f))
        {
            Some(field) => schemas.field(&field),
            None => schemas.message(&output),
        };
        json!({
            "description": reason,
            "content": { "application/json": { "schema": schema } },
        })
    };
    responses.insert(status.as_str().to_owned(), success);
    for &(code, name, _) in ERROR_RESPONSES {
        responses.insert(
            code.to_string(),
            json!({ "$ref": format!("#/components/responses/{name}") }),
        );
    }
    op.insert("responses".into(), Json::Object(responses));

    let policy = &route.policy;
    let security = if policy.public {
        json!([])
    } else {
        json!([{ BEARER_AUTH: [] }])
    };
    op.insert("security".into(), security);
    if !policy.permission.is_empty() {
        op.insert("x-permission".into(), json!(policy.permission));
    }
    if policy.platform_admin {
        op.insert("x-platform-admin".into(), json!(true));
    }
    if !policy.rate_limit.is_empty() {
        op.insert("x-rate-limit-class".into(), json!(policy.rate_limit));
    }
    op.insert("x-grpc-method".into(), json!(route.grpc_path));
    Json::Object(op)
}

/// The OpenAPI 3.1 document of every route in `table`.
pub fn document(table: &RouteTable, title: &str, version: &str) -> Json {
    let routes = table.routes();
    let mut schemas = Schemas::new(routes);
    let mut paths: BTreeMap<String, Map<String, Json>> = BTreeMap::new();
    let mut tags: BTreeMap<String, Option<String>> = BTreeMap::new();
    let mut operation_ids: HashMap<String, usize> = HashMap::new();
    for route in routes {
        let Some(key) = operation_key(&route.http_method) else {
            continue;
        };
        let service = route.method.parent_service();
        tags.entry(service.name().to_owned())
            .or_insert_with(|| comments(&service.parent_file(), service.path()));
        let base = format!("{}_{}", service.name(), route.method.name());
        let seen = operation_ids.entry(base.clone()).or_default();
        *seen += 1;
        let operation_id = if *seen == 1 {
            base
        } else {
            format!("{base}_{seen}")
        };
        let op = operation(route, operation_id, &mut schemas);
        paths
            .entry(openapi_path(&route.template))
            .or_default()
            .insert(key.to_owned(), op);
    }
    // The hand-written routes (CSV import, contact export), with the shared error responses
    // they do not define themselves.
    let hand = crate::contact_files::openapi_operations(table, &mut |m| schemas.message(m));
    for (path, key, mut op) in hand {
        if let Some(responses) = op["responses"].as_object_mut() {
            for &(code, name, _) in ERROR_RESPONSES {
                responses
                    .entry(code.to_string())
                    .or_insert_with(|| json!({ "$ref": format!("#/components/responses/{name}") }));
            }
        }
        paths.entry(path).or_default().insert(key.to_owned(), op);
    }
    for (path, key, op) in crate::unsubscribe::openapi_operations() {
        paths.entry(path).or_default().insert(key.to_owned(), op);
    }
    let mut components = schemas.finish();
    components.extend(problem_schemas());
    let tags: Vec<Json> = tags
        .into_iter()
        .map(|(name, doc)| match doc {
            Some(doc) => json!({ "name": name, "description": doc }),
            None => json!({ "name": name }),
        })
        .collect();
    json!({
        "openapi": "3.1.0",
        "info": { "title": title, "version": version },
        "tags": tags,
        "security": [{ BEARER_AUTH: [] }],
        "paths": paths,
        "components": {
            "schemas": components,
            "responses": error_responses(),
            "securitySchemes": {
                BEARER_AUTH: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A JWT access token (from register, login or refresh) or an \
                                    API key (`cos_...`).",
                },
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::tests::kitchen_pool;
    use cos_proto::common::v1::MethodPolicy;
    use http::StatusCode;

    fn identity_document() -> Json {
        let table = RouteTable::from_pool(cos_proto::descriptor_pool()).unwrap();
        document(&table, "Campaign OS", "1.2.3")
    }

    /// Every `$ref` in `node`.
    fn refs<'a>(node: &'a Json, out: &mut Vec<&'a str>) {
        match node {
            Json::Object(map) => {
                for (key, value) in map {
                    if key == "$ref" {
                        out.push(value.as_str().expect("$ref is a string"));
                    } else {
                        refs(value, out);
                    }
                }
            }
            Json::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    fn assert_refs_resolve(doc: &Json) {
        let mut all = Vec::new();
        refs(doc, &mut all);
        assert!(!all.is_empty());
        for r in all {
            let pointer = r
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("non-local $ref {r}"));
            assert!(doc.pointer(pointer).is_some(), "dangling $ref {r}");
        }
    }

    fn schema<'a>(doc: &'a Json, name: &str) -> &'a Json {
        doc.pointer(&format!("/components/schemas/{name}"))
            .unwrap_or_else(|| panic!("no schema {name}"))
    }

    #[test]
    fn identity_document_has_the_expected_operations() {
        let doc = identity_document();
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(
            doc["info"],
            json!({ "title": "Campaign OS", "version": "1.2.3" })
        );
        assert!(
            doc["tags"]
                .as_array()
                .is_some_and(|t| t.contains(&json!({ "name": "IdentityService" }))),
            "{}",
            doc["tags"]
        );

        let register = &doc["paths"]["/v1/auth/register"]["post"];
        assert_eq!(register["operationId"], "IdentityService_Register");
        assert_eq!(
            register["summary"],
            "Creates a user and their first tenant; the caller becomes its owner."
        );
        assert_eq!(register["tags"], json!(["IdentityService"]));
        assert_eq!(register["security"], json!([]));
        assert_eq!(register["x-rate-limit-class"], "auth");
        assert_eq!(
            register["requestBody"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/RegisterRequest"
        );
        assert_eq!(register["requestBody"]["required"], true);
        assert_eq!(
            register["responses"]["201"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/AuthResponse"
        );
        assert!(register["responses"].get("200").is_none());
        for code in [
            "400", "401", "403", "404", "409", "413", "422", "429", "500",
        ] {
            let r = register["responses"][code]["$ref"].as_str().unwrap();
            let response = doc.pointer(r.strip_prefix('#').unwrap()).unwrap();
            assert_eq!(
                response["content"]["application/problem+json"]["schema"]["$ref"],
                "#/components/schemas/Problem",
                "{code}"
            );
        }

        let login = &doc["paths"]["/v1/auth/login"]["post"];
        assert_eq!(login["summary"], "Password login.");
        assert_eq!(
            login["description"],
            "Password login. Unknown email and wrong password give the same error."
        );

        let member = &doc["paths"]["/v1/members/{user_id}"];
        let path_param = json!([{
            "name": "user_id", "in": "path", "required": true, "schema": { "type": "string" },
        }]);
        for method in ["patch", "delete"] {
            assert_eq!(member[method]["parameters"], path_param, "{method}");
            assert_eq!(member[method]["x-permission"], "members.write");
            assert_eq!(member[method]["security"], json!([{ "bearerAuth": [] }]));
        }
        assert_eq!(
            member["patch"]["operationId"],
            "IdentityService_UpdateMember"
        );
        // The body is UpdateMemberRequest minus the path-bound user_id.
        let body = &member["patch"]["requestBody"]["content"]["application/json"]["schema"];
        assert_eq!(body["properties"], json!({ "role": { "type": "string" } }));
        assert_eq!(
            member["delete"]["operationId"],
            "IdentityService_RemoveMember"
        );
        assert_eq!(
            member["delete"]["responses"]["204"],
            json!({ "description": "No Content" })
        );
        assert!(member["delete"].get("requestBody").is_none());
        assert_eq!(member.as_object().unwrap().len(), 2);

        let jwks = &doc["paths"]["/.well-known/jwks.json"]["get"];
        assert_eq!(jwks["security"], json!([]));
        assert_eq!(jwks["operationId"], "IdentityService_GetJwks");
        assert_eq!(
            jwks["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/Jwks"
        );

        let admin = &doc["paths"]["/v1/admin/tenants"]["get"];
        assert_eq!(admin["x-platform-admin"], true);
        assert_eq!(admin["security"], json!([{ "bearerAuth": [] }]));
        let names: Vec<&str> = admin["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                assert_eq!(p["in"], "query");
                p["name"].as_str().unwrap()
            })
            .collect();
        assert_eq!(names, ["page_size", "page_token"]);

        let me = &doc["paths"]["/v1/me"]["get"];
        assert_eq!(me["x-permission"], "profile.read");
        assert!(me.get("parameters").is_none() && me.get("requestBody").is_none());
        assert_eq!(me["summary"], "Get me");
        assert_eq!(
            doc["paths"]["/v1/tenants/{tenant_id}/switch"]["post"]["requestBody"]["required"],
            false
        );

        // Internal RPCs are not documented.
        let text = doc.to_string();
        assert!(!text.contains("AuthenticateApiKey"));
        let identity_operations: usize = doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|p| p.as_object().unwrap().values())
            .filter(|op| op["tags"] == json!(["IdentityService"]))
            .count();
        assert_eq!(identity_operations, 18);
    }

    #[test]
    fn identity_schemas_follow_the_proto3_json_mapping() {
        let doc = identity_document();
        let user = schema(&doc, "User");
        assert_eq!(user["type"], "object");
        assert_eq!(
            user["properties"]["created_at"],
            json!({ "type": "string", "format": "date-time" })
        );
        assert_eq!(
            user["properties"]["platform_admin"],
            json!({ "type": "boolean" })
        );
        assert_eq!(
            schema(&doc, "ApiKey")["properties"]["revoked_at"]["format"],
            "date-time"
        );
        assert_eq!(
            schema(&doc, "Member")["properties"]["joined_at"],
            json!({ "type": "string", "format": "date-time" })
        );
        let tokens = schema(&doc, "Tokens");
        assert_eq!(tokens["properties"]["expires_in"]["type"], "integer");
        assert_eq!(
            tokens["properties"]["expires_in"]["description"],
            "Access-token lifetime in seconds."
        );
        assert_eq!(
            schema(&doc, "AuthResponse")["properties"]["user"],
            json!({ "$ref": "#/components/schemas/User" })
        );
        assert_eq!(
            schema(&doc, "GetMeResponse")["properties"]["permissions"],
            json!({
                "type": "array",
                "items": { "type": "string" },
                "description": "Permissions the caller holds in this tenant (from the role matrix).",
            })
        );
        assert_eq!(
            schema(&doc, "AuditEntry")["properties"]["details"],
            json!({ "type": "object" })
        );
        let problem = schema(&doc, "Problem");
        for field in [
            "type",
            "title",
            "status",
            "detail",
            "instance",
            "code",
            "request_id",
            "errors",
        ] {
            assert!(
                problem["properties"].get(field).is_some(),
                "Problem.{field}"
            );
        }
        assert!(
            problem["properties"]["code"]["enum"]
                .as_array()
                .unwrap()
                .contains(&json!("invalid_argument"))
        );
        assert_eq!(
            doc["components"]["securitySchemes"]["bearerAuth"]["scheme"],
            "bearer"
        );
        // Field names are proto (snake_case) names.
        assert!(
            schema(&doc, "ApiKey")["properties"]
                .get("masked_key")
                .is_some()
        );
        assert!(
            schema(&doc, "ApiKey")["properties"]
                .get("maskedKey")
                .is_none()
        );
    }

    #[test]
    fn every_ref_resolves_and_output_is_deterministic() {
        let doc = identity_document();
        assert_refs_resolve(&doc);
        let again = identity_document();
        assert_eq!(
            serde_json::to_string_pretty(&doc).unwrap(),
            serde_json::to_string_pretty(&again).unwrap()
        );
        // No unused message components beyond the shared ones.
        let mut all = Vec::new();
        refs(&doc, &mut all);
        for name in doc["components"]["schemas"].as_object().unwrap().keys() {
            let r = format!("#/components/schemas/{name}");
            assert!(all.contains(&r.as_str()), "{name} is never referenced");
        }
    }

    fn kitchen_route(
        http_method: Method,
        pattern: &str,
        rpc: &str,
        body: BodyRule,
        response_body: Option<&str>,
    ) -> Route {
        let method = kitchen_pool()
            .get_service_by_name("campaignos.kitchen.v1.KitchenService")
            .unwrap()
            .methods()
            .find(|m| m.name() == rpc)
            .unwrap();
        Route {
            http_method,
            template: PathTemplate::parse(pattern).unwrap(),
            pattern: pattern.to_owned(),
            grpc_path: cos_proto::grpc_path(&method),
            method,
            body,
            response_body: response_body.map(Into::into),
            policy: MethodPolicy {
                permission: "kitchen.cook".into(),
                ..Default::default()
            },
            success_status: StatusCode::OK,
        }
    }

    #[test]
    fn maps_every_kind_verbs_nested_variables_and_bindings() {
        let table = RouteTable::from_routes(vec![
            kitchen_route(
                Method::POST,
                "/v1/sinks/{inner.id}:cook",
                "Cook",
                BodyRule::Whole,
                None,
            ),
            kitchen_route(
                Method::GET,
                "/v1/sinks/{s}",
                "Serve",
                BodyRule::None,
                Some("inner"),
            ),
            kitchen_route(
                Method::PUT,
                "/v1/{display_name=files/**}",
                "Serve",
                BodyRule::Field("inner".into()),
                None,
            ),
        ])
        .unwrap();
        let doc = document(&table, "Kitchen", "0");
        assert_refs_resolve(&doc);

        let cook = &doc["paths"]["/v1/sinks/{inner.id}:cook"]["post"];
        assert_eq!(cook["operationId"], "KitchenService_Cook");
        assert_eq!(cook["x-permission"], "kitchen.cook");
        assert_eq!(cook["parameters"][0]["name"], "inner.id");
        assert_eq!(cook["parameters"][0]["in"], "path");
        assert_eq!(cook["parameters"].as_array().unwrap().len(), 1);
        // A nested path field keeps the whole message as the body.
        assert_eq!(
            cook["requestBody"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/Sink"
        );

        let serve = &doc["paths"]["/v1/sinks/{s}"]["get"];
        assert_eq!(serve["operationId"], "KitchenService_Serve");
        let params = serve["parameters"].as_array().unwrap();
        let names: Vec<&str> = params.iter().map(|p| p["name"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            [
                "s",
                "i32",
                "i64",
                "u32",
                "u64",
                "f",
                "d",
                "b",
                "raw",
                "color",
                "ids",
                "colors",
                "maybe",
                "at",
                "ttl",
                "si64",
                "fx64",
                "display_name"
            ]
        );
        let ids = params.iter().find(|p| p["name"] == "ids").unwrap();
        assert_eq!(
            ids["schema"],
            json!({ "type": "array", "items": { "type": "string", "format": "int64" } })
        );
        assert_eq!(ids["explode"], true);
        // response_body: the field's schema instead of the whole message.
        assert_eq!(
            serve["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/Inner"
        );

        let put = &doc["paths"]["/v1/{display_name}"]["put"];
        assert_eq!(put["operationId"], "KitchenService_Serve_2");
        assert!(
            put["parameters"][0]["description"]
                .as_str()
                .unwrap()
                .contains("May contain `/`")
        );
        assert_eq!(
            put["requestBody"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/Inner"
        );

        let sink = &schema(&doc, "Sink")["properties"];
        let expect = [
            ("i32", json!({ "type": "integer", "format": "int32" })),
            ("i64", json!({ "type": "string", "format": "int64" })),
            ("si64", json!({ "type": "string", "format": "int64" })),
            (
                "u32",
                json!({ "type": "integer", "format": "uint32", "minimum": 0 }),
            ),
            ("u64", json!({ "type": "string", "format": "uint64" })),
            ("fx64", json!({ "type": "string", "format": "uint64" })),
            ("f", json!({ "type": "number", "format": "float" })),
            ("d", json!({ "type": "number", "format": "double" })),
            ("b", json!({ "type": "boolean" })),
            ("s", json!({ "type": "string" })),
            ("raw", json!({ "type": "string", "format": "byte" })),
            ("color", json!({ "$ref": "#/components/schemas/Color" })),
            (
                "colors",
                json!({ "type": "array", "items": { "$ref": "#/components/schemas/Color" } }),
            ),
            (
                "counts",
                json!({
                    "type": "object",
                    "additionalProperties": { "type": "integer", "format": "int32" },
                }),
            ),
            ("inner", json!({ "$ref": "#/components/schemas/Inner" })),
            (
                "maybe",
                json!({ "type": ["integer", "null"], "format": "int32" }),
            ),
            ("at", json!({ "type": "string", "format": "date-time" })),
        ];
        for (name, want) in expect {
            assert_eq!(sink[name], want, "Sink.{name}");
        }
        assert_eq!(sink["ttl"]["type"], "string");
        assert_eq!(
            schema(&doc, "Color"),
            &json!({ "type": "string", "enum": ["COLOR_UNSPECIFIED", "RED", "GREEN"] })
        );
        assert_eq!(
            schema(&doc, "Inner")["properties"]["many"],
            json!({ "type": "array", "items": { "$ref": "#/components/schemas/Inner" } })
        );
        assert!(
            doc["components"]["schemas"]
                .get("Sink.CountsEntry")
                .is_none()
        );
    }

    #[test]
    fn openapi_paths_and_summaries() {
        let path = |t: &str| openapi_path(&PathTemplate::parse(t).unwrap());
        assert_eq!(
            path("/v1/tenants/{tenant_id}/switch"),
            "/v1/tenants/{tenant_id}/switch"
        );
        assert_eq!(
            path("/v1/campaigns/{campaign_id}:launch"),
            "/v1/campaigns/{campaign_id}:launch"
        );
        assert_eq!(path("/v1/segments:preview"), "/v1/segments:preview");
        assert_eq!(path("/v1/{name=shelves/*/books/*}/x"), "/v1/{name}/x");
        assert_eq!(path("/v1/{campaign.id}"), "/v1/{campaign.id}");
        assert_eq!(summary_of("One. Two."), "One.");
        assert_eq!(summary_of("e.g. this"), "e.g. this");
        assert_eq!(summary_of("Use e.g. This one. Then"), "Use e.g. This one.");
        assert_eq!(summary_of("Version 2. then more"), "Version 2. then more");
        assert_eq!(summary_of("Line one\nline two"), "Line one");
        assert_eq!(humanize("ListApiKeys"), "List api keys");
    }
}
