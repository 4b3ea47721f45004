//! CSV import parsing: column mapping, a streaming row parser, and the conversion of a row into
//! a validated contact. Pure: it reads from any `std::io::Read` and touches nothing else.
//!
//! Semantics:
//! - **Header**: the first non-blank line names the columns (names are trimmed). A UTF-8 BOM is
//!   stripped. Header cells that are not valid UTF-8 are an error.
//! - **Mapping**: given as header → target (`email`, `phone`, `external_id`, `first_name`,
//!   `last_name`, `locale`, `time_zone`, `tags`, `attributes.<key>`, `consent.email|sms|push`,
//!   `last_activity_at`, `ignore`), it is authoritative: a column it does not name is an unknown
//!   column. Keys match header names exactly (after trimming), or case-insensitively when that
//!   is unambiguous. Without a mapping, targets are inferred from the header names (ignoring
//!   case and anything but letters and digits, with a few synonyms such as "E-mail", "Email
//!   Address", "Mobile", "Surname"; built-in fields before attribute keys). Unknown columns are
//!   ignored and listed by [`ImportParser::unknown_columns`]. Errors: a mapping entry naming a
//!   header that is not in the file (or is there twice), an invalid target or an undefined
//!   attribute, two columns with the same target (`ignore` excepted), and no column for any of
//!   email/phone/external_id.
//! - **Rows**: the line of a row is the physical line on which its record starts (header =
//!   line 1, quoted newlines and blank lines counted). Blank rows (every cell empty or spaces)
//!   are skipped. A row must have as many fields as the header. Only the cells of mapped columns
//!   are decoded: one that is not valid UTF-8 rejects the row (other columns may hold anything).
//!   Cells are trimmed; an empty cell means the field is absent (never "clear").
//! - **Cells**: tags and string lists are split on `;` or `|` (empty pieces dropped; a tag with a
//!   comma is refused with a hint). Consent accepts subscribed/unsubscribed/unknown, yes/no,
//!   y/n, true/false, 1/0, opt-in/opt-out (also "opted in", "optin"…), case-insensitively, with
//!   source [`CONSENT_SOURCE`] and no time (the writer stamps it). Numbers: digits with an
//!   optional sign, `.` decimal point and exponent; thousands separators and decimal commas are
//!   refused (`1,234.5` vs `1,5` can't be told apart). Booleans: true/false, yes/no, y/n, 1/0.
//!   Dates: `YYYY-MM-DD` (or an RFC 3339 timestamp); `31/12/2024`-style dates are refused since
//!   day/month order is ambiguous. `last_activity_at`: RFC 3339, or `YYYY-MM-DD[ HH:MM[:SS]]`
//!   taken as UTC.
//! - **Validation**: the row then goes through [`contact::validate`]; every problem of the row is
//!   listed in its reason (joined by `; `), each naming the source column:
//!   `column 'Email': 'bob@' is not a valid email address (nothing after the @)`.
//! - **Duplicates**: a row whose normalised email, phone or external id equals one of an earlier
//!   *accepted* row is rejected: `duplicate of line 4 (same email)`. Only 128-bit digests of the
//!   identifiers are kept, so memory is bounded by the number of accepted rows.
//! - **File errors** end the parse: an unterminated quoted field (it swallows the rest of the
//!   file), a record longer than [`MAX_RECORD_BYTES`], or a read error. Rows before it stand.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::io::{self, Read};

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde_json::Value;

use super::attributes::{AttributeCatalog, AttributeType, Channel, ConsentState, parse_date};
use super::contact::{
    self, ConsentInput, ContactInput, FieldViolation, IDENTIFIER_REQUIRED, ValidContact, show,
};

/// Longest record (one row, quoted newlines included); a longer one ends the parse. Bounds the
/// parser's memory and catches unterminated quotes early.
pub const MAX_RECORD_BYTES: usize = 1 << 20;
/// Source recorded with consent set by an import.
pub const CONSENT_SOURCE: &str = "import";

/// What a column feeds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    Email,
    Phone,
    ExternalId,
    FirstName,
    LastName,
    Locale,
    TimeZone,
    Tags,
    Attribute(String),
    Consent(Channel),
    LastActivityAt,
    Ignore,
}

const TARGET_LIST: &str = "email, phone, external_id, first_name, last_name, locale, time_zone, \
     tags, last_activity_at, attributes.<key>, consent.email, consent.sms, consent.push or ignore";

impl Target {
    /// Parses a mapping target (`email`, `attributes.plan`, `consent.sms`, `ignore`…); an
    /// attribute must be defined in `catalog`.
    pub fn parse(spec: &str, catalog: &AttributeCatalog) -> Result<Target, String> {
        let lower = spec.trim().to_ascii_lowercase();
        Ok(match lower.as_str() {
            "email" => Self::Email,
            "phone" => Self::Phone,
            "external_id" => Self::ExternalId,
            "first_name" => Self::FirstName,
            "last_name" => Self::LastName,
            "locale" => Self::Locale,
            "time_zone" => Self::TimeZone,
            "tags" => Self::Tags,
            "last_activity_at" => Self::LastActivityAt,
            "ignore" => Self::Ignore,
            _ => {
                if let Some(key) = lower.strip_prefix("attributes.") {
                    if !catalog.contains_key(key) {
                        return Err(format!(
                            "attribute {} is not defined; define it under \
                             /v1/contact-attributes first",
                            show(key)
                        ));
                    }
                    Self::Attribute(key.to_owned())
                } else if let Some(channel) = lower.strip_prefix("consent.") {
                    Self::Consent(Channel::parse(channel).ok_or_else(|| {
                        format!(
                            "{} is not a consent channel; use consent.email, consent.sms or \
                             consent.push",
                            show(channel)
                        )
                    })?)
                } else {
                    return Err(format!(
                        "{} is not a column target; use {TARGET_LIST}",
                        show(spec.trim())
                    ));
                }
            }
        })
    }
}

impl fmt::Display for Target {
    /// The mapping spelling (`email`, `attributes.plan`, `consent.sms`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Email => f.write_str("email"),
            Self::Phone => f.write_str("phone"),
            Self::ExternalId => f.write_str("external_id"),
            Self::FirstName => f.write_str("first_name"),
            Self::LastName => f.write_str("last_name"),
            Self::Locale => f.write_str("locale"),
            Self::TimeZone => f.write_str("time_zone"),
            Self::Tags => f.write_str("tags"),
            Self::Attribute(key) => write!(f, "attributes.{key}"),
            Self::Consent(c) => write!(f, "consent.{}", c.as_str()),
            Self::LastActivityAt => f.write_str("last_activity_at"),
            Self::Ignore => f.write_str("ignore"),
        }
    }
}

