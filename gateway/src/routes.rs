//! The gateway's route table, built from the `google.api.http` annotations in the descriptor set.
//!
//! [`PathTemplate`] implements the path-template syntax of `google/api/http.proto`:
//!
//! ```text
//! Template = "/" Segments [ Verb ] ;
//! Segments = Segment { "/" Segment } ;
//! Segment  = "*" | "**" | LITERAL | Variable ;
//! Variable = "{" FieldPath [ "=" Segments ] "}" ;
//! FieldPath = IDENT { "." IDENT } ;
//! Verb     = ":" LITERAL ;
//! ```
//!
//! `**` must be the last segment. A single-segment variable (`{id}`, `{id=*}`) is fully
//! percent-decoded; a multi-segment one (`{name=**}`, `{name=shelves/*}`) keeps `%2F` encoded,
//! as the spec asks. A template with a verb only matches paths ending in `:verb`, and its last
//! variable gets the value without it; as the verb counts as a literal for precedence,
//! `/v1/campaigns/{id}:launch` beats `/v1/campaigns/{id}` for `/v1/campaigns/c1:launch`. [`RouteTable`] indexes every exposed RPC by HTTP method and first literal
//! segment, picks the most specific template when several match and tells a 404 from a 405.
//! [`set_field_path`] writes path variables and query parameters into the request message.

use std::borrow::Cow;
use std::collections::HashMap;

use cos_proto::common::v1::MethodPolicy;
use cos_proto::google::api::HttpRule;
use cos_proto::google::api::http_rule::Pattern;
use http::{Method, StatusCode};
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor,
    ReflectMessage, Value,
};

/// Why a path template or an HTTP binding was rejected. Returned at start-up, so a bad
/// annotation stops the gateway instead of silently not routing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The template does not follow the `google.api.http` path syntax.
    #[error("invalid path template `{template}` at byte {position}: {reason}")]
    Syntax {
        template: String,
        position: usize,
        reason: String,
    },
    /// Two RPCs bind the same HTTP method and path shape.
    #[error(
        "{http_method} {pattern} ({rpc}) conflicts with {http_method} {other_pattern} ({other_rpc})"
    )]
    Conflict {
        http_method: Method,
        pattern: String,
        rpc: String,
        other_pattern: String,
        other_rpc: String,
    },
    /// The binding does not fit the RPC (unknown field, bad method, bad status, ...).
    #[error("http binding of {rpc}: {reason}")]
    Binding { rpc: String, reason: String },
}

/// One segment of a template's path (variables are ranges over these, see [`Variable`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Segment {
    /// Matches exactly this (percent-decoded) segment.
    Literal(String),
    /// `*`: any one non-empty segment.
    Wildcard,
    /// `**`: zero or more segments; always the last segment.
    MultiWildcard,
}

/// A `{field.path}` / `{field.path=segments}` variable covering `segments[start..end]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable {
    /// Dot-separated field path in the request message (`campaign.id`).
    pub field_path: String,
    pub start: usize,
    pub end: usize,
}

impl Variable {
    /// True for `{x}`/`{x=*}`: the value is one segment, so it is fully percent-decoded.
    pub fn is_single_segment(&self, segments: &[Segment]) -> bool {
        self.end - self.start == 1 && segments[self.start] != Segment::MultiWildcard
    }
}

/// A parsed `google.api.http` path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    segments: Vec<Segment>,
    variables: Vec<Variable>,
    verb: Option<String>,
}

/// Characters allowed in a literal segment or a verb (RFC 3986 `pchar` minus `%`).
fn is_literal_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~!$&'()+,;@:".contains(c)
}

struct Parser<'t> {
    template: &'t str,
    /// The template without its verb.
    body: &'t str,
    pos: usize,
    segments: Vec<Segment>,
    variables: Vec<Variable>,
}

impl<'t> Parser<'t> {
    fn error(&self, position: usize, reason: impl Into<String>) -> TemplateError {
        TemplateError::Syntax {
            template: self.template.to_owned(),
            position,
            reason: reason.into(),
        }
    }

    fn peek(&self) -> Option<char> {
        self.body[self.pos..].chars().next()
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.pos += c.len_utf8();
            true
        } else {
            false
        }
    }

    fn segments(&mut self, in_variable: bool) -> Result<(), TemplateError> {
        loop {
            self.segment(in_variable)?;
            if !self.eat('/') {
                return Ok(());
            }
        }
    }

    fn segment(&mut self, in_variable: bool) -> Result<(), TemplateError> {
        let start = self.pos;
        match self.peek() {
            None | Some('/') => Err(self.error(start, "empty segment")),
            Some('}') if in_variable => Err(self.error(start, "empty segment")),
            Some('*') => {
                self.pos += 1;
                let segment = if self.eat('*') {
                    Segment::MultiWildcard
                } else {
                    Segment::Wildcard
                };
                match self.peek() {
                    None | Some('/') => {}
                    Some('}') if in_variable => {}
                    Some(c) => {
                        return Err(self.error(
                            self.pos,
                            format!("`*` and `**` must be a whole segment, found `{c}` after it"),
                        ));
                    }
                }
                self.segments.push(segment);
                Ok(())
            }
            Some('{') => {
                if in_variable {
                    return Err(self.error(start, "variables cannot be nested"));
                }
                self.variable()
            }
            Some(_) => {
                while let Some(c) = self.peek() {
                    if c == '/' || (in_variable && c == '}') {
                        break;
                    }
                    if !is_literal_char(c) {
                        return Err(self.error(
                            self.pos,
                            format!("character `{c}` is not allowed in a literal segment"),
                        ));
                    }
                    self.pos += c.len_utf8();
                }
                self.segments
                    .push(Segment::Literal(self.body[start..self.pos].to_owned()));
                Ok(())
            }
        }
    }

    fn variable(&mut self) -> Result<(), TemplateError> {
        let open = self.pos;
        self.pos += 1; // `{`
        let path_start = self.pos;
        loop {
            let ident_start = self.pos;
            match self.peek() {
                Some(c) if c.is_ascii_alphabetic() || c == '_' => self.pos += 1,
                Some(c) => {
                    return Err(self.error(
                        ident_start,
                        format!("expected a field name in the variable, found `{c}`"),
                    ));
                }
                None => return Err(self.error(open, "unclosed `{`")),
            }
            while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || c == '_') {
                self.pos += 1;
            }
            if !self.eat('.') {
                break;
            }
        }
        let field_path = self.body[path_start..self.pos].to_owned();
        let start = self.segments.len();
        if self.eat('=') {
            self.segments(true)?;
        } else {
            self.segments.push(Segment::Wildcard);
        }
        if !self.eat('}') {
            return Err(match self.peek() {
                None => self.error(open, "unclosed `{`"),
                Some(c) => self.error(self.pos, format!("expected `}}`, found `{c}`")),
            });
        }
        for other in &self.variables {
            let (a, b) = (other.field_path.as_str(), field_path.as_str());
            let overlaps = a == b
                || a.strip_prefix(b).is_some_and(|r| r.starts_with('.'))
                || b.strip_prefix(a).is_some_and(|r| r.starts_with('.'));
            if overlaps {
                return Err(self.error(
                    open,
                    format!("field `{field_path}` overlaps the earlier variable `{a}`"),
                ));
            }
        }
        self.variables.push(Variable {
            field_path,
            start,
            end: self.segments.len(),
        });
        Ok(())
    }
}

