//! Configuration: the TOML file an operator writes, parsed with serde and checked before the
//! proxy starts.
//!
//! Every error names the key and the line it is on: syntax and type errors come from the
//! `toml` parser with its own position; cross-references (a database naming an unknown
//! cluster, an admin user that does not exist) are checked here with the spans serde kept.

pub mod live;
mod password;
mod secrets;
mod types;
mod validate;

pub use password::{MalformedVerifier, ScramVerifier, StoredPassword, MIN_SALT_SECRET_LEN};
pub use secrets::{exposed_metrics, exposed_secrets, exposure_warnings, Secret};
pub use types::*;

use std::path::Path;

/// A configuration that could not be loaded; the message is for a person.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}:{line}: `{key}`: {message}")]
    Invalid {
        path: String,
        line: usize,
        key: String,
        message: String,
    },
}

impl Config {
    /// Reads, parses and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Top-level sections whose contents differ between two configuration texts (both
    /// already validated), ignoring formatting, comments and the keys that apply at a
    /// reload (`live`).
    pub fn changed_sections(old: &str, new: &str) -> Vec<String> {
        let (old, new) = (live::without_live_keys(old), live::without_live_keys(new));
        let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
        keys.sort();
        keys.dedup();
        keys.into_iter()
            .filter(|k| old.get(*k) != new.get(*k))
            .cloned()
            .collect()
    }

    /// Whether the `[databases]` of `new` are those of `old` less some: every database `new`
    /// lists is in `old` with the same settings, but for those that apply at a reload
    /// (`pool_size`, `pool_mode`). Removing a database applies at a reload; adding one or
    /// changing its other settings needs a restart.
    pub fn databases_only_removed(old: &str, new: &str) -> bool {
        let databases = |t: &str| match live::without_live_keys(t).remove("databases") {
            Some(toml::Value::Table(d)) => d,
            _ => toml::Table::new(),
        };
        let (old, new) = (databases(old), databases(new));
        new.iter().all(|(name, settings)| old.get(name) == Some(settings))
    }

    /// Parses and validates configuration text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_string(),
            message: parse_error_message(text, &e),
        })?;
        validate::validate(&config, text).map_err(|v| ConfigError::Invalid {
            path: origin.to_string(),
            line: v.line,
            key: v.key,
            message: v.message,
        })?;
        Ok(config)
    }
}

/// Formats a toml error as `line N, column M: message` followed by the offending line; on
/// a line that may hold a secret, the value is hidden, in the line and in the message, and
/// the column (which could tell its length) left out.
fn parse_error_message(text: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => {
            let (line, col) = line_col(text, span.start);
            let src = text.lines().nth(line - 1).unwrap_or("");
            if secrets::holds_secret(src) {
                let message = secrets::redact_message(e.message());
                return format!("line {line}: {message}\n    | {}", secrets::mask_line(src));
            }
            format!("line {line}, column {col}: {}\n    | {src}", e.message())
        }
        None => e.message().to_string(),
    }
}

/// 1-based line and column of a byte offset.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    (line, col)
}

#[cfg(test)]
mod tests;