/// Header names (squashed: lower-case letters and digits only) inferred as each built-in target.
const SYNONYMS: &[(&[&str], Target)] = &[
    (
        &["email", "emailaddress", "mail", "emailaddr"],
        Target::Email,
    ),
    (
        &[
            "phone",
            "phonenumber",
            "mobile",
            "mobilephone",
            "mobilenumber",
            "cell",
            "cellphone",
            "telephone",
            "tel",
        ],
        Target::Phone,
    ),
    (&["externalid", "extid"], Target::ExternalId),
    (
        &["firstname", "givenname", "forename", "first"],
        Target::FirstName,
    ),
    (
        &["lastname", "surname", "familyname", "last"],
        Target::LastName,
    ),
    (&["locale", "language", "lang"], Target::Locale),
    (&["timezone", "tz"], Target::TimeZone),
    (&["tags", "tag"], Target::Tags),
    (
        &["consentemail", "emailconsent", "emailoptin"],
        Target::Consent(Channel::Email),
    ),
    (
        &["consentsms", "smsconsent", "smsoptin"],
        Target::Consent(Channel::Sms),
    ),
    (
        &["consentpush", "pushconsent", "pushoptin"],
        Target::Consent(Channel::Push),
    ),
    (
        &["lastactivityat", "lastactivity", "lastactive"],
        Target::LastActivityAt,
    ),
];

/// Lower-case letters and digits only: "E-mail Address" → "emailaddress".
fn squash(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// The target a header name suggests, if any.
fn infer(header: &str, catalog: &AttributeCatalog) -> Option<Target> {
    let name = squash(header);
    if name.is_empty() {
        return None;
    }
    if let Some((_, t)) = SYNONYMS.iter().find(|(names, _)| names.contains(&&*name)) {
        return Some(t.clone());
    }
    let lower = header.trim().to_lowercase();
    let key = lower.strip_prefix("attributes.").unwrap_or(&lower);
    if catalog.contains_key(key) {
        return Some(Target::Attribute(key.to_owned()));
    }
    let bare = name.strip_prefix("attributes").unwrap_or(&name);
    catalog
        .keys()
        .find(|k| {
            let k = squash(k);
            k == name || k == bare
        })
        .map(|k| Target::Attribute(k.clone()))
}

/// `mapping["E-mail"]`, `header["Email"]`: a violation field naming a map entry.
fn entry(what: &str, key: &str) -> String {
    format!("{what}[{}]", serde_json::to_string(key).unwrap_or_default())
}

/// How the file's columns map to contact fields.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnMapping {
    headers: Vec<String>,
    /// Per column; None = unknown column.
    targets: Vec<Option<Target>>,
    unknown: Vec<String>,
    /// Mapped columns (not ignored), for the row loop.
    used: Vec<(usize, Target)>,
    by_target: HashMap<Target, usize>,
}

impl ColumnMapping {
    /// Resolves the mapping for a file with these (trimmed) header names: from `spec` (header →
    /// target string) when given, else inferred from the names. All problems are reported.
    pub fn resolve(
        headers: &[String],
        spec: Option<&BTreeMap<String, String>>,
        catalog: &AttributeCatalog,
    ) -> Result<Self, Vec<FieldViolation>> {
        let mut targets: Vec<Option<Target>> = vec![None; headers.len()];
        // The field naming the entry that set each column's target.
        let mut origin: Vec<String> = headers.iter().map(|h| entry("header", h)).collect();
        let mut violations = Vec::new();
        let add = |violations: &mut Vec<FieldViolation>, field: String, message: String| {
            violations.push(FieldViolation { field, message })
        };
        match spec {
            Some(spec) => {
                for (key, target) in spec {
                    let field = entry("mapping", key);
                    let k = key.trim();
                    let mut columns: Vec<usize> =
                        (0..headers.len()).filter(|&i| headers[i] == k).collect();
                    if columns.is_empty() {
                        columns = (0..headers.len())
                            .filter(|&i| headers[i].to_lowercase() == k.to_lowercase())
                            .collect();
                    }
                    let target = match Target::parse(target, catalog) {
                        Ok(t) => Some(t),
                        Err(m) => {
                            add(&mut violations, field.clone(), m);
                            None
                        }
                    };
                    match columns[..] {
                        [] => add(
                            &mut violations,
                            field,
                            format!(
                                "column {} is not in the file; its columns are: {}",
                                show(k),
                                list(headers)
                            ),
                        ),
                        [i] => match (targets[i].is_some(), target) {
                            (true, _) => add(
                                &mut violations,
                                field,
                                format!("column {} is already mapped by {}", show(k), origin[i]),
                            ),
                            (false, Some(t)) => {
                                targets[i] = Some(t);
                                origin[i] = field;
                            }
                            (false, None) => {}
                        },
                        _ => add(
                            &mut violations,
                            field,
                            format!(
                                "the file has {} columns named {} (columns {}); rename them so \
                                 each is unique",
                                columns.len(),
                                show(k),
                                columns
                                    .iter()
                                    .map(|i| (i + 1).to_string())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        ),
                    }
                }
            }
            None => {
                for (i, h) in headers.iter().enumerate() {
                    targets[i] = infer(h, catalog);
                }
            }
        }

        let mut by_target: HashMap<Target, usize> = HashMap::new();
        for (i, target) in targets.iter().enumerate() {
            let Some(t) = target.as_ref().filter(|t| **t != Target::Ignore) else {
                continue;
            };
            if let Some(&first) = by_target.get(t) {
                let message = if spec.is_some() {
                    format!(
                        "maps to '{t}' like {}; each target can take one column only",
                        origin[first]
                    )
                } else {
                    format!(
                        "columns {} and {} both look like '{t}'; give a column mapping that maps \
                         one of them to '{t}' and the other to 'ignore'",
                        show(&headers[first]),
                        show(&headers[i])
                    )
                };
                add(&mut violations, origin[i].clone(), message);
            } else {
                by_target.insert(t.clone(), i);
            }
        }
        let has_identifier = [Target::Email, Target::Phone, Target::ExternalId]
            .iter()
            .any(|t| by_target.contains_key(t));
        if violations.is_empty() && !has_identifier {
            if spec.is_some() {
                add(
                    &mut violations,
                    "mapping".to_owned(),
                    "no column is mapped to email, phone or external_id; every contact needs at \
                     least one"
                        .to_owned(),
                );
            } else {
                add(
                    &mut violations,
                    "header".to_owned(),
                    format!(
                        "no column was recognised as email, phone or external_id (the first line \
                         must be a header; its columns are: {}); name the columns or give a \
                         column mapping",
                        list(headers)
                    ),
                );
            }
        }
        if !violations.is_empty() {
            return Err(violations);
        }

        let unknown = targets
            .iter()
            .enumerate()
            .filter(|(_, t)| t.is_none())
            .map(|(i, _)| match headers[i].as_str() {
                "" => format!("(unnamed column {})", i + 1),
                h => h.to_owned(),
            })
            .collect();
        let used = targets
            .iter()
            .enumerate()
            .filter_map(|(i, t)| match t {
                Some(Target::Ignore) | None => None,
                Some(t) => Some((i, t.clone())),
            })
            .collect();
        Ok(Self {
            headers: headers.to_vec(),
            targets,
            unknown,
            used,
            by_target,
        })
    }

    pub fn headers(&self) -> &[String] {
        &self.headers
    }

    /// The target of a column (0-based); None for an unknown column or out of range.
    pub fn target(&self, column: usize) -> Option<&Target> {
        self.targets.get(column).and_then(Option::as_ref)
    }

    /// The effective mapping, header → target, in column order (unknown columns left out).
    pub fn mapped(&self) -> impl Iterator<Item = (&str, &Target)> {
        self.headers
            .iter()
            .zip(&self.targets)
            .filter_map(|(h, t)| t.as_ref().map(|t| (h.as_str(), t)))
    }

    /// Header of the column feeding `target` (never for `Ignore`).
    pub fn column_of(&self, target: &Target) -> Option<&str> {
        self.by_target
            .get(target)
            .map(|&i| self.headers[i].as_str())
    }

    /// Columns neither mapped nor inferred (ignored); unnamed ones as `(unnamed column 3)`.
    pub fn unknown_columns(&self) -> &[String] {
        &self.unknown
    }
}

fn list(headers: &[String]) -> String {
    const MAX: usize = 20;
    let mut out: Vec<String> = headers.iter().take(MAX).map(|h| show(h)).collect();
    if headers.len() > MAX {
        out.push(format!("and {} more", headers.len() - MAX));
    }
    out.join(", ")
}

/// A problem that ends the parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct FileError {
    pub line: u64,
    pub message: String,
}

