//! Telemetry settings: service name, log format and filter, OTLP endpoint, log directory.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// How log lines are rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line (production).
    #[default]
    Json,
    /// Human-readable single lines (local development). Redaction applies here too.
    Pretty,
}

/// Error for an unknown [`LogFormat`] name.
#[derive(Debug, thiserror::Error)]
#[error("unknown log format {0:?}: expected \"json\" or \"pretty\"")]
pub struct UnknownLogFormat(pub String);

impl FromStr for LogFormat {
    type Err = UnknownLogFormat;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "json" => Ok(Self::Json),
            "pretty" | "text" => Ok(Self::Pretty),
            _ => Err(UnknownLogFormat(s.to_owned())),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Json => "json",
            Self::Pretty => "pretty",
        })
    }
}

/// What [`crate::init`] sets up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetryConfig {
    /// `service.name` of traces and the `service` key of log lines, e.g. `"identity"`.
    pub service_name: String,
    /// JSON or pretty logs.
    pub log_format: LogFormat,
    /// `EnvFilter` directives, e.g. `"info,sqlx=warn"`. Empty means `"info"`.
    pub log_filter: String,
    /// OTLP/gRPC collector endpoint (e.g. `http://otel-collector:4317`); no export when `None`.
    pub otlp_endpoint: Option<String>,
    /// When set, logs also go to daily-rotating files `<dir>/<service_name>.<date>.log`.
    pub log_dir: Option<PathBuf>,
}

impl TelemetryConfig {
    /// JSON logs at `info`, no OTLP export, no log files.
    pub fn new(service_name: impl Into<String>) -> Self {
        Self {
            service_name: service_name.into(),
            log_format: LogFormat::Json,
            log_filter: "info".to_owned(),
            otlp_endpoint: None,
            log_dir: None,
        }
    }
}
