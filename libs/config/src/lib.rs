//! Typed, layered configuration: defaults in code, then an optional TOML file, then `COS_*`
//! environment variables (`COS_GATEWAY__HTTP_ADDR` is `gateway.http_addr`). Reading collects
//! every missing or malformed setting and fails once, naming each variable.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

mod common;
pub use common::*;

/// Environment variables outside the `COS_` namespace that we honour, and their keys.
const ALIASES: &[(&str, &str)] = &[
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "telemetry.otlp_endpoint"),
    ("RUST_LOG", "telemetry.log_filter"),
    ("LOG_DIR", "telemetry.log_dir"),
];

/// Where a value came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Env(String),
    File(PathBuf),
    Override,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Env(var) => write!(f, "environment variable {var}"),
            Origin::File(path) => write!(f, "config file {}", path.display()),
            Origin::Override => f.write_str("command-line override"),
        }
    }
}

/// The environment variable that sets `key`.
pub fn env_var_for(key: &str) -> String {
    format!("COS_{}", key.replace('.', "__").to_ascii_uppercase())
}

/// Whether a key holds a secret; its value never appears in errors or `check-config` output.
pub fn is_secret_key(key: &str) -> bool {
    const WORDS: &[&str] = &["password", "secret", "keys", "token", "private", "url"];
    let last = key.rsplit('.').next().unwrap_or(key);
    WORDS.iter().any(|w| last.contains(w))
}

/// Raw settings from every layer, flattened to dotted keys.
#[derive(Debug, Default)]
pub struct Source {
    values: BTreeMap<String, (String, Origin)>,
    read: RefCell<BTreeSet<String>>,
}

impl Source {
    /// File (if given, or named by `COS_CONFIG_FILE`) then the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut source = Source::default();
        let file = file
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("COS_CONFIG_FILE").map(PathBuf::from));
        if let Some(path) = file {
            source.add_toml_file(&path)?;
        }
        source.add_env(std::env::vars());
        Ok(source)
    }

    /// Only the given environment (tests, and `check-config` on a proposed environment).
    pub fn from_env_pairs<I, K, V>(vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let mut source = Source::default();
        source.add_env(vars.into_iter().map(|(k, v)| (k.into(), v.into())));
        source
    }

    pub fn add_toml_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::single(format!("cannot read config file {}: {e}", path.display()))
        })?;
        let table: toml::Table = text.parse().map_err(|e| {
            ConfigError::single(format!(
                "config file {} is not valid TOML: {e}",
                path.display()
            ))
        })?;
        let mut flat = Vec::new();
        flatten_toml("", &toml::Value::Table(table), &mut flat);
        for (key, value) in flat {
            self.values
                .insert(key, (value, Origin::File(path.to_path_buf())));
        }
        Ok(())
    }

    fn add_env(&mut self, vars: impl Iterator<Item = (String, String)>) {
        for (name, value) in vars {
            if let Some((_, key)) = ALIASES.iter().find(|(alias, _)| *alias == name) {
                // An explicit COS_ variable wins over its alias.
                let cos = env_var_for(key);
                if !self
                    .values
                    .get(*key)
                    .is_some_and(|(_, o)| *o == Origin::Env(cos.clone()))
                {
                    self.values
                        .insert((*key).to_owned(), (value, Origin::Env(name)));
                }
                continue;
            }
            let Some(rest) = name.strip_prefix("COS_") else {
                continue;
            };
            if rest == "CONFIG_FILE" || rest.is_empty() {
                continue;
            }
            let key = rest.to_ascii_lowercase().replace("__", ".");
            self.values.insert(key, (value, Origin::Env(name)));
        }
    }

    /// Sets a value from code (e.g. `campaign-os up` picks dev defaults).
    pub fn set_override(&mut self, key: &str, value: impl Into<String>) {
        self.values
            .insert(key.to_owned(), (value.into(), Origin::Override));
    }

    pub fn raw(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(|(v, _)| v.as_str())
    }

    /// Keys set by a file or `COS_` variable that no reader asked for: almost always a typo.
    pub fn unknown_keys(&self) -> Vec<(String, Origin)> {
        let read = self.read.borrow();
        self.values
            .iter()
            .filter(|(k, _)| !read.contains(*k))
            .map(|(k, (_, o))| (k.clone(), o.clone()))
            .collect()
    }

    pub fn reader(&self) -> Reader<'_> {
        Reader {
            source: self,
            issues: Vec::new(),
        }
    }
}

fn flatten_toml(prefix: &str, value: &toml::Value, out: &mut Vec<(String, String)>) {
    let join = |k: &str| {
        if prefix.is_empty() {
            k.to_owned()
        } else {
            format!("{prefix}.{k}")
        }
    };
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t {
                flatten_toml(&join(k), v, out);
            }
        }
        toml::Value::Array(items) => {
            let parts: Vec<String> = items
                .iter()
                .map(|v| match v {
                    toml::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect();
            out.push((prefix.to_owned(), parts.join(",")));
        }
        toml::Value::String(s) => out.push((prefix.to_owned(), s.clone())),
        other => out.push((prefix.to_owned(), other.to_string())),
    }
}

/// Reads typed values and remembers every problem until [`Reader::finish`].
pub struct Reader<'a> {
    source: &'a Source,
    issues: Vec<String>,
}