/// Why a file can't be imported at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    /// The file is empty, or unreadable before the end of its header.
    #[error(transparent)]
    File(#[from] FileError),
    /// The header or the mapping is unusable; every problem is listed.
    #[error("{}", join_violations(.0))]
    Invalid(Vec<FieldViolation>),
}

impl ImportError {
    /// The header/mapping violations (empty for a file error).
    pub fn violations(&self) -> &[FieldViolation] {
        match self {
            Self::File(_) => &[],
            Self::Invalid(v) => v,
        }
    }
}

fn join_violations(v: &[FieldViolation]) -> String {
    v.iter()
        .map(|v| format!("{}: {}", v.field, v.message))
        .collect::<Vec<_>>()
        .join("; ")
}

/// One data row: the physical line it starts on and its contact, or why it is rejected.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedRow {
    pub line: u64,
    pub outcome: Result<ValidContact, String>,
}

/// Streams a CSV file as validated contacts; see the module docs. Memory is bounded by one
/// record plus the duplicate-tracking digests.
pub struct ImportParser<R: Read> {
    csv: csv::Reader<Tracker<R>>,
    record: csv::ByteRecord,
    mapping: ColumnMapping,
    catalog: AttributeCatalog,
    done: bool,
    seen_email: Seen,
    seen_phone: Seen,
    seen_external_id: Seen,
    digest_keys: [RandomState; 2],
}

/// Identifier digest → line of the accepted row that had it.
type Seen = HashMap<u128, u64, BuildHasherDefault<DigestHasher>>;

/// The keys are already uniform digests: hashing them again would be wasted work.
#[derive(Default)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.0 ^= u64::from_le_bytes(b);
        }
    }

    fn write_u128(&mut self, n: u128) {
        self.0 ^= n as u64;
    }
}

impl<R: Read> ImportParser<R> {
    /// Reads the header and resolves the mapping (see [`ColumnMapping::resolve`]).
    pub fn new(
        reader: R,
        mapping_spec: Option<&BTreeMap<String, String>>,
        catalog: &AttributeCatalog,
    ) -> Result<Self, ImportError> {
        let csv = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .buffer_capacity(64 * 1024)
            .from_reader(Tracker::new(reader));
        let mut parser = Self {
            csv,
            record: csv::ByteRecord::new(),
            mapping: ColumnMapping {
                headers: Vec::new(),
                targets: Vec::new(),
                unknown: Vec::new(),
                used: Vec::new(),
                by_target: HashMap::new(),
            },
            catalog: catalog.clone(),
            done: false,
            seen_email: Seen::default(),
            seen_phone: Seen::default(),
            seen_external_id: Seen::default(),
            digest_keys: [RandomState::new(), RandomState::new()],
        };
        let line = match parser.read_record() {
            Some(Ok(line)) => line,
            Some(Err(e)) => return Err(e.into()),
            None => {
                return Err(FileError {
                    line: 1,
                    message: "the file is empty; its first line must be a header naming the \
                              columns"
                        .to_owned(),
                }
                .into());
            }
        };
        let mut headers = Vec::with_capacity(parser.record.len());
        let mut violations = Vec::new();
        for (i, cell) in parser.record.iter().enumerate() {
            match std::str::from_utf8(cell) {
                Ok(s) => headers.push(s.trim().to_owned()),
                Err(e) => {
                    violations.push(FieldViolation {
                        field: "header".to_owned(),
                        message: format!(
                            "column {} of the header (line {line}) is not valid UTF-8 (byte \
                             offset {}); save the file as UTF-8",
                            i + 1,
                            e.valid_up_to()
                        ),
                    });
                    headers.push(String::new());
                }
            }
        }
        if !violations.is_empty() {
            return Err(ImportError::Invalid(violations));
        }
        parser.mapping = ColumnMapping::resolve(&headers, mapping_spec, catalog)
            .map_err(ImportError::Invalid)?;
        Ok(parser)
    }

