//! The `[plugins.NAME.settings]` table as a plugin reads it: text pairs from
//! `lifecycle.init`, checked against the keys the plugin knows, with typed getters. Every
//! error is a message for the operator (the host shows it when `init` refuses).

/// A plugin's settings, checked against its known keys.
pub struct Settings<'a> {
    pairs: &'a [(String, String)],
}

impl<'a> Settings<'a> {
    /// Refuses unknown keys (naming the known ones) and keys given twice.
    pub fn new(pairs: &'a [(String, String)], known: &[&str]) -> Result<Settings<'a>, String> {
        let unknown: Vec<String> = pairs
            .iter()
            .filter(|(key, _)| !known.contains(&key.as_str()))
            .map(|(key, _)| format!("{key:?}"))
            .collect();
        if !unknown.is_empty() {
            return Err(format!(
                "unknown setting{} {} (known settings: {})",
                if unknown.len() == 1 { "" } else { "s" },
                unknown.join(", "),
                known.join(", ")
            ));
        }
        for (i, (key, _)) in pairs.iter().enumerate() {
            if pairs[..i].iter().any(|(k, _)| k == key) {
                return Err(format!("setting {key:?} given more than once"));
            }
        }
        Ok(Settings { pairs })
    }

    /// The text of `key`, if given.
    pub fn text(&self, key: &str) -> Option<&'a str> {
        self.pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// `key` as a number, `default` when not given.
    pub fn number<T: std::str::FromStr>(&self, key: &str, default: T) -> Result<T, String> {
        match self.text(key) {
            None => Ok(default),
            Some(text) => text
                .parse()
                .map_err(|_| format!("setting {key:?}: {text:?} is not a whole number in range")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn unknown_and_repeated_keys_are_refused() {
        let p = pairs(&[("hold_ms", "1"), ("hols_ms", "2")]);
        let err = Settings::new(&p, &["hold_ms", "drain_ms"]).err().unwrap();
        assert_eq!(
            err,
            r#"unknown setting "hols_ms" (known settings: hold_ms, drain_ms)"#
        );
        let p = pairs(&[("hold_ms", "1"), ("hold_ms", "2")]);
        let err = Settings::new(&p, &["hold_ms"]).err().unwrap();
        assert_eq!(err, r#"setting "hold_ms" given more than once"#);
    }

    #[test]
    fn numbers_have_defaults_and_errors() {
        let p = pairs(&[("a", "12"), ("b", "-1")]);
        let s = Settings::new(&p, &["a", "b", "c"]).unwrap();
        assert_eq!(s.number("a", 0u32), Ok(12));
        assert_eq!(s.number("c", 7u32), Ok(7));
        assert_eq!(
            s.number("b", 0u32),
            Err(r#"setting "b": "-1" is not a whole number in range"#.to_string())
        );
    }
}
