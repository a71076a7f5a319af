//! Just enough SQL reading to keep session state right in transaction pooling: finds the
//! statements whose effect outlives a transaction (SET, RESET, PREPARE, DEALLOCATE, DISCARD)
//! without parsing SQL. The lexer understands quotes, dollar quotes, quoted identifiers and
//! comments, so a `;` or keyword inside them is never taken for a statement boundary.

/// A statement the session layer acts on; everything else is `Other`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `SET [SESSION] name {TO|=} value`: `value` is the raw text to replay.
    Set {
        name: String,
        value: String,
    },
    /// `RESET name`
    Reset {
        name: String,
    },
    ResetAll,
    /// SQL-level `PREPARE name ...`.
    Prepare,
    /// `DEALLOCATE [PREPARE] name`
    Deallocate {
        name: String,
    },
    DeallocateAll,
    DiscardAll,
    Other,
}

/// Whether `sql` may create state that lives only on its server and that the proxy cannot
/// carry to another one: temporary tables, LISTEN, session advisory locks, SQL PREPARE,
/// WITH HOLD cursors. A keyword scan that errs towards yes (a column named `temperature`
/// counts): the answer only decides whether a session that lost its server is told so
/// or moved on silently.
pub fn may_create_server_state(sql: &[u8]) -> bool {
    const MARKERS: [&[u8]; 5] = [b"temp", b"listen", b"advisory", b"prepare", b"hold"];
    (0..sql.len()).any(|i| {
        MARKERS
            .iter()
            .any(|m| sql.get(i..i + m.len()).is_some_and(|s| s.eq_ignore_ascii_case(m)))
    })
}

/// Splits `sql` into top-level statements (ignoring empty ones) and classifies each.
pub fn commands(sql: &[u8]) -> Vec<Command> {
    split_statements(sql).into_iter().map(classify).collect()
}

/// Byte ranges of statements, split at top-level semicolons.
fn split_statements(sql: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < sql.len() {
        match sql[i] {
            b'\'' | b'"' => i = skip_quoted(sql, i),
            b'-' if sql.get(i + 1) == Some(&b'-') => {
                i = sql[i..]
                    .iter()
                    .position(|&c| c == b'\n')
                    .map_or(sql.len(), |p| i + p + 1)
            }
            b'/' if sql.get(i + 1) == Some(&b'*') => i = skip_block_comment(sql, i),
            b'$' => i = skip_dollar_quote(sql, i),
            b';' => {
                push_nonempty(&mut out, &sql[start..i]);
                i += 1;
                start = i;
            }
            _ => i += 1,
        }
    }
    push_nonempty(&mut out, &sql[start..]);
    out
}

fn push_nonempty<'a>(out: &mut Vec<&'a [u8]>, stmt: &'a [u8]) {
    if !tokens(stmt).is_empty() {
        out.push(stmt);
    }
}

/// Index after a quoted string starting at `i` ('' and "" are escapes, E'..' backslashes).
fn skip_quoted(sql: &[u8], i: usize) -> usize {
    let quote = sql[i];
    let escapes = quote == b'\'' && i > 0 && matches!(sql[i - 1], b'e' | b'E');
    let mut j = i + 1;
    while j < sql.len() {
        if escapes && sql[j] == b'\\' {
            j += 2;
            continue;
        }
        if sql[j] == quote {
            if sql.get(j + 1) == Some(&quote) {
                j += 2;
                continue;
            }
            return j + 1;
        }
        j += 1;
    }
    sql.len()
}

fn skip_block_comment(sql: &[u8], i: usize) -> usize {
    let mut depth = 0;
    let mut j = i;
    while j + 1 < sql.len() {
        if sql[j] == b'/' && sql[j + 1] == b'*' {
            depth += 1;
            j += 2;
        } else if sql[j] == b'*' && sql[j + 1] == b'/' {
            depth -= 1;
            j += 2;
            if depth == 0 {
                return j;
            }
        } else {
            j += 1;
        }
    }
    sql.len()
}