    pub fn headers(&self) -> &[String] {
        self.mapping.headers()
    }

    pub fn unknown_columns(&self) -> &[String] {
        self.mapping.unknown_columns()
    }

    pub fn mapping(&self) -> &ColumnMapping {
        &self.mapping
    }

    /// The next data row; `Some(Err)` is a file-level error, after which the parse is over.
    pub fn next_row(&mut self) -> Option<Result<ParsedRow, FileError>> {
        let line = match self.read_record()? {
            Ok(line) => line,
            Err(e) => return Some(Err(e)),
        };
        let outcome = self.row(line);
        Some(Ok(ParsedRow { line, outcome }))
    }

    /// Reads the next non-blank record into `self.record`: its start line, a file error, or
    /// None at the end.
    fn read_record(&mut self) -> Option<Result<u64, FileError>> {
        loop {
            if self.done {
                return None;
            }
            let fallback_line = self.csv.position().line();
            match self.csv.read_byte_record(&mut self.record) {
                Ok(true) => {}
                Ok(false) => {
                    self.done = true;
                    return None;
                }
                Err(e) => {
                    self.done = true;
                    let t = self.csv.get_ref();
                    let message = if t.too_long {
                        format!(
                            "this record is longer than {} MiB; look for a quote (\") that is \
                             never closed",
                            MAX_RECORD_BYTES >> 20
                        )
                    } else {
                        format!("the file could not be read: {e}")
                    };
                    let line = if t.too_long {
                        t.record_line
                    } else {
                        fallback_line
                    };
                    return Some(Err(FileError { line, message }));
                }
            }
            let pos = self.record.position().map_or(0, csv::Position::byte);
            let tracker = self.csv.get_mut();
            // csv's own position is where it started reading, before any blank lines.
            let line = loop {
                match tracker.starts.pop_front() {
                    Some((offset, line)) if offset >= pos => break line,
                    Some(_) => continue,
                    None => break fallback_line,
                }
            };
            if tracker.eof && tracker.state == QState::InQuoted && tracker.starts.is_empty() {
                self.done = true;
                return Some(Err(FileError {
                    line,
                    message: format!(
                        "a quoted field opened on line {} is never closed, so the rest of the \
                         file can't be read; add the missing quote (\")",
                        tracker.quote_line
                    ),
                }));
            }
            let blank = self
                .record
                .iter()
                .all(|f| f.iter().all(u8::is_ascii_whitespace));
            if !blank {
                return Some(Ok(line));
            }
        }
    }

    /// Converts and validates the current record.
    fn row(&mut self, line: u64) -> Result<ValidContact, String> {
        let (fields, expected) = (self.record.len(), self.mapping.headers.len());
        if fields != expected {
            return Err(format!("has {fields} fields, the header has {expected}"));
        }
        let mut input = ContactInput::default();
        // (column, message); None sorts first (no column).
        let mut errors: Vec<(Option<usize>, String)> = Vec::new();
        // Column of each consent entry, by index in `input.consent`.
        let mut consent_columns = Vec::new();
        for (col, target) in &self.mapping.used {
            let col = *col;
            let header = &self.mapping.headers[col];
            let cell = match std::str::from_utf8(&self.record[col]) {
                Ok(s) => s.trim(),
                Err(e) => {
                    return Err(format!(
                        "not valid UTF-8 (column {}, byte offset {}); save the file as UTF-8",
                        show(header),
                        e.valid_up_to()
                    ));
                }
            };
            if cell.is_empty() {
                continue;
            }
            let mut fail = |m: String| errors.push((Some(col), m));
            match target {
                Target::Email => input.email = Some(cell.to_owned()),
                Target::Phone => input.phone = Some(cell.to_owned()),
                Target::ExternalId => input.external_id = Some(cell.to_owned()),
                Target::FirstName => input.first_name = Some(cell.to_owned()),
                Target::LastName => input.last_name = Some(cell.to_owned()),
                Target::Locale => input.locale = Some(cell.to_owned()),
                Target::TimeZone => input.time_zone = Some(cell.to_owned()),
                Target::Tags => {
                    for tag in split_list(cell) {
                        if tag.contains(',') {
                            fail(format!(
                                "tag {} contains a comma; separate tags with ';' or '|'",
                                show(tag)
                            ));
                        } else {
                            input.tags.push(tag.to_owned());
                        }
                    }
                }
                Target::Attribute(key) => {
                    let Some(&ty) = self.catalog.get(key) else {
                        continue;
                    };
                    match convert(ty, cell) {
                        Ok(v) => {
                            input.attributes.insert(key.clone(), v);
                        }
                        Err(m) => fail(m),
                    }
                }
                Target::Consent(channel) => match parse_consent(cell) {
                    Some(state) => {
                        consent_columns.push(col);
                        input.consent.push(ConsentInput {
                            channel: *channel,
                            state,
                            source: CONSENT_SOURCE.to_owned(),
                            at: None,
                        });
                    }
                    None => fail(format!(
                        "{} is not a consent value; use subscribed, unsubscribed or unknown \
                         (yes/no, true/false, 1/0 and opt-in/opt-out work too)",
                        show(cell)
                    )),
                },
                Target::LastActivityAt => match parse_timestamp(cell) {
                    Some(t) => input.last_activity_at = Some(t),
                    None => fail(format!(
                        "{} is not a date and time; use RFC 3339 (2024-05-01T13:45:00Z) or \
                         YYYY-MM-DD HH:MM:SS in UTC",
                        show(cell)
                    )),
                },
                Target::Ignore => {}
            }
        }
        let valid = match contact::validate(&input, &self.catalog) {
            Ok(valid) => Some(valid),
            Err(violations) => {
                for v in violations {
                    let col = if v.message == IDENTIFIER_REQUIRED {
                        None
                    } else {
                        self.column_for(&v.field, &consent_columns)
                    };
                    errors.push((col, v.message));
                }
                None
            }
        };
        if !errors.is_empty() {
            errors.sort_by_key(|(col, _)| *col);
            let reasons: Vec<String> = errors
                .into_iter()
                .map(|(col, m)| match col {
                    Some(c) => format!("column {}: {m}", show(&self.mapping.headers[c])),
                    None => m,
                })
                .collect();
            return Err(reasons.join("; "));
        }
        let valid = valid.ok_or_else(String::new)?;
        self.check_duplicate(&valid, line)?;
        Ok(valid)
    }