impl PathTemplate {
    /// Parses a `google.api.http` path template such as `/v1/tenants/{tenant_id}/switch`,
    /// `/v1/{name=files/**}` or `/v1/campaigns/{campaign.id}:launch`.
    pub fn parse(template: &str) -> Result<PathTemplate, TemplateError> {
        let syntax = |position: usize, reason: &str| TemplateError::Syntax {
            template: template.to_owned(),
            position,
            reason: reason.to_owned(),
        };
        if !template.starts_with('/') {
            return Err(syntax(0, "a path template must start with `/`"));
        }
        // The verb is a `:` outside braces after the last `/` outside braces.
        let mut depth = 0usize;
        let mut colon = None;
        for (i, c) in template.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth = depth
                        .checked_sub(1)
                        .ok_or_else(|| syntax(i, "`}` without a matching `{`"))?;
                }
                '/' if depth == 0 => colon = None,
                ':' if depth == 0 && colon.is_none() => colon = Some(i),
                _ => {}
            }
        }
        let (body, verb) = match colon {
            Some(i) => {
                let verb = &template[i + 1..];
                if verb.is_empty() {
                    return Err(syntax(i, "empty custom verb after `:`"));
                }
                if let Some((j, c)) = verb.char_indices().find(|&(_, c)| !is_literal_char(c)) {
                    return Err(syntax(
                        i + 1 + j,
                        &format!("character `{c}` is not allowed in a custom verb"),
                    ));
                }
                (&template[..i], Some(verb.to_owned()))
            }
            None => (template, None),
        };
        let mut parser = Parser {
            template,
            body,
            pos: 1,
            segments: Vec::new(),
            variables: Vec::new(),
        };
        parser.segments(false)?;
        if let Some(c) = parser.peek() {
            return Err(parser.error(parser.pos, format!("unexpected `{c}`")));
        }
        if let Some(i) = parser
            .segments
            .iter()
            .position(|s| *s == Segment::MultiWildcard)
            && i + 1 != parser.segments.len()
        {
            return Err(syntax(
                template.find("**").unwrap_or(0),
                "`**` must be the last segment",
            ));
        }
        Ok(PathTemplate {
            segments: parser.segments,
            variables: parser.variables,
            verb,
        })
    }

    /// The template's segments; variables refer to ranges of them.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Variables in template order.
    pub fn variables(&self) -> &[Variable] {
        &self.variables
    }

    /// The custom verb (`launch` in `/v1/campaigns/{campaign_id}:launch`).
    pub fn verb(&self) -> Option<&str> {
        self.verb.as_deref()
    }

    /// Number of literal segments, the verb counting as one: the main precedence key.
    pub fn literal_count(&self) -> usize {
        self.segments
            .iter()
            .filter(|s| matches!(s, Segment::Literal(_)))
            .count()
            + usize::from(self.verb.is_some())
    }

    /// Matches a request path (without query string); on success returns each variable's field
    /// path with its percent-decoded value, in template order.
    pub fn matches(&self, path: &str) -> Option<Vec<(String, String)>> {
        let rest = path.strip_prefix('/')?;
        let segments: Vec<&str> = rest.split('/').collect();
        self.match_segments(&segments)
    }

    /// Matches the `/`-split path (leading `/` removed).
    fn match_segments(&self, path: &[&str]) -> Option<Vec<(String, String)>> {
        let n = path.len();
        let last = match &self.verb {
            Some(verb) => {
                let last = path[n - 1].strip_suffix(verb.as_str())?;
                last.strip_suffix(':')?
            }
            None => path[n - 1],
        };
        let get = |i: usize| if i + 1 == n { last } else { path[i] };
        let multi = self.segments.last() == Some(&Segment::MultiWildcard);
        let fixed = self.segments.len() - usize::from(multi);
        if (multi && n < fixed) || (!multi && n != fixed) {
            return None;
        }
        for i in 0..n {
            let segment = get(i);
            if segment.is_empty() {
                return None;
            }
            if i < fixed
                && let Segment::Literal(literal) = &self.segments[i]
                && percent_decode(segment, false)?.as_ref() != literal
            {
                return None;
            }
        }
        let mut bound = Vec::with_capacity(self.variables.len());
        for var in &self.variables {
            let value = if var.is_single_segment(&self.segments) {
                percent_decode(get(var.start), false)?.into_owned()
            } else {
                let end = if var.end == self.segments.len() {
                    n
                } else {
                    var.end
                };
                let joined = (var.start..end).map(get).collect::<Vec<_>>().join("/");
                percent_decode(&joined, true)?.into_owned()
            };
            if value.is_empty() {
                return None;
            }
            bound.push((var.field_path.clone(), value));
        }
        Some(bound)
    }

    /// Shape of the template with variable names erased: two templates with the same shape
    /// match exactly the same paths.
    fn shape(&self) -> Shape<'_> {
        (&self.segments, self.verb.as_deref())
    }

    fn rank(&self) -> Rank {
        Rank {
            literals: self.literal_count(),
            no_multi: self.segments.last() != Some(&Segment::MultiWildcard),
            shape: self
                .segments
                .iter()
                .map(|s| match s {
                    Segment::Literal(_) => 2,
                    Segment::Wildcard => 1,
                    Segment::MultiWildcard => 0,
                })
                .collect(),
        }
    }
}

/// A template's segments and verb (see [`PathTemplate::shape`]).
type Shape<'a> = (&'a [Segment], Option<&'a str>);

