//! The admin console: a virtual database where admin users run PgBouncer-style commands.
//! This version reserves its name; the commands arrive with the plugin host.

/// Name of the virtual admin database.
pub const ADMIN_DATABASE: &str = "switchyard";