    /// The column a violation of `field` comes from.
    fn column_for(&self, field: &str, consent_columns: &[usize]) -> Option<usize> {
        let target = match field {
            "email" => Target::Email,
            "phone" => Target::Phone,
            "external_id" => Target::ExternalId,
            "first_name" => Target::FirstName,
            "last_name" => Target::LastName,
            "locale" => Target::Locale,
            "time_zone" => Target::TimeZone,
            "last_activity_at" => Target::LastActivityAt,
            f if f == "tags" || f.starts_with("tags[") => Target::Tags,
            f => {
                if let Some(key) = f.strip_prefix("attributes.") {
                    Target::Attribute(key.to_owned())
                } else {
                    let index = f.strip_prefix("consent[")?.split(']').next()?;
                    return consent_columns.get(index.parse::<usize>().ok()?).copied();
                }
            }
        };
        self.mapping.by_target.get(&target).copied()
    }

    /// Rejects a row that repeats an identifier of an earlier accepted row; else records its
    /// identifiers.
    fn check_duplicate(&mut self, valid: &ValidContact, line: u64) -> Result<(), String> {
        let digest = |s: &str| digest(&self.digest_keys, s);
        let keys = [
            (valid.email_normalized.as_deref().map(digest), "email"),
            (valid.phone.as_deref().map(digest), "phone"),
            (valid.external_id.as_deref().map(digest), "external_id"),
        ];
        let maps = [
            &mut self.seen_email,
            &mut self.seen_phone,
            &mut self.seen_external_id,
        ];
        for ((key, what), map) in keys.iter().zip(&maps) {
            if let Some(first) = key.and_then(|k| map.get(&k)) {
                return Err(format!("duplicate of line {first} (same {what})"));
            }
        }
        for ((key, _), map) in keys.iter().zip(maps) {
            if let Some(k) = key {
                map.insert(*k, line);
            }
        }
        Ok(())
    }
}

impl<R: Read> Iterator for ImportParser<R> {
    type Item = Result<ParsedRow, FileError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_row()
    }
}

/// A 128-bit keyed digest (two SipHash-1-3 under per-parser random keys): smaller than the
/// string, fast, and collisions are out of reach (random keys: not even crafted ones).
fn digest(keys: &[RandomState; 2], s: &str) -> u128 {
    let [a, b] = keys.each_ref().map(|k| u128::from(k.hash_one(s)));
    a << 64 | b
}

/// Non-empty trimmed pieces of a list cell split on `;` or `|`.
fn split_list(cell: &str) -> impl Iterator<Item = &str> {
    cell.split([';', '|'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// A cell as a value of the attribute type (validate_value checks it again, e.g. lengths).
fn convert(ty: AttributeType, cell: &str) -> Result<Value, String> {
    match ty {
        AttributeType::String => Ok(Value::String(cell.to_owned())),
        AttributeType::Number => parse_number(cell).ok_or_else(|| {
            let hint = if cell.contains(',') {
                " (no thousands separators, and '.' as the decimal point)"
            } else {
                ""
            };
            format!("{} is not a number; write it like 1234.5{hint}", show(cell))
        }),
        AttributeType::Boolean => parse_bool(cell).map(Value::Bool).ok_or_else(|| {
            format!(
                "{} is not a boolean; use true/false, yes/no or 1/0",
                show(cell)
            )
        }),
        // validate_value normalises it.
        AttributeType::Date => match parse_date(cell) {
            Some(_) => Ok(Value::String(cell.to_owned())),
            None => {
                let hint = if cell.contains(['/', '.']) {
                    "; day/month order can't be told from it"
                } else {
                    ""
                };
                Err(format!(
                    "{} is not a date; write dates as YYYY-MM-DD (e.g. 2024-12-31){hint}",
                    show(cell)
                ))
            }
        },
        AttributeType::StringList => Ok(Value::Array(
            split_list(cell)
                .map(|s| Value::String(s.to_owned()))
                .collect(),
        )),
    }
}

fn parse_number(cell: &str) -> Option<Value> {
    let numeric = cell
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b'e' | b'E'));
    if !numeric || !cell.bytes().any(|b| b.is_ascii_digit()) {
        return None;
    }
    if let Ok(i) = cell.parse::<i64>() {
        return Some(Value::from(i));
    }
    let f = cell.parse::<f64>().ok().filter(|f| f.is_finite())?;
    serde_json::Number::from_f64(f).map(Value::Number)
}

fn parse_bool(cell: &str) -> Option<bool> {
    match cell.to_ascii_lowercase().as_str() {
        "true" | "yes" | "y" | "1" => Some(true),
        "false" | "no" | "n" | "0" => Some(false),
        _ => None,
    }
}

fn parse_consent(cell: &str) -> Option<ConsentState> {
    match squash(cell).as_str() {
        "subscribed" | "yes" | "y" | "true" | "1" | "optin" | "optedin" => {
            Some(ConsentState::Subscribed)
        }
        "unsubscribed" | "no" | "n" | "false" | "0" | "optout" | "optedout" => {
            Some(ConsentState::Unsubscribed)
        }
        "unknown" => Some(ConsentState::Unknown),
        _ => None,
    }
}

fn parse_timestamp(cell: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(cell) {
        return Some(t.with_timezone(&Utc));
    }
    for format in [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(cell, format) {
            return Some(t.and_utc());
        }
    }
    NaiveDate::parse_from_str(cell, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
}

/// Quote state, mirroring csv-core's reader (default dialect: `,` `"` doubled quotes, CR/LF/CRLF).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QState {
    StartRecord,
    StartField,
    InField,
    InQuoted,
    QuoteInQuoted,
}

/// A pass-through reader that strips a UTF-8 BOM and follows the CSV structure ahead of the csv
/// parser: where each record starts (byte offset, physical line), whether the file ended inside
/// a quoted field, and records longer than [`MAX_RECORD_BYTES`].
struct Tracker<R> {
    inner: R,
    started: bool,
    head: [u8; 3],
    head_len: usize,
    offset: u64,
    line: u64,
    state: QState,
    /// Record starts not yet claimed by the csv parser (bounded by its buffer).
    starts: VecDeque<(u64, u64)>,
    record_line: u64,
    record_bytes: usize,
    quote_line: u64,
    eof: bool,
    too_long: bool,
}

impl<R: Read> Tracker<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            started: false,
            head: [0; 3],
            head_len: 0,
            offset: 0,
            line: 1,
            state: QState::StartRecord,
            starts: VecDeque::new(),
            record_line: 1,
            record_bytes: 0,
            quote_line: 1,
            eof: false,
            too_long: false,
        }
    }

    fn scan(&mut self, bytes: &[u8]) -> io::Result<()> {
        use QState::*;
        let mut i = 0;
        while i < bytes.len() {
            // Fast path: a run of bytes that can't change the state.
            let rest = &bytes[i..];
            let run = match self.state {
                InQuoted => rest.iter().position(|&b| b == b'"'),
                InField => rest.iter().position(|&b| matches!(b, b',' | b'\n' | b'\r')),
                _ => Some(0),
            }
            .unwrap_or(rest.len());
            if run > 0 {
                if self.state == InQuoted {
                    self.line += rest[..run].iter().filter(|&&b| b == b'\n').count() as u64;
                }
                self.offset += run as u64;
                self.record_bytes += run;
                i += run;
                if self.record_bytes > MAX_RECORD_BYTES {
                    self.too_long = true;
                    return Err(io::Error::other("record too long"));
                }
                continue;
            }
            let b = bytes[i];
            i += 1;
            let term = b == b'\n' || b == b'\r';
            if self.state == StartRecord && !term {
                self.starts.push_back((self.offset, self.line));
                self.record_line = self.line;
                self.record_bytes = 0;
                self.state = StartField;
            }
            self.state = match (self.state, b) {
                (StartRecord, _) => StartRecord,
                (StartField, b'"') => {
                    self.quote_line = self.line;
                    InQuoted
                }
                (InQuoted, b'"') => QuoteInQuoted,
                (InQuoted, _) => InQuoted,
                (QuoteInQuoted, b'"') => InQuoted,
                (_, b',') => StartField,
                (_, b'\n' | b'\r') => StartRecord,
                _ => InField,
            };
            self.offset += 1;
            self.line += u64::from(b == b'\n');
            self.record_bytes += 1;
            if self.record_bytes > MAX_RECORD_BYTES && self.state != StartRecord {
                self.too_long = true;
                return Err(io::Error::other("record too long"));
            }
        }
        Ok(())
    }
}