/// Precedence of a template when several match a path: more literal segments, then no `**`,
/// then literals earlier in the path win. Greater is better.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Rank {
    literals: usize,
    no_multi: bool,
    shape: Vec<u8>,
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes `%XX` escapes (a `%` not followed by two hex digits stays as is). With `keep_slash`,
/// `%2F` stays encoded (multi-segment variables). `None` if the result is not UTF-8.
fn percent_decode(s: &str, keep_slash: bool) -> Option<Cow<'_, str>> {
    if !s.contains('%') {
        return Some(Cow::Borrowed(s));
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).copied().and_then(hex_value),
                bytes.get(i + 2).copied().and_then(hex_value),
            )
        {
            let decoded = hi * 16 + lo;
            if keep_slash && decoded == b'/' {
                out.extend_from_slice(&bytes[i..i + 3]);
            } else {
                out.push(decoded);
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

/// How the HTTP body maps onto the request message (`body` of the http rule).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyRule {
    /// No body: every field not bound by the path comes from the query string.
    None,
    /// `body: "*"`: the body is the request message (path variables override it).
    Whole,
    /// `body: "field"`: the body is this top-level field; the rest come from path and query.
    Field(String),
}

/// One HTTP binding of an RPC.
#[derive(Debug, Clone)]
pub struct Route {
    pub http_method: Method,
    pub template: PathTemplate,
    /// The template as written in the proto.
    pub pattern: String,
    pub method: MethodDescriptor,
    /// `/campaignos.identity.v1.IdentityService/Login`.
    pub grpc_path: String,
    pub body: BodyRule,
    /// Top-level field of the response message sent as the body instead of the whole message.
    pub response_body: Option<String>,
    pub policy: MethodPolicy,
    /// From the policy (default 200). 204 means the response has no body.
    pub success_status: StatusCode,
}

/// Result of [`RouteTable::lookup`].
#[derive(Debug)]
pub enum Lookup<'a> {
    /// The route and its path variables (field path, decoded value).
    Found(&'a Route, Vec<(String, String)>),
    /// The path exists for these other methods (sorted, for the `Allow` header).
    MethodNotAllowed(Vec<Method>),
    NotFound,
}

#[derive(Debug, Default, Clone)]
struct MethodIndex {
    /// Routes whose template starts with this literal segment.
    by_first_literal: HashMap<String, Vec<usize>>,
    /// Routes whose template starts with a variable or wildcard.
    dynamic: Vec<usize>,
}

/// Every exposed route, indexed for lookup.
#[derive(Debug, Clone)]
pub struct RouteTable {
    routes: Vec<Route>,
    ranks: Vec<Rank>,
    /// Sorted by method name, so 405 answers list methods in a stable order.
    by_method: Vec<(Method, MethodIndex)>,
}

fn binding_error(method: &MethodDescriptor, reason: impl Into<String>) -> TemplateError {
    TemplateError::Binding {
        rpc: method.full_name().to_owned(),
        reason: reason.into(),
    }
}

/// Well-known message types that are written as a JSON string/number/bool and so can be set
/// from a path variable or query parameter.
fn is_wrapper(name: &str) -> bool {
    matches!(
        name,
        "google.protobuf.DoubleValue"
            | "google.protobuf.FloatValue"
            | "google.protobuf.Int64Value"
            | "google.protobuf.UInt64Value"
            | "google.protobuf.Int32Value"
            | "google.protobuf.UInt32Value"
            | "google.protobuf.BoolValue"
            | "google.protobuf.StringValue"
            | "google.protobuf.BytesValue"
    )
}

fn is_string_wkt(name: &str) -> bool {
    matches!(
        name,
        "google.protobuf.Timestamp" | "google.protobuf.Duration" | "google.protobuf.FieldMask"
    )
}

/// True if the field's value is written as one JSON scalar (a scalar, an enum, a wrapper,
/// Timestamp, Duration or FieldMask), ignoring repetition.
pub fn is_scalar_like(field: &FieldDescriptor) -> bool {
    match field.kind() {
        Kind::Message(m) => {
            !field.is_map() && (is_wrapper(m.full_name()) || is_string_wkt(m.full_name()))
        }
        _ => true,
    }
}

/// Looks a field up by proto name, then by JSON name.
fn find_field(desc: &MessageDescriptor, name: &str) -> Option<FieldDescriptor> {
    desc.get_field_by_name(name)
        .or_else(|| desc.get_field_by_json_name(name))
}

/// Resolves a dot-separated field path (`campaign.id`) through singular message fields.
pub fn resolve_field_path(desc: &MessageDescriptor, path: &str) -> Result<FieldDescriptor, String> {
    let mut current = desc.clone();
    let mut parts = path.split('.').peekable();
    loop {
        let name = parts.next().unwrap_or_default();
        let field = find_field(&current, name)
            .ok_or_else(|| format!("no field `{name}` in {}", current.full_name()))?;
        if parts.peek().is_none() {
            return Ok(field);
        }
        match field.kind() {
            Kind::Message(m) if !field.is_list() && !field.is_map() && !is_scalar_like(&field) => {
                current = m;
            }
            _ => {
                return Err(format!(
                    "`{name}` in {} is not a singular message field, so it has no sub-fields",
                    current.full_name()
                ));
            }
        }
    }
}

impl Route {
    /// Builds the route for one binding (the rule itself or one of its additional bindings).
    fn from_rule(
        method: &MethodDescriptor,
        policy: &MethodPolicy,
        rule: &HttpRule,
    ) -> Result<Route, TemplateError> {
        let (http_method, pattern) = match &rule.pattern {
            Some(Pattern::Get(p)) => (Method::GET, p),
            Some(Pattern::Put(p)) => (Method::PUT, p),
            Some(Pattern::Post(p)) => (Method::POST, p),
            Some(Pattern::Delete(p)) => (Method::DELETE, p),
            Some(Pattern::Patch(p)) => (Method::PATCH, p),
            Some(Pattern::Custom(c)) => {
                let m = Method::from_bytes(c.kind.as_bytes()).map_err(|_| {
                    binding_error(method, format!("`{}` is not an HTTP method", c.kind))
                })?;
                (m, &c.path)
            }
            None => return Err(binding_error(method, "the http rule has no pattern")),
        };
        let template = PathTemplate::parse(pattern)?;
        let input = method.input();
        for var in template.variables() {
            let field = resolve_field_path(&input, &var.field_path).map_err(|e| {
                binding_error(method, format!("path variable `{}`: {e}", var.field_path))
            })?;
            if field.is_list() || field.is_map() || !is_scalar_like(&field) {
                return Err(binding_error(
                    method,
                    format!(
                        "path variable `{}` must name a singular scalar field",
                        var.field_path
                    ),
                ));
            }
        }
        let body = match rule.body.as_str() {
            "" => BodyRule::None,
            "*" => BodyRule::Whole,
            name => {
                if input.get_field_by_name(name).is_none() {
                    return Err(binding_error(
                        method,
                        format!(
                            "body field `{name}` is not a field of {}",
                            input.full_name()
                        ),
                    ));
                }
                BodyRule::Field(name.to_owned())
            }
        };
        let response_body = match rule.response_body.as_str() {
            "" => None,
            name => {
                let output = method.output();
                if output.get_field_by_name(name).is_none() {
                    return Err(binding_error(
                        method,
                        format!(
                            "response_body `{name}` is not a field of {}",
                            output.full_name()
                        ),
                    ));
                }
                Some(name.to_owned())
            }
        };
        let success_status = match policy.success_status {
            0 => StatusCode::OK,
            code => u16::try_from(code)
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok())
                .filter(StatusCode::is_success)
                .ok_or_else(|| {
                    binding_error(method, format!("success_status {code} is not a 2xx status"))
                })?,
        };
        Ok(Route {
            http_method,
            template,
            pattern: pattern.clone(),
            method: method.clone(),
            grpc_path: cos_proto::grpc_path(method),
            body,
            response_body,
            policy: policy.clone(),
            success_status,
        })
    }
}

impl RouteTable {
    /// Routes of every method with an http rule (and its additional bindings) in every
    /// `campaignos.*` service, except internal ones. Errors on malformed or conflicting bindings.
    pub fn from_pool(pool: &DescriptorPool) -> Result<RouteTable, TemplateError> {
        let mut routes = Vec::new();
        for service in pool.services() {
            if !service.package_name().starts_with("campaignos.") {
                continue;
            }
            for method in service.methods() {
                let policy = cos_proto::method_policy(&method);
                if policy.internal {
                    continue;
                }
                let Some(rule) = cos_proto::http_rule(&method) else {
                    continue;
                };
                routes.push(Route::from_rule(&method, &policy, &rule)?);
                for extra in &rule.additional_bindings {
                    if !extra.additional_bindings.is_empty() {
                        return Err(binding_error(
                            &method,
                            "additional_bindings must not be nested",
                        ));
                    }
                    routes.push(Route::from_rule(&method, &policy, extra)?);
                }
            }
        }
        RouteTable::from_routes(routes)
    }

    /// Indexes the given routes (in declaration order); errors if two share method and shape.
    pub fn from_routes(routes: Vec<Route>) -> Result<RouteTable, TemplateError> {
        let mut seen: HashMap<(&Method, Shape<'_>), usize> = HashMap::new();
        for (i, route) in routes.iter().enumerate() {
            if let Some(&j) = seen.get(&(&route.http_method, route.template.shape())) {
                let other = &routes[j];
                return Err(TemplateError::Conflict {
                    http_method: route.http_method.clone(),
                    pattern: route.pattern.clone(),
                    rpc: route.method.full_name().to_owned(),
                    other_pattern: other.pattern.clone(),
                    other_rpc: other.method.full_name().to_owned(),
                });
            }
            seen.insert((&route.http_method, route.template.shape()), i);
        }
        let mut by_method: Vec<(Method, MethodIndex)> = Vec::new();
        for (i, route) in routes.iter().enumerate() {
            let pos = match by_method.iter().position(|(m, _)| *m == route.http_method) {
                Some(pos) => pos,
                None => {
                    by_method.push((route.http_method.clone(), MethodIndex::default()));
                    by_method.len() - 1
                }
            };
            let index = &mut by_method[pos].1;
            match route.template.segments().first() {
                Some(Segment::Literal(first)) => index
                    .by_first_literal
                    .entry(first.clone())
                    .or_default()
                    .push(i),
                _ => index.dynamic.push(i),
            }
        }
        by_method.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        let ranks = routes.iter().map(|r| r.template.rank()).collect();
        Ok(RouteTable {
            routes,
            ranks,
            by_method,
        })
    }

    /// Every route, in declaration order (service, method, then additional bindings).
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// Finds the route for a request path (`uri.path()`: no query string, still
    /// percent-encoded). 405 if the path matches only routes of other methods.
    pub fn lookup(&self, method: &Method, path: &str) -> Lookup<'_> {
        let Some(rest) = path.strip_prefix('/') else {
            return Lookup::NotFound;
        };
        let segments: Vec<&str> = rest.split('/').collect();
        if let Some((_, index)) = self.by_method.iter().find(|(m, _)| m == method) {
            let mut best: Option<(usize, Vec<(String, String)>)> = None;
            self.for_each_candidate(index, &segments, |i| {
                let better = best.as_ref().is_none_or(|(b, _)| {
                    (&self.ranks[i], std::cmp::Reverse(i))
                        > (&self.ranks[*b], std::cmp::Reverse(*b))
                });
                if better && let Some(vars) = self.routes[i].template.match_segments(&segments) {
                    best = Some((i, vars));
                }
                false
            });
            if let Some((i, vars)) = best {
                return Lookup::Found(&self.routes[i], vars);
            }
        }
        let allowed: Vec<Method> = self
            .by_method
            .iter()
            .filter(|(m, _)| m != method)
            .filter(|(_, index)| {
                self.for_each_candidate(index, &segments, |i| {
                    self.routes[i].template.match_segments(&segments).is_some()
                })
            })
            .map(|(m, _)| m.clone())
            .collect();
        if allowed.is_empty() {
            Lookup::NotFound
        } else {
            Lookup::MethodNotAllowed(allowed)
        }
    }

