//! Keeping the secrets a configuration holds (passwords in `[users]`, `auth_salt_secret`)
//! out of sight: parse errors never echo a secret value, and a file that its group or others
//! can read gets a warning at start, at each reload and in `check-config`; so does an
//! unauthenticated metrics endpoint on an address other than loopback.

use std::path::Path;

use serde::Deserialize;

use super::Config;

/// A secret value of the configuration (a password, verifier, hash or key): used as the
/// text it holds, but its debug form is `<hidden>`, so that `{:?}` of a configuration (or
/// of anything holding one) never prints it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl std::ops::Deref for Secret {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(HIDDEN)
    }
}

/// Parts of a key name that mark its value as a secret (a mistyped `passwrod` included).
const SECRET_MARKERS: [&str; 3] = ["pass", "secret", "pwd"];

/// What replaces a secret in an error message.
const HIDDEN: &str = "<hidden>";

/// Whether a source line may hold a secret value.
pub(super) fn holds_secret(line: &str) -> bool {
    let lower = line.to_ascii_lowercase();
    SECRET_MARKERS.iter().any(|m| lower.contains(m))
}

/// `line` with everything after its first `=` hidden (all of it if it has none).
pub(super) fn mask_line(line: &str) -> String {
    match line.split_once('=') {
        Some((key, _)) => format!("{} = {HIDDEN}", key.trim_end()),
        None => HIDDEN.to_string(),
    }
}

/// A parser message about a secret value, with the value hidden: serde quotes strings in
/// `"..."` and other values in backticks, which also quote key names (`unknown field
/// \`passwrod\``); a backticked word of lowercase letters and `_` is a key name and stays.
pub(super) fn redact_message(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(start) = rest.find(['`', '"']) {
        let quote = rest[start..].chars().next().unwrap_or('"');
        let Some(len) = rest[start + 1..].find(quote) else {
            break;
        };
        let inner = &rest[start + 1..start + 1 + len];
        out.push_str(&rest[..start]);
        let key_name =
            quote == '`' && !inner.is_empty() && inner.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
        if key_name {
            out.push_str(&rest[start..start + len + 2]);
        } else {
            out.push_str(HIDDEN);
        }
        rest = &rest[start + len + 2..];
    }
    if rest.contains(['`', '"']) {
        out.push_str(HIDDEN);
    } else {
        out.push_str(rest);
    }
    out
}

/// The warning for a configuration file that holds secrets and that its group or others
/// may read, or `None` (no secrets, a private file, or one that cannot be examined).
pub fn exposed_secrets(path: &Path, config: &Config) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    let readers = match (mode & 0o040 != 0, mode & 0o004 != 0) {
        (false, false) => return None,
        (true, false) => "its group",
        (false, true) => "others",
        (true, true) => "its group and others",
    };
    let mut secrets = Vec::new();
    if !config.users.is_empty() {
        secrets.push("passwords in [users]");
    }
    if config.proxy.auth_salt_secret.is_some() {
        secrets.push("proxy.auth_salt_secret");
    }
    if secrets.is_empty() {
        return None;
    }
    let path = path.display();
    Some(format!(
        "{path} holds secrets ({}) and is readable by {readers} (mode {mode:04o}): run `chmod 600 {path}`",
        secrets.join(", ")
    ))
}

/// What the configuration at `path` leaves exposed (secrets others can read, metrics beyond
/// loopback), one warning each: shown by `check-config`, and logged at start and at each
/// reload.
pub fn exposure_warnings(path: &Path, config: &Config) -> Vec<String> {
    [exposed_secrets(path, config), exposed_metrics(config)]
        .into_iter()
        .flatten()
        .collect()
}

/// The warning for a metrics endpoint (`metrics_listen`, unauthenticated) bound to an address
/// other than loopback, or `None`.
pub fn exposed_metrics(config: &Config) -> Option<String> {
    let addr = config.proxy.metrics_listen?;
    (!addr.ip().is_loopback()).then(|| {
        format!(
            "proxy.metrics_listen = \"{addr}\" is not a loopback address: the metrics endpoint has no \
             authentication, and whoever can reach it reads the names of databases, users and \
             nodes and the traffic counts; bind it to 127.0.0.1 (or ::1), or make sure only a \
             management network reaches it"
        )
    })
}