impl<R: Read> Read for Tracker<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if !self.started {
            self.started = true;
            while self.head_len < 3 {
                match self.inner.read(&mut self.head[self.head_len..]) {
                    Ok(0) => break,
                    Ok(n) => self.head_len += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            if self.head[..self.head_len] == [0xEF, 0xBB, 0xBF] {
                self.head_len = 0;
            }
        }
        let n = if self.head_len > 0 {
            let n = self.head_len.min(buf.len());
            buf[..n].copy_from_slice(&self.head[..n]);
            self.head.copy_within(n..self.head_len, 0);
            self.head_len -= n;
            n
        } else {
            self.inner.read(buf)?
        };
        if n == 0 {
            self.eof = true;
        }
        self.scan(&buf[..n])?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> AttributeCatalog {
        [
            ("plan", AttributeType::String),
            ("signup_date", AttributeType::Date),
            ("lifetime_value", AttributeType::Number),
            ("vip", AttributeType::Boolean),
            ("interests", AttributeType::StringList),
        ]
        .into_iter()
        .map(|(k, t)| (k.to_owned(), t))
        .collect()
    }

    fn parse_all(data: &[u8], spec: Option<&BTreeMap<String, String>>) -> Vec<(u64, String)> {
        let parser = ImportParser::new(data, spec, &catalog()).expect("header");
        parser
            .map(|r| match r {
                Ok(ParsedRow { line, outcome }) => (
                    line,
                    match outcome {
                        Ok(c) => format!("ok {}", c.email.or(c.phone).unwrap_or_default()),
                        Err(reason) => reason,
                    },
                ),
                Err(e) => (e.line, format!("FILE: {}", e.message)),
            })
            .collect()
    }

    fn spec(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn violations(data: &[u8], spec: Option<&BTreeMap<String, String>>) -> Vec<(String, String)> {
        match ImportParser::new(data, spec, &catalog()) {
            Ok(_) => panic!("expected an error"),
            Err(e) => e
                .violations()
                .iter()
                .map(|v| (v.field.clone(), v.message.clone()))
                .collect(),
        }
    }

    const FIXTURE: &[u8] = b"\xEF\xBB\xBFEmail,First Name,Last Name,Plan,Signup Date,Tags,Email Opt-In,Notes,Mobile\n\
alice@example.com,Alice,Smith,pro,2024-01-15,VIP;beta|vip,yes,\"likes cats, dogs\",\n\
bob@,Bob,,free,,,,,\n\
\"carol@example.com\",\"Carol, Jr.\",Jones,pro,31/12/2024,,maybe,,\n\
ALICE@example.com,Alice again,,,,,,,\n\
\n\
dave@example.com,Dave,Brown,\"gold\nplus\",2024-02-29,a | b,opt-out,\"multi\nline\",+44 20 7946 0958\n\
erin@example.com,Ren\xe9e,,,,,,,\n\
frank@example.com,Frank,,,,,,,,extra\n\
bob@example.com,Bob,,,,,,caf\xe9,+44 (20) 7946-0958\n\
,Nobody,,,,,,,\n\
,,,,,,,,\n\
gina@example.com,Gina,,,,\"a,b\",,,\n\
bob@example.org,Bob2,,,,,,\"notes only\",";

    #[test]
    fn import_fixture_outcomes() {
        let parser = ImportParser::new(FIXTURE, None, &catalog()).unwrap();
        assert_eq!(parser.unknown_columns(), ["Notes"]);
        assert_eq!(
            parser
                .mapping()
                .mapped()
                .map(|(h, t)| format!("{h}={t}"))
                .collect::<Vec<_>>(),
            [
                "Email=email",
                "First Name=first_name",
                "Last Name=last_name",
                "Plan=attributes.plan",
                "Signup Date=attributes.signup_date",
                "Tags=tags",
                "Email Opt-In=consent.email",
                "Mobile=phone",
            ]
        );
        let rows = parse_all(FIXTURE, None);
        let expected: Vec<(u64, &str)> = vec![
            (2, "ok alice@example.com"),
            (
                3,
                "column 'Email': 'bob@' is not a valid email address (nothing after the @)",
            ),
            (
                4,
                "column 'Signup Date': '31/12/2024' is not a date; write dates as YYYY-MM-DD \
                 (e.g. 2024-12-31); day/month order can't be told from it; column 'Email \
                 Opt-In': 'maybe' is not a consent value; use subscribed, unsubscribed or unknown \
                 (yes/no, true/false, 1/0 and opt-in/opt-out work too)",
            ),
            (5, "duplicate of line 2 (same email)"),
            (7, "ok dave@example.com"),
            (
                10,
                "not valid UTF-8 (column 'First Name', byte offset 3); save the file as UTF-8",
            ),
            (11, "has 10 fields, the header has 9"),
            (12, "duplicate of line 7 (same phone)"),
            (
                13,
                "at least one of email, phone or external_id is required",
            ),
            (
                15,
                "column 'Tags': tag 'a,b' contains a comma; separate tags with ';' or '|'",
            ),
            (16, "ok bob@example.org"),
        ];
        let got: Vec<(u64, &str)> = rows.iter().map(|(l, s)| (*l, s.as_str())).collect();
        assert_eq!(got, expected);

        // The accepted rows' contents.
        let mut parser = ImportParser::new(FIXTURE, None, &catalog()).unwrap();
        let alice = parser.next_row().unwrap().unwrap().outcome.unwrap();
        assert_eq!(alice.first_name, "Alice");
        assert_eq!(alice.tags, ["beta", "vip"]);
        assert_eq!(
            Value::Object(alice.attributes),
            serde_json::json!({"plan": "pro", "signup_date": "2024-01-15"})
        );
        assert_eq!(
            alice.consent,
            [ConsentInput {
                channel: Channel::Email,
                state: ConsentState::Subscribed,
                source: "import".into(),
                at: None
            }]
        );
        let dave = parser
            .find_map(|r| r.unwrap().outcome.ok().filter(|c| c.first_name == "Dave"))
            .unwrap();
        assert_eq!(dave.attributes["plan"], "gold\nplus");
        assert_eq!(dave.phone.as_deref(), Some("+442079460958"));
        assert_eq!(dave.tags, ["a", "b"]);
        assert_eq!(dave.consent[0].state, ConsentState::Unsubscribed);
    }

    #[test]
    fn import_attribute_cells_and_row_checks() {
        let data = b"email,lifetime_value,vip,interests,last_activity_at,locale,Time Zone\n\
a@x.io,\"1,234.5\",maybe,sports; music |,yesterday,english,Mars/Base\n\
b@x.io,-12.5e2,Yes,sports| music,2024-05-01 13:45,PT_br,europe/lisbon\n\
c@x.io,1e999,,,2024-05-01T13:45:00+02:00,,\n";
        let parser = ImportParser::new(&data[..], None, &catalog()).unwrap();
        let rows: Vec<ParsedRow> = parser.map(Result::unwrap).collect();
        assert_eq!(
            rows[0].outcome.as_ref().unwrap_err(),
            "column 'lifetime_value': '1,234.5' is not a number; write it like 1234.5 (no \
             thousands separators, and '.' as the decimal point); column 'vip': 'maybe' is not a \
             boolean; use true/false, yes/no or 1/0; column 'last_activity_at': 'yesterday' is \
             not a date and time; use RFC 3339 (2024-05-01T13:45:00Z) or YYYY-MM-DD HH:MM:SS in \
             UTC; column 'locale': 'english' is not a locale; use a language tag like en, en-US, \
             pt-BR or zh-Hant-TW; column 'Time Zone': 'Mars/Base' is not a time zone; use an \
             IANA name like Europe/Paris or America/New_York"
        );
        let b = rows[1].outcome.as_ref().unwrap();
        assert_eq!(
            Value::Object(b.attributes.clone()),
            serde_json::json!({"lifetime_value": -1250.0, "vip": true, "interests": ["sports", "music"]})
        );
        assert_eq!(b.locale, "pt-BR");
        assert_eq!(b.time_zone, "Europe/Lisbon");
        assert_eq!(
            b.last_activity_at.unwrap().to_rfc3339(),
            "2024-05-01T13:45:00+00:00"
        );
        assert_eq!(
            rows[2].outcome.as_ref().unwrap_err(),
            "column 'lifetime_value': '1e999' is not a number; write it like 1234.5"
        );
    }

    #[test]
    fn import_mapping_inference() {
        let headers: Vec<String> = [
            "E-mail",
            "first_name",
            "LAST NAME",
            "Mobile Phone",
            "Lifetime Value",
            "attributes.plan",
            "consent.sms",
            "External ID",
            "Favourite colour",
            "",
            "Time_Zone",
        ]
        .map(String::from)
        .to_vec();
        let m = ColumnMapping::resolve(&headers, None, &catalog()).unwrap();
        let targets: Vec<Option<&Target>> = (0..headers.len()).map(|i| m.target(i)).collect();
        assert_eq!(
            targets,
            [
                Some(&Target::Email),
                Some(&Target::FirstName),
                Some(&Target::LastName),
                Some(&Target::Phone),
                Some(&Target::Attribute("lifetime_value".into())),
                Some(&Target::Attribute("plan".into())),
                Some(&Target::Consent(Channel::Sms)),
                Some(&Target::ExternalId),
                None,
                None,
                Some(&Target::TimeZone),
            ]
        );
        assert_eq!(
            m.unknown_columns(),
            ["Favourite colour", "(unnamed column 10)"]
        );
        assert_eq!(m.column_of(&Target::Phone), Some("Mobile Phone"));
        let email_address = ["Email Address".to_owned(), "Name".to_owned()];
        let m = ColumnMapping::resolve(&email_address, None, &catalog()).unwrap();
        assert_eq!(m.target(0), Some(&Target::Email));
        assert_eq!(m.unknown_columns(), ["Name"]);

        // Two columns that both look like email.
        assert_eq!(
            violations(b"Email,E-mail\na@b.co,c@d.co\n", None),
            [(
                "header[\"E-mail\"]".to_owned(),
                "columns 'Email' and 'E-mail' both look like 'email'; give a column mapping that \
                 maps one of them to 'email' and the other to 'ignore'"
                    .to_owned()
            )]
        );
        // Nothing to identify a contact by.
        let v = violations(b"bob@x.io,Bob\n", None);
        assert_eq!(v[0].0, "header");
        assert!(
            v[0].1.starts_with("no column was recognised as email"),
            "{v:?}"
        );
    }

    #[test]
    fn import_explicit_mapping() {
        let data = b"E-mail,Name,Plan,Extra\nbob@x.io,Bob,pro,zzz\n";
        let s = spec(&[
            ("E-mail", "email"),
            ("Name", "first_name"),
            ("plan", "ignore"),
        ]);
        let parser = ImportParser::new(&data[..], Some(&s), &catalog()).unwrap();
        assert_eq!(parser.unknown_columns(), ["Extra"]);
        assert_eq!(parser.headers(), ["E-mail", "Name", "Plan", "Extra"]);
        let rows: Vec<ParsedRow> = parser.map(Result::unwrap).collect();
        let bob = rows[0].outcome.as_ref().unwrap();
        assert_eq!((bob.first_name.as_str(), bob.attributes.len()), ("Bob", 0));

        let s = spec(&[
            ("E-mail", "email"),
            ("Name", "email"),
            ("Plan", "attributes.nope"),
            ("Extra", "favourite"),
            ("Phone", "phone"),
        ]);
        assert_eq!(
            violations(&data[..], Some(&s)),
            [
                (
                    "mapping[\"Extra\"]".to_owned(),
                    "'favourite' is not a column target; use email, phone, external_id, \
                     first_name, last_name, locale, time_zone, tags, last_activity_at, \
                     attributes.<key>, consent.email, consent.sms, consent.push or ignore"
                        .to_owned()
                ),
                (
                    "mapping[\"Phone\"]".to_owned(),
                    "column 'Phone' is not in the file; its columns are: 'E-mail', 'Name', \
                     'Plan', 'Extra'"
                        .to_owned()
                ),
                (
                    "mapping[\"Plan\"]".to_owned(),
                    "attribute 'nope' is not defined; define it under /v1/contact-attributes \
                     first"
                        .to_owned()
                ),
                (
                    "mapping[\"Name\"]".to_owned(),
                    "maps to 'email' like mapping[\"E-mail\"]; each target can take one column \
                     only"
                        .to_owned()
                ),
            ]
        );
        let s = spec(&[("Name", "first_name"), ("E-mail", "consent.fax")]);
        let v = violations(&data[..], Some(&s));
        assert_eq!(v[0].0, "mapping[\"E-mail\"]");
        assert!(v[0].1.starts_with("'fax' is not a consent channel"));
        let s = spec(&[("Name", "first_name")]);
        assert_eq!(
            violations(&data[..], Some(&s)),
            [(
                "mapping".to_owned(),
                "no column is mapped to email, phone or external_id; every contact needs at \
                 least one"
                    .to_owned()
            )]
        );
        // Ambiguous header named by the mapping; case-insensitive fallback.
        let dup = b"email,Name,Name\na@b.co,x,y\n";
        let s = spec(&[("EMAIL", "email"), ("Name", "first_name")]);
        assert_eq!(
            violations(&dup[..], Some(&s)),
            [(
                "mapping[\"Name\"]".to_owned(),
                "the file has 2 columns named 'Name' (columns 2, 3); rename them so each is \
                 unique"
                    .to_owned()
            )]
        );
    }

    #[test]
    fn import_field_count_and_line_numbers() {
        let data = b"email,first_name,notes\r\n\r\na@b.co\r\nb@b.co,B,n,extra\r\n\"c@b.co\",C,\"x\r\ny\"\r\nd@b.co,D,";
        assert_eq!(
            parse_all(&data[..], None),
            [
                (3, "has 1 fields, the header has 3".to_owned()),
                (4, "has 4 fields, the header has 3".to_owned()),
                (5, "ok c@b.co".to_owned()),
                (7, "ok d@b.co".to_owned()),
            ]
        );
    }

    #[test]
    fn import_file_errors() {
        // Unterminated quote: rows before it stand, then the parse ends.
        let data = b"email,first_name\na@b.co,A\nb@b.co,\"B\nc@b.co,C\n";
        assert_eq!(
            parse_all(&data[..], None),
            [
                (2, "ok a@b.co".to_owned()),
                (
                    3,
                    "FILE: a quoted field opened on line 3 is never closed, so the rest of the \
                     file can't be read; add the missing quote (\")"
                        .to_owned()
                ),
            ]
        );
        // A runaway record.
        let mut big = b"email,first_name\na@b.co,\"".to_vec();
        big.extend(std::iter::repeat_n(b'x', MAX_RECORD_BYTES + 10));
        let rows = parse_all(&big, None);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].0, 2);
        assert!(
            rows[0]
                .1
                .starts_with("FILE: this record is longer than 1 MiB")
        );
        // Empty file, header not UTF-8.
        let e = ImportParser::new(&b"\xEF\xBB\xBF\n\n"[..], None, &catalog()).err();
        assert!(
            matches!(e, Some(ImportError::File(FileError { line: 1, .. }))),
            "{e:?}"
        );
        assert_eq!(
            violations(b"email,na\xefme\na@b.co,x\n", None),
            [(
                "header".to_owned(),
                "column 2 of the header (line 1) is not valid UTF-8 (byte offset 2); save the \
                 file as UTF-8"
                    .to_owned()
            )]
        );
    }