    /// Calls `f` with every route of `index` that may match; stops (returning true) when `f`
    /// returns true.
    fn for_each_candidate(
        &self,
        index: &MethodIndex,
        segments: &[&str],
        mut f: impl FnMut(usize) -> bool,
    ) -> bool {
        let first = segments[0];
        let decoded = percent_decode(first, false);
        let mut keys: Vec<&str> = Vec::with_capacity(2);
        if let Some(d) = decoded.as_deref() {
            keys.push(d);
            // A one-segment path may carry a verb on its only literal (`/segments:preview`).
            if segments.len() == 1 {
                keys.extend(d.match_indices(':').map(|(i, _)| &d[..i]));
            }
        }
        for key in keys {
            if let Some(list) = index.by_first_literal.get(key)
                && list.iter().any(|&i| f(i))
            {
                return true;
            }
        }
        index.dynamic.iter().any(|&i| f(i))
    }
}

/// A path variable or query parameter that could not be written into the request message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// The field path as given (`campaign.id`, `page_size`).
    pub field: String,
    pub message: String,
}

/// Sets a (possibly nested, dot-separated) field from its string form, converting to the field's
/// type; repeated fields get the value appended. Intermediate messages are created as needed.
/// Field names are proto names (JSON names are accepted too).
pub fn set_field_path(msg: &mut DynamicMessage, path: &str, raw: &str) -> Result<(), FieldError> {
    let error = |message: String| FieldError {
        field: path.to_owned(),
        message,
    };
    let mut parts = path.split('.').peekable();
    let mut current = msg;
    loop {
        let name = parts.next().unwrap_or_default();
        let desc = current.descriptor();
        let field = find_field(&desc, name).ok_or_else(|| {
            error(if name.is_empty() {
                "empty field name".to_owned()
            } else {
                format!("unknown field `{name}` in {}", desc.full_name())
            })
        })?;
        if parts.peek().is_none() {
            return set_leaf(current, &field, raw).map_err(error);
        }
        if field.is_list() || field.is_map() || is_scalar_like(&field) {
            return Err(error(format!(
                "`{name}` is not a singular message field, so it has no sub-fields"
            )));
        }
        current = match current.get_field_mut(&field) {
            Value::Message(m) => m,
            _ => return Err(error(format!("`{name}` is not a message field"))),
        };
    }
}

fn set_leaf(msg: &mut DynamicMessage, field: &FieldDescriptor, raw: &str) -> Result<(), String> {
    if field.is_map() {
        return Err("map fields cannot be set from a path or query parameter".to_owned());
    }
    let value = parse_value(&field.kind(), raw)?;
    if field.is_list() {
        match msg.get_field_mut(field) {
            Value::List(list) => list.push(value),
            _ => return Err("expected a repeated field".to_owned()),
        }
        Ok(())
    } else {
        msg.try_set_field(field, value)
            .map_err(|e| format!("cannot set the value: {e}"))
    }
}

fn parse_number<T: std::str::FromStr>(raw: &str, expected: &str) -> Result<T, String> {
    raw.parse()
        .map_err(|_| format!("expected {expected}, got `{raw}`"))
}

/// Converts the string form of a value (proto3 JSON conventions) to a value of `kind`.
fn parse_value(kind: &Kind, raw: &str) -> Result<Value, String> {
    Ok(match kind {
        Kind::String => Value::String(raw.to_owned()),
        Kind::Bool => match raw {
            "true" | "1" => Value::Bool(true),
            "false" | "0" => Value::Bool(false),
            _ => return Err(format!("expected `true` or `false`, got `{raw}`")),
        },
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            Value::I32(parse_number(raw, "a 32-bit integer")?)
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            Value::I64(parse_number(raw, "a 64-bit integer")?)
        }
        Kind::Uint32 | Kind::Fixed32 => {
            Value::U32(parse_number(raw, "a non-negative 32-bit integer")?)
        }
        Kind::Uint64 | Kind::Fixed64 => {
            Value::U64(parse_number(raw, "a non-negative 64-bit integer")?)
        }
        Kind::Float => Value::F32(parse_number(raw, "a number")?),
        Kind::Double => Value::F64(parse_number(raw, "a number")?),
        Kind::Bytes => Value::Bytes(
            decode_base64(raw)
                .ok_or_else(|| format!("expected base64-encoded bytes, got `{raw}`"))?
                .into(),
        ),
        Kind::Enum(e) => {
            let value = e
                .get_value_by_name(raw)
                .or_else(|| raw.parse::<i32>().ok().and_then(|n| e.get_value(n)));
            match value {
                Some(v) => Value::EnumNumber(v.number()),
                None => {
                    let names: Vec<String> = e.values().map(|v| v.name().to_owned()).collect();
                    return Err(format!(
                        "expected one of {} (or its number), got `{raw}`",
                        names.join(", ")
                    ));
                }
            }
        }
        Kind::Message(m) if is_wrapper(m.full_name()) => {
            let inner = m
                .get_field_by_name("value")
                .ok_or_else(|| format!("{} has no `value` field", m.full_name()))?;
            let mut wrapper = DynamicMessage::new(m.clone());
            let value = parse_value(&inner.kind(), raw)?;
            wrapper
                .try_set_field(&inner, value)
                .map_err(|e| format!("cannot set the value: {e}"))?;
            Value::Message(wrapper)
        }
        Kind::Message(m) if is_string_wkt(m.full_name()) => {
            let json = serde_json::Value::String(raw.to_owned());
            let expected = match m.full_name() {
                "google.protobuf.Timestamp" => "an RFC 3339 timestamp (2024-01-31T12:00:00Z)",
                "google.protobuf.Duration" => "a duration in seconds with an `s` suffix (1.5s)",
                _ => "comma-separated field paths",
            };
            Value::Message(
                DynamicMessage::deserialize(m.clone(), json)
                    .map_err(|_| format!("expected {expected}, got `{raw}`"))?,
            )
        }
        Kind::Message(m) => {
            return Err(format!(
                "expected a scalar value, but the field is a {} message",
                m.full_name()
            ));
        }
    })
}

