//! The `lifecycle` interface every plugin exports, written once: `init` checks the settings,
//! makes the plugin, installs a panic hook, logs one line and keeps the plugin for the hooks;
//! `version()` is the crate version with the operator's `version_tag`. [`crate::plugin!`]
//! wires it to the generated bindings; the logic is here, as plain Rust, tested on the host.

use std::sync::OnceLock;

use crate::Settings;

/// The setting every plugin accepts: `version()` returns `<crate version>+<tag>`.
pub const VERSION_TAG: &str = "version_tag";

/// A plugin: what it is made of, made once per instance by `init` from its settings. The
/// hooks reach it with [`Plugin::get`].
pub trait Plugin: Sized + Send + Sync + 'static {
    /// Its name: the start of the `init` log line and of its panic messages.
    const NAME: &'static str;
    /// The settings keys it reads. Any other key, or a key given twice, refuses `init`
    /// naming these. [`VERSION_TAG`] is accepted even when not listed (list it to place it in
    /// that message).
    const SETTINGS: &'static [&'static str];

    /// Makes the plugin from its checked settings; an error refuses `init` with this message
    /// for the operator.
    fn new(settings: &Settings<'_>) -> Result<Self, String>;

    /// What `init` logs at info after `NAME VERSION: ` (say, `transaction pooling`); nothing
    /// when empty.
    fn describe(&self) -> String {
        String::new()
    }

    /// The plugin `init` made, for the hooks. Panics (a trap, answered by the built-in
    /// policy) when a hook is called before `init`, which the host never does.
    fn get() -> &'static Self
    where
        Self: Registered,
    {
        Self::instance().get()
    }
}

/// Where [`crate::plugin!`] keeps a plugin's [`Instance`]: implemented by that macro.
pub trait Registered: Plugin {
    /// The instance's one [`Instance`] of this plugin.
    fn instance() -> &'static Instance<Self>;
}

/// A plugin made from its settings, with its `version()`.
#[derive(Debug)]
pub struct Configured<P> {
    pub plugin: P,
    /// `<crate version>` or `<crate version>+<version_tag>`.
    pub version: String,
}

/// What `init` does, without its side effects: checks `pairs` against `P::SETTINGS` (and
/// [`VERSION_TAG`]), then makes the plugin. `crate_version` is the plugin crate's version.
/// Plugins' unit tests call it to see exactly what `init` accepts and refuses.
pub fn configure<P: Plugin>(
    crate_version: &str,
    pairs: &[(String, String)],
) -> Result<Configured<P>, String> {
    let settings = if P::SETTINGS.contains(&VERSION_TAG) {
        Settings::new(pairs, P::SETTINGS)?
    } else {
        let known: Vec<&str> = P::SETTINGS.iter().copied().chain([VERSION_TAG]).collect();
        Settings::new(pairs, &known)?
    };
    let version = version(crate_version, settings.text(VERSION_TAG));
    Ok(Configured {
        plugin: P::new(&settings)?,
        version,
    })
}

/// The `version()` string: `base` (a crate version), then `+TAG` for a non-empty tag.
pub fn version(base: &str, tag: Option<&str>) -> String {
    match tag.filter(|t| !t.is_empty()) {
        Some(tag) => format!("{base}+{tag}"),
        None => base.to_string(),
    }
}

/// The `init` log line: `NAME VERSION`, then `: DESCRIPTION` when there is one.
pub fn init_line<P: Plugin>(configured: &Configured<P>) -> String {
    let description = configured.plugin.describe();
    if description.is_empty() {
        format!("{} {}", P::NAME, configured.version)
    } else {
        format!("{} {}: {description}", P::NAME, configured.version)
    }
}

/// One wasm instance's plugin, set by `init` (the host calls it once per instance, before
/// any hook). Reading it is one load: cheap enough for a hook on the data path.
pub struct Instance<P> {
    cell: OnceLock<Configured<P>>,
}

impl<P: Plugin> Instance<P> {
    #[allow(clippy::new_without_default)] // const, for a static
    pub const fn new() -> Instance<P> {
        Instance {
            cell: OnceLock::new(),
        }
    }

    /// `lifecycle.init`: installs a panic hook that writes `NAME: <panic>` to stderr (the host
    /// logs it and shows it in `SHOW PLUGINS`), makes the plugin from `pairs`, and `log`s one
    /// line (`NAME VERSION: description`).
    pub fn init(
        &self,
        crate_version: &str,
        pairs: &[(String, String)],
        log: impl FnOnce(&str),
    ) -> Result<(), String> {
        std::panic::set_hook(Box::new(|info| eprintln!("{}: {info}", P::NAME)));
        let configured = configure::<P>(crate_version, pairs)?;
        let line = init_line(&configured);
        self.cell
            .set(configured)
            .map_err(|_| format!("{}: init called twice on one instance", P::NAME))?;
        log(&line);
        Ok(())
    }

    /// `lifecycle.version`: the version `init` settled, or the crate version before it.
    pub fn version(&self, crate_version: &str) -> String {
        self.cell
            .get()
            .map_or_else(|| crate_version.to_string(), |c| c.version.clone())
    }

    /// The plugin `init` made.
    pub fn get(&self) -> &P {
        match self.cell.get() {
            Some(configured) => &configured.plugin,
            None => panic!("{}: a hook was called before lifecycle.init", P::NAME),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Probe {
        limit: u32,
    }

    impl Plugin for Probe {
        const NAME: &'static str = "probe";
        const SETTINGS: &'static [&'static str] = &["limit"];
        fn new(settings: &Settings<'_>) -> Result<Self, String> {
            Ok(Probe {
                limit: settings.number("limit", 3)?,
            })
        }
        fn describe(&self) -> String {
            format!("limit {}", self.limit)
        }
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn version_appends_a_tag() {
        assert_eq!(version("0.1.0", None), "0.1.0");
        assert_eq!(version("0.1.0", Some("")), "0.1.0");
        assert_eq!(version("0.1.0", Some("blue")), "0.1.0+blue");
    }

    #[test]
    fn version_tag_is_accepted_without_being_listed_and_named_in_errors() {
        let c = configure::<Probe>("1.2.3", &pairs(&[("version_tag", "blue"), ("limit", "7")])).unwrap();
        assert_eq!(c.plugin.limit, 7);
        assert_eq!(c.version, "1.2.3+blue");
        assert_eq!(init_line(&c), "probe 1.2.3+blue: limit 7");
        let err = configure::<Probe>("1.2.3", &pairs(&[("limt", "7")])).unwrap_err();
        assert_eq!(
            err,
            r#"unknown setting "limt" (known settings: limit, version_tag)"#
        );
        let err = configure::<Probe>("1.2.3", &pairs(&[("limit", "x")])).unwrap_err();
        assert_eq!(err, r#"setting "limit": "x" is not a whole number in range"#);
    }

    #[test]
    fn instance_is_set_once_and_reports_its_version() {
        let instance: Instance<Probe> = Instance::new();
        assert_eq!(instance.version("1.2.3"), "1.2.3");
        let mut logged = Vec::new();
        instance
            .init("1.2.3", &pairs(&[("version_tag", "v2")]), |l| {
                logged.push(l.to_string())
            })
            .unwrap();
        assert_eq!(logged, ["probe 1.2.3+v2: limit 3"]);
        assert_eq!(instance.version("1.2.3"), "1.2.3+v2");
        assert_eq!(instance.get().limit, 3);
        let err = instance.init("1.2.3", &[], |_| ()).unwrap_err();
        assert_eq!(err, "probe: init called twice on one instance");
        let _ = std::panic::take_hook();
    }
}