    /// A reader handing out one byte at a time (BOM split across reads).
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let Some((first, rest)) = self.0.split_first() else {
                return Ok(0);
            };
            buf[0] = *first;
            self.0 = rest;
            Ok(1)
        }
    }

    #[test]
    fn import_tiny_reads() {
        let parser = ImportParser::new(Trickle(FIXTURE), None, &catalog()).unwrap();
        let lines: Vec<u64> = parser.map(|r| r.unwrap().line).collect();
        assert_eq!(lines, [2, 3, 4, 5, 7, 10, 11, 12, 13, 15, 16]);
    }

    #[test]
    fn import_100k_rows() {
        const N: usize = 100_000;
        let mut data = String::from("email,first_name,last_name,phone,plan,signup_date,tags\n");
        for i in 0..N {
            data.push_str(&format!(
                "user{i}@example.com,First{i},\"Last, {i}\",+1 415 {:07},pro,2024-01-{:02},a;b\n",
                i,
                i % 28 + 1
            ));
        }
        let parser = ImportParser::new(data.as_bytes(), None, &catalog()).unwrap();
        let (mut ok, mut last) = (0, 0);
        for row in parser {
            let row = row.unwrap();
            assert!(row.outcome.is_ok(), "{row:?}");
            ok += 1;
            last = row.line;
        }
        assert_eq!((ok, last), (N, N as u64 + 1));
    }
}