/// Decodes standard or URL-safe base64, padded or not.
fn decode_base64(s: &str) -> Option<Vec<u8>> {
    let s = s
        .strip_suffix("==")
        .or_else(|| s.strip_suffix('='))
        .unwrap_or(s);
    if s.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use prost_reflect::prost_types::field_descriptor_proto::{Label, Type};
    use prost_reflect::prost_types::{
        DescriptorProto, EnumDescriptorProto, EnumValueDescriptorProto, FieldDescriptorProto,
        FileDescriptorProto, MessageOptions, MethodDescriptorProto, ServiceDescriptorProto,
    };

    fn field(name: &str, number: i32, ty: Type, type_name: Option<&str>) -> FieldDescriptorProto {
        FieldDescriptorProto {
            name: Some(name.into()),
            number: Some(number),
            label: Some(Label::Optional as i32),
            r#type: Some(ty as i32),
            type_name: type_name.map(Into::into),
            ..Default::default()
        }
    }

    fn repeated(mut f: FieldDescriptorProto) -> FieldDescriptorProto {
        f.label = Some(Label::Repeated as i32);
        f
    }

    /// A pool with `campaignos.kitchen.v1.Sink`: a field of every kind, nested messages, an
    /// enum, a map and well-known types (which the identity protos do not all have).
    pub(crate) fn kitchen_pool() -> DescriptorPool {
        let mut pool = DescriptorPool::global();
        let p = ".campaignos.kitchen.v1";
        let file = FileDescriptorProto {
            name: Some("campaignos/kitchen/v1/kitchen.proto".into()),
            package: Some("campaignos.kitchen.v1".into()),
            syntax: Some("proto3".into()),
            dependency: vec![
                "google/protobuf/wrappers.proto".into(),
                "google/protobuf/timestamp.proto".into(),
                "google/protobuf/duration.proto".into(),
            ],
            enum_type: vec![EnumDescriptorProto {
                name: Some("Color".into()),
                value: ["COLOR_UNSPECIFIED", "RED", "GREEN"]
                    .iter()
                    .zip(0..)
                    .map(|(n, i)| EnumValueDescriptorProto {
                        name: Some((*n).into()),
                        number: Some(i),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            message_type: vec![
                DescriptorProto {
                    name: Some("Inner".into()),
                    field: vec![
                        field("id", 1, Type::String, None),
                        field("child", 2, Type::Message, Some(&format!("{p}.Inner"))),
                        repeated(field("many", 3, Type::Message, Some(&format!("{p}.Inner")))),
                    ],
                    ..Default::default()
                },
                DescriptorProto {
                    name: Some("Sink".into()),
                    field: vec![
                        field("i32", 1, Type::Int32, None),
                        field("i64", 2, Type::Int64, None),
                        field("u32", 3, Type::Uint32, None),
                        field("u64", 4, Type::Uint64, None),
                        field("f", 5, Type::Float, None),
                        field("d", 6, Type::Double, None),
                        field("b", 7, Type::Bool, None),
                        field("s", 8, Type::String, None),
                        field("raw", 9, Type::Bytes, None),
                        field("color", 10, Type::Enum, Some(&format!("{p}.Color"))),
                        repeated(field("ids", 11, Type::Int64, None)),
                        repeated(field("colors", 12, Type::Enum, Some(&format!("{p}.Color")))),
                        repeated(field(
                            "counts",
                            13,
                            Type::Message,
                            Some(&format!("{p}.Sink.CountsEntry")),
                        )),
                        field("inner", 14, Type::Message, Some(&format!("{p}.Inner"))),
                        field(
                            "maybe",
                            15,
                            Type::Message,
                            Some(".google.protobuf.Int32Value"),
                        ),
                        field("at", 16, Type::Message, Some(".google.protobuf.Timestamp")),
                        field("ttl", 17, Type::Message, Some(".google.protobuf.Duration")),
                        field("si64", 18, Type::Sint64, None),
                        field("fx64", 19, Type::Fixed64, None),
                        field("display_name", 20, Type::String, None),
                    ],
                    nested_type: vec![DescriptorProto {
                        name: Some("CountsEntry".into()),
                        field: vec![
                            field("key", 1, Type::String, None),
                            field("value", 2, Type::Int32, None),
                        ],
                        options: Some(MessageOptions {
                            map_entry: Some(true),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            ],
            service: vec![ServiceDescriptorProto {
                name: Some("KitchenService".into()),
                method: ["Cook", "Serve"]
                    .iter()
                    .map(|name| MethodDescriptorProto {
                        name: Some((*name).into()),
                        input_type: Some(format!("{p}.Sink")),
                        output_type: Some(format!("{p}.Sink")),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        };
        pool.add_file_descriptor_proto(file)
            .expect("kitchen test file is valid");
        pool
    }

    fn sink() -> DynamicMessage {
        let desc = kitchen_pool()
            .get_message_by_name("campaignos.kitchen.v1.Sink")
            .unwrap();
        DynamicMessage::new(desc)
    }

    fn t(template: &str) -> PathTemplate {
        PathTemplate::parse(template).unwrap_or_else(|e| panic!("{template}: {e}"))
    }

    fn vars(pairs: &[(&str, &str)]) -> Option<Vec<(String, String)>> {
        Some(
            pairs
                .iter()
                .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
                .collect(),
        )
    }

    fn syntax_reason(template: &str) -> String {
        match PathTemplate::parse(template) {
            Err(TemplateError::Syntax { reason, .. }) => reason,
            other => panic!("{template}: expected a syntax error, got {other:?}"),
        }
    }

    fn identity_table() -> RouteTable {
        RouteTable::from_pool(cos_proto::descriptor_pool()).expect("identity routes are valid")
    }

    fn identity_method(name: &str) -> MethodDescriptor {
        cos_proto::descriptor_pool()
            .get_service_by_name("campaignos.identity.v1.IdentityService")
            .unwrap()
            .methods()
            .find(|m| m.name() == name)
            .unwrap()
    }

    /// A route with a hand-written template (the RPC only fills the struct).
    fn route(http_method: Method, pattern: &str, rpc: &str) -> Route {
        let method = identity_method(rpc);
        Route {
            http_method,
            template: t(pattern),
            pattern: pattern.to_owned(),
            grpc_path: cos_proto::grpc_path(&method),
            method,
            body: BodyRule::None,
            response_body: None,
            policy: MethodPolicy::default(),
            success_status: StatusCode::OK,
        }
    }

    fn found<'a>(lookup: Lookup<'a>) -> (&'a Route, Vec<(String, String)>) {
        match lookup {
            Lookup::Found(route, vars) => (route, vars),
            other => panic!("expected a route, got {other:?}"),
        }
    }

    #[test]
    fn parses_literals_variables_wildcards_and_verbs() {
        let tpl = t("/v1/tenants/{tenant_id}/switch");
        assert_eq!(
            tpl.segments(),
            &[
                Segment::Literal("v1".into()),
                Segment::Literal("tenants".into()),
                Segment::Wildcard,
                Segment::Literal("switch".into()),
            ]
        );
        assert_eq!(
            tpl.variables(),
            &[Variable {
                field_path: "tenant_id".into(),
                start: 2,
                end: 3
            }]
        );
        assert_eq!(tpl.verb(), None);
        assert_eq!(tpl.literal_count(), 3);

        let tpl = t("/v1/segments:preview");
        assert_eq!(tpl.verb(), Some("preview"));
        assert_eq!(tpl.segments().len(), 2);
        assert_eq!(tpl.literal_count(), 3);

        let tpl = t("/v1/campaigns/{campaign.id}:launch");
        assert_eq!(tpl.verb(), Some("launch"));
        assert_eq!(tpl.variables()[0].field_path, "campaign.id");

        let tpl = t("/v1/{name=shelves/*/books/**}");
        assert_eq!(
            tpl.segments(),
            &[
                Segment::Literal("v1".into()),
                Segment::Literal("shelves".into()),
                Segment::Wildcard,
                Segment::Literal("books".into()),
                Segment::MultiWildcard,
            ]
        );
        assert_eq!(tpl.variables()[0].start, 1);
        assert_eq!(tpl.variables()[0].end, 5);

        let tpl = t("/v1/{id=*}/*/{rest=**}:get");
        assert_eq!(tpl.variables().len(), 2);
        assert_eq!(tpl.verb(), Some("get"));
        assert_eq!(t("/.well-known/jwks.json").literal_count(), 2);
        // A `:` before the last `/` belongs to a literal.
        assert_eq!(t("/v1/a:b/c").verb(), None);
    }

    #[test]
    fn rejects_malformed_templates() {
        assert!(syntax_reason("v1/members").contains("start with `/`"));
        assert!(syntax_reason("/").contains("empty segment"));
        assert!(syntax_reason("/v1//members").contains("empty segment"));
        assert!(syntax_reason("/v1/members/").contains("empty segment"));
        assert!(syntax_reason("/v1/{id").contains("unclosed"));
        assert!(syntax_reason("/v1/id}").contains("without a matching"));
        assert!(syntax_reason("/v1/{a={b}}").contains("nested"));
        assert!(syntax_reason("/v1/{}").contains("field name"));
        assert!(syntax_reason("/v1/{1a}").contains("field name"));
        assert!(syntax_reason("/v1/{a..b}").contains("field name"));
        assert!(syntax_reason("/v1/{a.}").contains("field name"));
        assert!(syntax_reason("/v1/{a=}").contains("empty segment"));
        assert!(syntax_reason("/v1/{a b}").contains("expected `}`"));
        assert!(syntax_reason("/v1/{a}/{a}").contains("overlaps"));
        assert!(syntax_reason("/v1/{a}/{a.b}").contains("overlaps"));
        assert!(syntax_reason("/v1/**/x").contains("last segment"));
        assert!(syntax_reason("/v1/{a=**}/x").contains("last segment"));
        assert!(syntax_reason("/v1/x*").contains("not allowed"));
        assert!(syntax_reason("/v1/*x").contains("whole segment"));
        assert!(syntax_reason("/v1/members:").contains("empty custom verb"));
        assert!(syntax_reason("/v1/members:a b").contains("custom verb"));
        assert!(syntax_reason("/v1/a?b").contains("not allowed"));
        assert!(syntax_reason("/v1/a%20b").contains("not allowed"));
        // Display names the template and the position.
        let err = PathTemplate::parse("/v1//x").unwrap_err().to_string();
        assert!(err.contains("`/v1//x`") && err.contains("byte 4"), "{err}");
    }

    #[test]
    fn matches_and_percent_decodes_variables() {
        let tpl = t("/v1/members/{user_id}");
        assert_eq!(tpl.matches("/v1/members/u1"), vars(&[("user_id", "u1")]));
        assert_eq!(
            tpl.matches("/v1/members/a%20b%2Fc"),
            vars(&[("user_id", "a b/c")])
        );
        assert_eq!(
            tpl.matches("/v1/members/caf%C3%A9"),
            vars(&[("user_id", "café")])
        );
        // A stray `%` stays; non-UTF-8 does not match.
        assert_eq!(tpl.matches("/v1/members/50%"), vars(&[("user_id", "50%")]));
        assert_eq!(tpl.matches("/v1/members/%FF"), None);
        // Values must be non-empty, and the shape must fit exactly.
        assert_eq!(tpl.matches("/v1/members/"), None);
        assert_eq!(tpl.matches("/v1/members"), None);
        assert_eq!(tpl.matches("/v1/members/u1/x"), None);
        assert_eq!(tpl.matches("v1/members/u1"), None);
        // Literals compare percent-decoded.
        assert_eq!(tpl.matches("/v1/m%65mbers/u1"), vars(&[("user_id", "u1")]));

        let nested = t("/v1/campaigns/{campaign.id}/steps/{step_id}");
        assert_eq!(
            nested.matches("/v1/campaigns/c1/steps/s2"),
            vars(&[("campaign.id", "c1"), ("step_id", "s2")])
        );

        let multi = t("/v1/files/{path=**}");
        assert_eq!(
            multi.matches("/v1/files/a/b%2Fc/d"),
            vars(&[("path", "a/b%2Fc/d")])
        );
        assert_eq!(multi.matches("/v1/files/a"), vars(&[("path", "a")]));
        assert_eq!(
            multi.matches("/v1/files"),
            None,
            "a variable's value must be non-empty"
        );
        assert_eq!(multi.matches("/v1/files/a//b"), None);
        let bare = t("/v1/static/**");
        assert_eq!(bare.matches("/v1/static"), vars(&[]));
        assert_eq!(bare.matches("/v1/static/x/y"), vars(&[]));

        let resource = t("/v1/{name=shelves/*/books/*}");
        assert_eq!(
            resource.matches("/v1/shelves/s1/books/b%201"),
            vars(&[("name", "shelves/s1/books/b 1")])
        );
        assert_eq!(resource.matches("/v1/shelves/s1/pages/b1"), None);
    }

    #[test]
    fn matches_custom_verbs() {
        let launch = t("/v1/campaigns/{campaign_id}:launch");
        assert_eq!(
            launch.matches("/v1/campaigns/c1:launch"),
            vars(&[("campaign_id", "c1")])
        );
        assert_eq!(launch.matches("/v1/campaigns/c1"), None);
        assert_eq!(launch.matches("/v1/campaigns/c1:pause"), None);
        assert_eq!(
            launch.matches("/v1/campaigns/:launch"),
            None,
            "empty variable"
        );
        assert_eq!(launch.matches("/v1/campaigns/c1xlaunch"), None);

        let preview = t("/v1/segments:preview");
        assert_eq!(preview.matches("/v1/segments:preview"), vars(&[]));
        assert_eq!(preview.matches("/v1/segments"), None);
        assert_eq!(preview.matches("/v1/segments:previewx"), None);
        assert_eq!(t("/v1/segments").matches("/v1/segments:preview"), None);

        let wide = t("/v1/{name=**}:download");
        assert_eq!(wide.matches("/v1/a/b:download"), vars(&[("name", "a/b")]));
        assert_eq!(wide.matches("/v1:download"), None);
    }

    #[test]
    fn builds_the_identity_table() {
        let table = identity_table();
        let find = |rpc: &str| {
            table
                .routes()
                .iter()
                .find(|r| r.method.name() == rpc)
                .unwrap_or_else(|| panic!("no route for {rpc}"))
        };
        assert!(
            table
                .routes()
                .iter()
                .all(|r| r.method.name() != "AuthenticateApiKey")
        );
        let identity_routes = table
            .routes()
            .iter()
            .filter(|r| r.grpc_path.starts_with("/campaignos.identity.v1."))
            .count();
        assert_eq!(identity_routes, 18);

        let register = find("Register");
        assert_eq!(register.http_method, Method::POST);
        assert_eq!(register.pattern, "/v1/auth/register");
        assert_eq!(register.body, BodyRule::Whole);
        assert_eq!(register.success_status, StatusCode::CREATED);
        assert!(register.policy.public);
        assert_eq!(register.policy.rate_limit, "auth");
        assert_eq!(
            register.grpc_path,
            "/campaignos.identity.v1.IdentityService/Register"
        );

        let logout = find("Logout");
        assert_eq!(logout.success_status, StatusCode::NO_CONTENT);
        let me = find("GetMe");
        assert_eq!(me.http_method, Method::GET);
        assert_eq!(me.body, BodyRule::None);
        assert_eq!(me.success_status, StatusCode::OK);
        assert_eq!(me.policy.permission, "profile.read");
        assert_eq!(me.response_body, None);
        assert!(find("ListAllTenants").policy.platform_admin);
        assert_eq!(find("RemoveMember").http_method, Method::DELETE);
        assert_eq!(find("UpdateMember").http_method, Method::PATCH);
    }

    #[test]
    fn looks_up_identity_routes() {
        let table = identity_table();
        let (route, vars) = found(table.lookup(&Method::POST, "/v1/tenants/t-1/switch"));
        assert_eq!(route.method.name(), "SwitchTenant");
        assert_eq!(vars, [("tenant_id".to_owned(), "t-1".to_owned())]);

        let (route, vars) = found(table.lookup(&Method::DELETE, "/v1/api-keys/k%201"));
        assert_eq!(route.method.name(), "RevokeApiKey");
        assert_eq!(vars, [("api_key_id".to_owned(), "k 1".to_owned())]);

        let (route, vars) = found(table.lookup(&Method::GET, "/.well-known/jwks.json"));
        assert_eq!(route.method.name(), "GetJwks");
        assert!(vars.is_empty());

        assert_eq!(
            found(table.lookup(&Method::GET, "/v1/tenants"))
                .0
                .method
                .name(),
            "ListMyTenants"
        );
        assert_eq!(
            found(table.lookup(&Method::POST, "/v1/tenants"))
                .0
                .method
                .name(),
            "CreateTenant"
        );
        assert_eq!(
            found(table.lookup(&Method::PATCH, "/v1/members/u1"))
                .0
                .method
                .name(),
            "UpdateMember"
        );

        match table.lookup(&Method::GET, "/v1/members/u1") {
            Lookup::MethodNotAllowed(allowed) => {
                assert_eq!(allowed, [Method::DELETE, Method::PATCH])
            }
            other => panic!("expected 405, got {other:?}"),
        }
        match table.lookup(&Method::PUT, "/v1/tenants") {
            Lookup::MethodNotAllowed(allowed) => assert_eq!(allowed, [Method::GET, Method::POST]),
            other => panic!("expected 405, got {other:?}"),
        }
        match table.lookup(&Method::GET, "/v1/auth/login") {
            Lookup::MethodNotAllowed(allowed) => assert_eq!(allowed, [Method::POST]),
            other => panic!("expected 405, got {other:?}"),
        }
        for path in [
            "/v1/nope",
            "/v1/members/u1/x",
            "/v1/members/",
            "/",
            "",
            "v1/me",
            "/v1/me/",
        ] {
            assert!(
                matches!(table.lookup(&Method::GET, path), Lookup::NotFound),
                "{path} should be 404"
            );
        }
        assert!(matches!(
            table.lookup(&Method::HEAD, "/v1/nope"),
            Lookup::NotFound
        ));
    }

    #[test]
    fn prefers_the_most_specific_template() {
        let table = RouteTable::from_routes(vec![
            route(Method::GET, "/v1/{name=**}", "GetMe"),
            route(Method::GET, "/v1/campaigns/{campaign_id}", "ListMembers"),
            route(Method::GET, "/v1/campaigns/summary", "ListMyTenants"),
            route(Method::POST, "/v1/campaigns/{campaign_id}", "AddMember"),
            route(
                Method::POST,
                "/v1/campaigns/{campaign_id}:launch",
                "Register",
            ),
            route(Method::POST, "/v1/segments:preview", "Login"),
            route(Method::GET, "/v1/{a}/x", "ListApiKeys"),
            route(Method::GET, "/v1/x/{b}", "ListAuditLog"),
            route(Method::GET, "/{first}/any", "GetJwks"),
        ])
        .unwrap();
        let rpc = |m: Method, p: &str| found(table.lookup(&m, p)).0.method.name().to_owned();
        assert_eq!(rpc(Method::GET, "/v1/campaigns/summary"), "ListMyTenants");
        assert_eq!(rpc(Method::GET, "/v1/campaigns/c1"), "ListMembers");
        assert_eq!(rpc(Method::GET, "/v1/campaigns/c1/steps"), "GetMe");
        assert_eq!(rpc(Method::GET, "/v1/whatever"), "GetMe");
        // The verb counts as a literal: it beats the variable swallowing `c1:launch`.
        assert_eq!(rpc(Method::POST, "/v1/campaigns/c1:launch"), "Register");
        let (_, vars) = found(table.lookup(&Method::POST, "/v1/campaigns/c1:launch"));
        assert_eq!(vars, [("campaign_id".to_owned(), "c1".to_owned())]);
        assert_eq!(rpc(Method::POST, "/v1/campaigns/c1"), "AddMember");
        assert_eq!(rpc(Method::POST, "/v1/segments:preview"), "Login");
        // Same number of literals: the earlier literal wins.
        assert_eq!(rpc(Method::GET, "/v1/x/x"), "ListAuditLog");
        assert_eq!(rpc(Method::GET, "/v2/any"), "GetJwks");
        match table.lookup(&Method::GET, "/v1/segments:preview") {
            Lookup::Found(route, _) => assert_eq!(route.method.name(), "GetMe"),
            other => panic!("{other:?}"),
        }
        match table.lookup(&Method::DELETE, "/v1/segments:preview") {
            Lookup::MethodNotAllowed(allowed) => assert_eq!(allowed, [Method::GET, Method::POST]),
            other => panic!("expected 405, got {other:?}"),
        }
        match table.lookup(&Method::PUT, "/v1/campaigns/c1:launch") {
            Lookup::MethodNotAllowed(allowed) => assert_eq!(allowed, [Method::GET, Method::POST]),
            other => panic!("expected 405, got {other:?}"),
        }
    }

    #[test]
    fn detects_conflicting_bindings() {
        let err = RouteTable::from_routes(vec![
            route(Method::GET, "/v1/x/{a}", "GetMe"),
            route(Method::POST, "/v1/x/{a}", "AddMember"),
            route(Method::GET, "/v1/x/{b=*}", "ListMembers"),
        ])
        .unwrap_err();
        match &err {
            TemplateError::Conflict {
                http_method,
                pattern,
                rpc,
                other_pattern,
                other_rpc,
            } => {
                assert_eq!(*http_method, Method::GET);
                assert_eq!(pattern, "/v1/x/{b=*}");
                assert_eq!(rpc, "campaignos.identity.v1.IdentityService.ListMembers");
                assert_eq!(other_pattern, "/v1/x/{a}");
                assert_eq!(other_rpc, "campaignos.identity.v1.IdentityService.GetMe");
            }
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().contains("conflicts with"));
        // Different verbs or methods do not conflict.
        RouteTable::from_routes(vec![
            route(Method::POST, "/v1/x/{a}:launch", "GetMe"),
            route(Method::POST, "/v1/x/{a}:pause", "ListMembers"),
            route(Method::POST, "/v1/x/{a}", "AddMember"),
        ])
        .unwrap();
    }

    #[test]
    fn validates_bindings_against_the_rpc() {
        use cos_proto::google::api::CustomHttpPattern;
        let method = identity_method("UpdateMember");
        let policy = MethodPolicy::default();
        let rule = |pattern: Pattern, body: &str| HttpRule {
            pattern: Some(pattern),
            body: body.into(),
            ..Default::default()
        };
        let ok = Route::from_rule(
            &method,
            &policy,
            &rule(Pattern::Patch("/v1/m/{user_id}".into()), "role"),
        )
        .unwrap();
        assert_eq!(ok.body, BodyRule::Field("role".into()));
        let custom = Route::from_rule(
            &method,
            &policy,
            &rule(
                Pattern::Custom(CustomHttpPattern {
                    kind: "OPTIONS".into(),
                    path: "/v1/m".into(),
                }),
                "",
            ),
        )
        .unwrap();
        assert_eq!(custom.http_method, Method::OPTIONS);

        let reason =
            |r: HttpRule, policy: &MethodPolicy| match Route::from_rule(&method, policy, &r) {
                Err(TemplateError::Binding { reason, .. }) => reason,
                other => panic!("expected a binding error, got {other:?}"),
            };
        assert!(
            reason(rule(Pattern::Get("/v1/m/{nope}".into()), ""), &policy)
                .contains("no field `nope`")
        );
        assert!(
            reason(rule(Pattern::Get("/v1/m/{user_id.x}".into()), ""), &policy)
                .contains("no sub-fields")
        );
        assert!(
            reason(rule(Pattern::Post("/v1/m".into()), "nope"), &policy).contains("body field")
        );
        let mut bad_response = rule(Pattern::Post("/v1/m".into()), "*");
        bad_response.response_body = "nope".into();
        assert!(reason(bad_response, &policy).contains("response_body"));
        let bad_status = MethodPolicy {
            success_status: 404,
            ..Default::default()
        };
        assert!(reason(rule(Pattern::Post("/v1/m".into()), "*"), &bad_status).contains("2xx"));
        assert!(reason(HttpRule::default(), &policy).contains("no pattern"));
        let bad_kind = Pattern::Custom(CustomHttpPattern {
            kind: "NOT A METHOD".into(),
            path: "/v1/m".into(),
        });
        assert!(reason(rule(bad_kind, ""), &policy).contains("not an HTTP method"));
        // A scalar repeated field cannot be a path variable.
        let scopes = identity_method("CreateApiKey");
        let err = Route::from_rule(
            &scopes,
            &policy,
            &rule(Pattern::Get("/v1/k/{scopes}".into()), ""),
        )
        .unwrap_err();
        assert!(err.to_string().contains("singular scalar"), "{err}");
    }

    #[test]
    fn sets_scalar_fields_from_strings() {
        let mut msg = sink();
        for (path, raw) in [
            ("i32", "-42"),
            ("i64", "-9007199254740993"),
            ("u32", "4294967295"),
            ("u64", "18446744073709551615"),
            ("f", "1.5"),
            ("d", "-2.25e3"),
            ("b", "true"),
            ("s", "hello world"),
            ("raw", "aGk_-w"),
            ("color", "GREEN"),
            ("si64", "-7"),
            ("fx64", "7"),
            ("ids", "1"),
            ("ids", "2"),
            ("colors", "RED"),
            ("colors", "2"),
            ("inner.id", "x"),
            ("inner.child.child.id", "deep"),
            ("maybe", "5"),
            ("at", "2024-01-31T12:00:00Z"),
            ("ttl", "1.5s"),
            ("displayName", "json name works"),
        ] {
            set_field_path(&mut msg, path, raw).unwrap_or_else(|e| panic!("{path}={raw}: {e}"));
        }
        let json = serde_json::to_value(&msg).unwrap();
        assert_eq!(json["i32"], -42);
        assert_eq!(json["i64"], "-9007199254740993");
        assert_eq!(json["u32"], 4_294_967_295u64);
        assert_eq!(json["u64"], "18446744073709551615");
        assert_eq!(json["f"], 1.5);
        assert_eq!(json["d"], -2250.0);
        assert_eq!(json["b"], true);
        assert_eq!(json["s"], "hello world");
        assert_eq!(json["raw"], "aGk/+w==");
        assert_eq!(json["color"], "GREEN");
        assert_eq!(json["si64"], "-7");
        assert_eq!(json["fx64"], "7");
        assert_eq!(json["ids"], serde_json::json!(["1", "2"]));
        assert_eq!(json["colors"], serde_json::json!(["RED", "GREEN"]));
        assert_eq!(json["inner"]["id"], "x");
        assert_eq!(json["inner"]["child"]["child"]["id"], "deep");
        assert_eq!(json["maybe"], 5);
        assert_eq!(json["at"], "2024-01-31T12:00:00Z");
        assert_eq!(json["ttl"], "1.500s");
        assert_eq!(json["displayName"], "json name works");

        // Base64: standard alphabet with padding too.
        let mut msg = sink();
        set_field_path(&mut msg, "raw", "aGk/+w==").unwrap();
        assert_eq!(serde_json::to_value(&msg).unwrap()["raw"], "aGk/+w==");
        set_field_path(&mut msg, "b", "0").unwrap();
        set_field_path(&mut msg, "color", "0").unwrap();
    }

    #[test]
    fn field_errors_name_the_field_and_the_expectation() {
        let mut msg = sink();
        let err = |msg: &mut DynamicMessage, path: &str, raw: &str| {
            set_field_path(msg, path, raw).expect_err(&format!("{path}={raw} should fail"))
        };
        let e = err(&mut msg, "i32", "abc");
        assert_eq!(e.field, "i32");
        assert_eq!(e.message, "expected a 32-bit integer, got `abc`");
        assert_eq!(e.to_string(), "i32: expected a 32-bit integer, got `abc`");
        assert!(
            err(&mut msg, "i32", "2147483648")
                .message
                .contains("32-bit integer")
        );
        assert!(err(&mut msg, "u32", "-1").message.contains("non-negative"));
        assert!(
            err(&mut msg, "i64", "1.5")
                .message
                .contains("64-bit integer")
        );
        assert!(err(&mut msg, "d", "x").message.contains("a number"));
        assert!(
            err(&mut msg, "b", "yes")
                .message
                .contains("`true` or `false`")
        );
        assert!(err(&mut msg, "raw", "a$b").message.contains("base64"));
        let e = err(&mut msg, "color", "BLUE");
        assert!(e.message.contains("COLOR_UNSPECIFIED, RED, GREEN"), "{e}");
        assert!(err(&mut msg, "color", "9").message.contains("one of"));
        assert!(
            err(&mut msg, "at", "yesterday")
                .message
                .contains("RFC 3339")
        );
        assert!(err(&mut msg, "ttl", "5m").message.contains("duration"));
        assert!(
            err(&mut msg, "maybe", "x")
                .message
                .contains("32-bit integer")
        );
        let e = err(&mut msg, "inner.nope", "x");
        assert_eq!(e.field, "inner.nope");
        assert!(
            e.message
                .contains("unknown field `nope` in campaignos.kitchen.v1.Inner"),
            "{e}"
        );
        assert!(err(&mut msg, "nope", "x").message.contains("unknown field"));
        assert!(err(&mut msg, "s.x", "x").message.contains("no sub-fields"));
        assert!(
            err(&mut msg, "inner.many.id", "x")
                .message
                .contains("no sub-fields")
        );
        assert!(
            err(&mut msg, "inner", "x")
                .message
                .contains("Inner message")
        );
        assert!(err(&mut msg, "counts", "x").message.contains("map"));
        assert!(err(&mut msg, "", "x").message.contains("empty"));
        assert!(err(&mut msg, "inner.", "x").message.contains("empty"));
    }

    #[test]
    fn sets_path_variables_on_identity_requests() {
        let table = identity_table();
        let (route, vars) = found(table.lookup(&Method::PATCH, "/v1/members/u%2D1"));
        let mut request = DynamicMessage::new(route.method.input());
        for (path, value) in &vars {
            set_field_path(&mut request, path, value).unwrap();
        }
        assert_eq!(serde_json::to_value(&request).unwrap()["userId"], "u-1");
        let mut list = DynamicMessage::new(identity_method("ListAllTenants").input());
        set_field_path(&mut list, "page_size", "50").unwrap();
        assert!(set_field_path(&mut list, "page_size", "lots").is_err());
        let mut key = DynamicMessage::new(identity_method("CreateApiKey").input());
        set_field_path(&mut key, "scopes", "members.read").unwrap();
        set_field_path(&mut key, "scopes", "members.write").unwrap();
        assert_eq!(
            serde_json::to_value(&key).unwrap()["scopes"],
            serde_json::json!(["members.read", "members.write"])
        );
    }

    #[test]
    fn base64_decoding() {
        assert_eq!(decode_base64(""), Some(vec![]));
        assert_eq!(decode_base64("Zg"), Some(b"f".to_vec()));
        assert_eq!(decode_base64("Zg=="), Some(b"f".to_vec()));
        assert_eq!(decode_base64("Zm8="), Some(b"fo".to_vec()));
        assert_eq!(decode_base64("Zm9v"), Some(b"foo".to_vec()));
        assert_eq!(decode_base64("Zm9vYg"), Some(b"foob".to_vec()));
        assert_eq!(decode_base64("Z"), None);
        assert_eq!(decode_base64("Zm9v!"), None);
    }
}