impl Reader<'_> {
    fn lookup(&self, key: &str) -> Option<&(String, Origin)> {
        self.source.read.borrow_mut().insert(key.to_owned());
        self.source
            .values
            .get(key)
            .filter(|(v, _)| !v.trim().is_empty())
    }

    fn parse<T: FromStr>(&mut self, key: &str, raw: &str, origin: &Origin) -> Option<T>
    where
        T::Err: fmt::Display,
    {
        match raw.trim().parse::<T>() {
            Ok(v) => Some(v),
            Err(e) => {
                let shown = if is_secret_key(key) {
                    "[redacted]".to_owned()
                } else {
                    format!("{raw:?}")
                };
                self.issues.push(format!(
                    "{} ({key}, from {origin}): invalid value {shown}: {e}",
                    env_var_for(key)
                ));
                None
            }
        }
    }

    /// A value with a default.
    pub fn get<T: FromStr>(&mut self, key: &str, default: T) -> T
    where
        T::Err: fmt::Display,
    {
        self.optional(key).unwrap_or(default)
    }

    pub fn optional<T: FromStr>(&mut self, key: &str) -> Option<T>
    where
        T::Err: fmt::Display,
    {
        let (raw, origin) = self.lookup(key)?.clone();
        self.parse(key, &raw, &origin)
    }

    /// A value without a default; its absence is reported by `finish`.
    pub fn required<T: FromStr>(&mut self, key: &str, hint: &str) -> Option<T>
    where
        T::Err: fmt::Display,
    {
        if self.lookup(key).is_none() {
            self.issues
                .push(format!("{} ({key}) is required: {hint}", env_var_for(key)));
            return None;
        }
        self.optional(key)
    }

    /// Seconds as a duration.
    pub fn seconds(&mut self, key: &str, default: u64) -> Duration {
        Duration::from_secs(self.get(key, default))
    }

    /// A comma-separated list (TOML arrays are flattened to the same form).
    pub fn list(&mut self, key: &str, default: &[&str]) -> Vec<String> {
        match self.lookup(key) {
            Some((raw, _)) => raw
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            None => default.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    /// Adds a problem found by validation after parsing (e.g. a value out of range).
    pub fn invalid(&mut self, key: &str, message: impl fmt::Display) {
        self.issues
            .push(format!("{} ({key}): {message}", env_var_for(key)));
    }

    pub fn finish(self) -> Result<(), ConfigError> {
        if self.issues.is_empty() {
            Ok(())
        } else {
            Err(ConfigError {
                issues: self.issues,
            })
        }
    }
}

/// Every configuration problem found, one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub issues: Vec<String>,
}

impl ConfigError {
    fn single(issue: String) -> Self {
        Self {
            issues: vec![issue],
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "invalid configuration ({} problem(s)):",
            self.issues.len()
        )?;
        for issue in &self.issues {
            writeln!(f, "  - {issue}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_file_and_names_the_bad_variable() {
        let dir = std::env::temp_dir().join(format!("cos-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(&file, "[gateway]\nhttp_addr = \"0.0.0.0:1\"\nbody_limit_bytes = 10\n[gateway.rate_limit]\nper_ip_per_minute = 5\n").unwrap();
        let mut source = Source::default();
        source.add_toml_file(&file).unwrap();
        source.add_env(
            [
                (
                    "COS_GATEWAY__HTTP_ADDR".to_owned(),
                    "127.0.0.1:2".to_owned(),
                ),
                (
                    "COS_GATEWAY__BODY_LIMIT_BYTES".to_owned(),
                    "lots".to_owned(),
                ),
            ]
            .into_iter(),
        );
        let mut r = source.reader();
        let addr: std::net::SocketAddr = r.get("gateway.http_addr", "1.1.1.1:1".parse().unwrap());
        assert_eq!(addr.port(), 2);
        assert_eq!(r.get::<u32>("gateway.rate_limit.per_ip_per_minute", 0), 5);
        let _: u64 = r.get("gateway.body_limit_bytes", 1);
        let _: Option<String> = r.required("crypto.keys", "set a key ring");
        let err = r.finish().unwrap_err();
        assert_eq!(err.issues.len(), 2, "{err}");
        assert!(
            err.issues[0].contains("COS_GATEWAY__BODY_LIMIT_BYTES"),
            "{err}"
        );
        assert!(err.issues[0].contains("\"lots\""), "{err}");
        assert!(err.issues[1].contains("COS_CRYPTO__KEYS"), "{err}");
    }

    #[test]
    fn secret_values_are_never_echoed() {
        let source = Source::from_env_pairs([
            ("COS_AUTH__ACCESS_TTL_SECS", "x"),
            ("COS_DATABASE__URL", "postgres://u:hunter2@h/db"),
        ]);
        let mut r = source.reader();
        let _: u64 = r.get("auth.access_ttl_secs", 1);
        let _: std::net::SocketAddr = r.get("database.url", "1.1.1.1:1".parse().unwrap());
        let err = r.finish().unwrap_err().to_string();
        assert!(!err.contains("hunter2"), "{err}");
        assert!(err.contains("COS_DATABASE__URL"), "{err}");
    }

    #[test]
    fn lists_aliases_and_unknown_keys() {
        let source = Source::from_env_pairs([
            (
                "COS_GATEWAY__CORS_ORIGINS",
                "https://a.example, https://b.example",
            ),
            ("RUST_LOG", "debug"),
            ("COS_GATEWAY__TYPO", "1"),
        ]);
        let mut r = source.reader();
        assert_eq!(
            r.list("gateway.cors_origins", &[]),
            vec!["https://a.example", "https://b.example"]
        );
        assert_eq!(
            r.get::<String>("telemetry.log_filter", "info".into()),
            "debug"
        );
        r.finish().unwrap();
        let unknown: Vec<String> = source.unknown_keys().into_iter().map(|(k, _)| k).collect();
        assert_eq!(unknown, vec!["gateway.typo".to_owned()]);
    }
}
