//! What a retry could duplicate: the statements that may commit part of their work before
//! they end, so a request holding one is never run again after its server failed it.

use super::lex::{is, split_statements, tokens};

/// What a statement in `sql` is called if it may commit before it ends, so that a server
/// that ends it early may have left part of its work committed: a request holding one is
/// never run again (see `session/retry.rs`). These are procedures and DO blocks (which may
/// `COMMIT` inside), commands that run a transaction per table or index or that act outside
/// transactions (VACUUM, ANALYZE, CLUSTER, REINDEX, `CREATE`/`DROP INDEX CONCURRENTLY`,
/// databases, tablespaces, subscriptions, `ALTER SYSTEM`), and `COPY ... PROGRAM`, which
/// runs a program. Read by first keywords only, every statement of a multi-statement text;
/// run only when a request failed, never on the relay's path.
pub fn commits_before_end(sql: &[u8]) -> Option<&'static str> {
    /// Statements known by their first keyword.
    const FIRST: [(&str, &str); 7] = [
        ("call", "CALL"),
        ("do", "DO"),
        ("vacuum", "VACUUM"),
        ("analyze", "ANALYZE"),
        ("analyse", "ANALYZE"),
        ("cluster", "CLUSTER"),
        ("reindex", "REINDEX"),
    ];
    /// `CREATE`/`DROP`/`ALTER` of these objects.
    const OBJECTS: [(&str, &str, &str); 4] = [
        ("database", "CREATE DATABASE", "DROP DATABASE"),
        ("tablespace", "CREATE TABLESPACE", "DROP TABLESPACE"),
        ("subscription", "CREATE SUBSCRIPTION", "DROP SUBSCRIPTION"),
        ("index", "CREATE INDEX CONCURRENTLY", "DROP INDEX CONCURRENTLY"),
    ];
    split_statements(sql).into_iter().find_map(|stmt| {
        let t = tokens(stmt);
        let word = |i: usize| t.get(i);
        let has = |w: &str| t.iter().any(|x| x.eq_ignore_ascii_case(w.as_bytes()));
        if let Some((_, kind)) = FIRST.iter().find(|(k, _)| is(word(0), k)) {
            return Some(*kind);
        }
        if is(word(0), "copy") && has("program") {
            return Some("COPY ... PROGRAM");
        }
        if is(word(0), "alter") {
            return if is(word(1), "system") {
                Some("ALTER SYSTEM")
            } else if is(word(1), "subscription") {
                Some("ALTER SUBSCRIPTION")
            } else if is(word(1), "database") && has("tablespace") {
                Some("ALTER DATABASE ... SET TABLESPACE")
            } else {
                None
            };
        }
        let create = is(word(0), "create");
        if !create && !is(word(0), "drop") {
            return None;
        }
        // CREATE [UNIQUE] INDEX CONCURRENTLY; an index otherwise is built in one transaction.
        let object = if create && is(word(1), "unique") { 2 } else { 1 };
        let &(name, created, dropped) = OBJECTS.iter().find(|(o, _, _)| is(word(object), o))?;
        if name == "index" && !is(word(object + 1), "concurrently") {
            return None;
        }
        Some(if create { created } else { dropped })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_that_may_commit_before_they_end() {
        let c = |s: &str| commits_before_end(s.as_bytes());
        assert_eq!(c("CALL p()"), Some("CALL"));
        assert_eq!(c("  /* x */ call p()"), Some("CALL"));
        assert_eq!(c("DO $$BEGIN COMMIT; END$$"), Some("DO"));
        assert_eq!(c("SELECT 1; do 'begin null; end'"), Some("DO"));
        assert_eq!(c("vacuum (analyze) t"), Some("VACUUM"));
        assert_eq!(c("ANALYSE"), Some("ANALYZE"));
        assert_eq!(c("CLUSTER"), Some("CLUSTER"));
        assert_eq!(c("REINDEX TABLE CONCURRENTLY t"), Some("REINDEX"));
        assert_eq!(
            c("CREATE UNIQUE INDEX CONCURRENTLY i ON t (a)"),
            Some("CREATE INDEX CONCURRENTLY")
        );
        assert_eq!(c("drop index concurrently i"), Some("DROP INDEX CONCURRENTLY"));
        assert_eq!(c("CREATE DATABASE x"), Some("CREATE DATABASE"));
        assert_eq!(c("DROP DATABASE x"), Some("DROP DATABASE"));
        assert_eq!(c("ALTER SYSTEM SET work_mem = '1MB'"), Some("ALTER SYSTEM"));
        assert_eq!(c("COPY t TO PROGRAM 'cat'"), Some("COPY ... PROGRAM"));
        assert_eq!(c("CREATE TABLESPACE s LOCATION '/x'"), Some("CREATE TABLESPACE"));
        assert_eq!(c("DROP SUBSCRIPTION s"), Some("DROP SUBSCRIPTION"));
        for plain in [
            "SELECT pg_sleep(1)",
            "INSERT INTO calls SELECT 1",
            "CREATE INDEX i ON t (a)",
            "DROP INDEX i",
            "CREATE TABLE do_it (a int)",
            "SELECT 'CALL p()'",
            "-- CALL p()\nSELECT 1",
            "ALTER TABLE t ADD COLUMN b int",
            "COPY t FROM STDIN",
            "",
        ] {
            assert_eq!(c(plain), None, "{plain:?}");
        }
    }

    #[test]
    fn garbage_does_not_panic() {
        for s in [&b"'"[..], b"$", b"$a", b"/*", b"--", b"\xff\xfe;", b"E'\\"] {
            let _ = commits_before_end(s);
        }
    }
}