/// `$tag$ ... $tag$`; a `$` that does not open a dollar quote (e.g. `$1`) is skipped alone.
fn skip_dollar_quote(sql: &[u8], i: usize) -> usize {
    let tag_end = sql[i + 1..]
        .iter()
        .position(|&c| !(c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80))
        .map(|p| i + 1 + p);
    let Some(tag_end) = tag_end else { return sql.len() };
    if sql[tag_end] != b'$' || sql.get(i + 1).is_some_and(|c| c.is_ascii_digit()) {
        return i + 1;
    }
    let tag = &sql[i..=tag_end];
    let body = tag_end + 1;
    sql[body..]
        .windows(tag.len())
        .position(|w| w == tag)
        .map_or(sql.len(), |p| body + p + tag.len())
}

/// Words, quoted strings and punctuation of one statement, comments removed.
fn tokens(stmt: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < stmt.len() {
        let c = stmt[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c == b'-' && stmt.get(i + 1) == Some(&b'-') {
            i = stmt[i..]
                .iter()
                .position(|&c| c == b'\n')
                .map_or(stmt.len(), |p| i + p + 1);
        } else if c == b'/' && stmt.get(i + 1) == Some(&b'*') {
            i = skip_block_comment(stmt, i);
        } else if c == b'\'' || c == b'"' {
            let end = skip_quoted(stmt, i);
            out.push(&stmt[i..end]);
            i = end;
        } else if c == b'$' {
            let end = skip_dollar_quote(stmt, i).max(i + 1);
            out.push(&stmt[i..end]);
            i = end;
        } else if c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80 {
            let end = stmt[i..]
                .iter()
                .position(|&c| !(c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c >= 0x80))
                .map_or(stmt.len(), |p| i + p);
            out.push(&stmt[i..end]);
            i = end;
        } else {
            out.push(&stmt[i..i + 1]);
            i += 1;
        }
    }
    out
}

fn is(tok: Option<&&[u8]>, word: &str) -> bool {
    tok.is_some_and(|t| t.eq_ignore_ascii_case(word.as_bytes()))
}

/// A name as Postgres folds it: unquoted identifiers lower-cased, quoted ones verbatim.
fn ident(tok: &[u8]) -> String {
    if tok.len() >= 2 && tok[0] == b'"' {
        String::from_utf8_lossy(&tok[1..tok.len() - 1]).replace("\"\"", "\"")
    } else {
        String::from_utf8_lossy(tok).to_ascii_lowercase()
    }
}

fn classify(stmt: &[u8]) -> Command {
    let t = tokens(stmt);
    let first = t.first();
    if is(first, "set") {
        let mut k = 1;
        if is(t.get(1), "local") || is(t.get(1), "transaction") || is(t.get(1), "constraints") {
            return Command::Other;
        }
        if is(t.get(1), "session") {
            if is(t.get(2), "characteristics") || is(t.get(2), "authorization") {
                return Command::Other;
            }
            k = 2;
        }
        let Some(name) = t.get(k) else {
            return Command::Other;
        };
        // SET TIME ZONE value
        let (name, value_at) = if is(Some(name), "time") && is(t.get(k + 1), "zone") {
            ("timezone".to_string(), k + 2)
        } else if is(t.get(k + 1), "to") || t.get(k + 1).is_some_and(|x| *x == b"=") {
            (ident(name), k + 2)
        } else {
            return Command::Other;
        };
        let Some(value_start) = t.get(value_at) else {
            return Command::Other;
        };
        let offset = value_start.as_ptr() as usize - stmt.as_ptr() as usize;
        let value = String::from_utf8_lossy(&stmt[offset..]).trim().to_string();
        return Command::Set { name, value };
    }
    if is(first, "reset") {
        return match t.get(1) {
            Some(x) if x.eq_ignore_ascii_case(b"all") => Command::ResetAll,
            Some(x) if x.eq_ignore_ascii_case(b"session") => Command::Other,
            Some(x) => Command::Reset { name: ident(x) },
            None => Command::Other,
        };
    }
    if is(first, "prepare") && !is(t.get(1), "transaction") {
        return Command::Prepare;
    }
    if is(first, "deallocate") {
        let k = if is(t.get(1), "prepare") { 2 } else { 1 };
        return match t.get(k) {
            Some(x) if x.eq_ignore_ascii_case(b"all") => Command::DeallocateAll,
            Some(x) => Command::Deallocate { name: ident(x) },
            None => Command::Other,
        };
    }
    if is(first, "discard") && is(t.get(1), "all") {
        return Command::DiscardAll;
    }
    Command::Other
}

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

    fn one(sql: &str) -> Command {
        let c = commands(sql.as_bytes());
        assert_eq!(c.len(), 1, "{sql:?} gave {c:?}");
        c.into_iter().next().unwrap()
    }

    #[test]
    fn set_forms() {
        assert_eq!(
            one("SET search_path TO a, public"),
            Command::Set {
                name: "search_path".into(),
                value: "a, public".into()
            }
        );
        assert_eq!(
            one("set SESSION Work_Mem = '64MB' "),
            Command::Set {
                name: "work_mem".into(),
                value: "'64MB'".into()
            }
        );
        assert_eq!(
            one("SET TIME ZONE 'UTC'"),
            Command::Set {
                name: "timezone".into(),
                value: "'UTC'".into()
            }
        );
        assert_eq!(one("SET LOCAL work_mem = 1"), Command::Other);
        assert_eq!(
            one("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE"),
            Command::Other
        );
        assert_eq!(one("RESET ALL"), Command::ResetAll);
        assert_eq!(one("reset \"Foo\""), Command::Reset { name: "Foo".into() });
    }

    #[test]
    fn prepared_statement_commands() {
        assert_eq!(
            one("DEALLOCATE _pg3_1"),
            Command::Deallocate {
                name: "_pg3_1".into()
            }
        );
        assert_eq!(
            one("DEALLOCATE PREPARE \"S_1\""),
            Command::Deallocate { name: "S_1".into() }
        );
        assert_eq!(one("deallocate all"), Command::DeallocateAll);
        assert_eq!(one("DISCARD ALL"), Command::DiscardAll);
        assert_eq!(one("PREPARE p AS SELECT 1"), Command::Prepare);
        assert_eq!(one("PREPARE TRANSACTION 'x'"), Command::Other);
    }

    #[test]
    fn boundaries_ignore_quotes_and_comments() {
        assert_eq!(commands(b"SELECT ';SET a=1'; SET b = 2").len(), 2);
        assert_eq!(commands(b"SELECT $$;$$; SELECT $x$ ; $x$").len(), 2);
        assert_eq!(commands(b"/* ; */ SELECT 1 -- ;\n").len(), 1);
        assert_eq!(commands(b"SELECT \"a;b\"").len(), 1);
        assert_eq!(commands(b";;  ;").len(), 0);
        assert_eq!(commands(b"SELECT $1; SELECT 2").len(), 2);
        assert_eq!(
            commands(b"SELECT E'\\';' ; SET x = 1")[1],
            Command::Set {
                name: "x".into(),
                value: "1".into()
            }
        );
    }

    #[test]
    fn server_state_markers() {
        use super::may_create_server_state as m;
        assert!(m(b"CREATE TEMP TABLE t (a int)"));
        assert!(m(b"create temporary table t (a int)"));
        assert!(m(b"LISTEN jobs"));
        assert!(m(b"SELECT pg_advisory_lock(1)"));
        assert!(m(b"DECLARE c CURSOR WITH HOLD FOR SELECT 1"));
        assert!(m(b"PREPARE p AS SELECT 1"));
        assert!(!m(b"SELECT abalance FROM pgbench_accounts WHERE aid = 1"));
        assert!(!m(b"INSERT INTO t VALUES (1)"));
        assert!(!m(b"tem"));
    }

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
        for s in [
            &b"'"[..],
            b"$",
            b"$a",
            b"/*",
            b"--",
            b"SET",
            b"SET x",
            b"\xff\xfe;",
            b"DEALLOCATE",
            b"E'\\",
        ] {
            let _ = commands(s);
            let _ = commits_before_end(s);
        }
    }
}
