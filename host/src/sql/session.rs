//! What outlives a transaction: the statements whose effect stays with the session after
//! its transaction ends, read so that transaction pooling keeps session state right. Settings
//! (SET/RESET, names and values parsed and re-quoted), SQL-level PREPARE/DEALLOCATE/DISCARD,
//! and the state that lives only on the server that made it (`server_state`).

use super::lex::{adjacent, ident, is, split_statements, tokens, unqualified};

/// A statement the session layer acts on; everything else is `Other`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `SET [SESSION] name {TO|=} value`: `value` is the canonical SQL the proxy replays,
    /// built from the parsed items (comments dropped, every string re-quoted), never the
    /// client's text.
    Set {
        name: String,
        value: String,
    },
    /// `RESET name`, or `SET name TO DEFAULT`.
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
    /// `SET LOCAL name ...`: gone when its transaction ends, but the server may report it.
    Local {
        name: String,
    },
    /// A session-level change the proxy does not carry to another server (`SET ROLE`,
    /// `SET SESSION AUTHORIZATION`, a value it cannot parse): the session keeps its server.
    Untracked(&'static str),
    Other,
}

/// Cheap filter for [`server_state`], run on every statement text: true if one of the
/// words that begin server-side session state appears anywhere, in any case.
///
/// The markers begin with different pairs of letters. Eight positions are tested at once
/// (SWAR: a word of eight bytes against the same word shifted by one, each byte `| 0x20`
/// so that upper case matches), and only a position whose pair matches is compared with
/// its marker: about a third of the instructions of a byte-at-a-time scan, which every
/// Query paid.
fn may_create_server_state(sql: &[u8]) -> bool {
    const MARKERS: [&[u8]; 5] = [b"temp", b"listen", b"advisory", b"hold", b"set_config"];
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    const CASE: u64 = 0x2020_2020_2020_2020;
    // A flag (0x80) in each byte that is zero, possibly also in a byte above a zero one
    // (the borrow): a false candidate, never a missed one.
    let zeros = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    let is_marker_at = |i: usize| {
        MARKERS
            .iter()
            .any(|m| sql[i..].get(..m.len()).is_some_and(|s| s.eq_ignore_ascii_case(m)))
    };
    let word = |i: usize| u64::from_le_bytes(sql[i..i + 8].try_into().expect("eight bytes")) | CASE;
    let mut i = 0;
    while i + 9 <= sql.len() {
        let (first, second) = (word(i), word(i + 1));
        let mut hits = 0;
        for m in MARKERS {
            hits |= zeros((first ^ (ONES * u64::from(m[0]))) | (second ^ (ONES * u64::from(m[1]))));
        }
        while hits != 0 {
            if is_marker_at(i + hits.trailing_zeros() as usize / 8) {
                return true;
            }
            hits &= hits - 1;
        }
        i += 8;
    }
    (i..sql.len()).any(is_marker_at)
}

/// The first kind of state `sql` creates that lives only on its server and that the proxy
/// cannot carry to another: a temporary table (not `ON COMMIT DROP`), `LISTEN`, a session
/// advisory lock, a `WITH HOLD` cursor, `set_config(..., false)`. Read from the statements'
/// tokens, so a column named `temperature` or a string `'listen'` does not count; what
/// happens inside functions cannot be seen (docs/configuration.md says so).
pub fn server_state(sql: &[u8]) -> Option<&'static str> {
    if !may_create_server_state(sql) {
        return None;
    }
    split_statements(sql)
        .into_iter()
        .find_map(|stmt| statement_state(&tokens(stmt)))
}

fn statement_state(t: &[&[u8]]) -> Option<&'static str> {
    let word = |i: usize, w: &str| is(t.get(i), w);
    let temp_at = |i: usize| word(i, "temp") || word(i, "temporary");
    let on_commit_drop = t.windows(3).any(|w| {
        w[0].eq_ignore_ascii_case(b"on")
            && w[1].eq_ignore_ascii_case(b"commit")
            && w[2].eq_ignore_ascii_case(b"drop")
    });
    if word(0, "listen") {
        return Some("LISTEN");
    }
    if word(0, "declare")
        && t.windows(2)
            .any(|w| w[0].eq_ignore_ascii_case(b"with") && w[1].eq_ignore_ascii_case(b"hold"))
    {
        return Some("a WITH HOLD cursor");
    }
    for (i, tok) in t.iter().enumerate() {
        let name = unqualified(tok);
        // CREATE [OR REPLACE] [GLOBAL|LOCAL] TEMP ..., SELECT ... INTO [GLOBAL|LOCAL] TEMP ...
        if (tok.eq_ignore_ascii_case(b"create") || tok.eq_ignore_ascii_case(b"into")) && !on_commit_drop {
            let mut j = i + 1;
            if word(j, "or") && word(j + 1, "replace") {
                j += 2;
            }
            if word(j, "global") || word(j, "local") {
                j += 1;
            }
            if temp_at(j) {
                return Some("a temporary table");
            }
        }
        if !on_commit_drop && tok.len() > 8 && tok[..8].eq_ignore_ascii_case(b"pg_temp.") {
            return Some("a temporary table");
        }
        if t.get(i + 1).is_some_and(|p| *p == b"(") {
            if [
                &b"pg_advisory_lock"[..],
                b"pg_advisory_lock_shared",
                b"pg_try_advisory_lock",
                b"pg_try_advisory_lock_shared",
            ]
            .iter()
            .any(|f| name.eq_ignore_ascii_case(f))
            {
                return Some("a session advisory lock");
            }
            if name.eq_ignore_ascii_case(b"set_config") && !third_argument_is_true(&t[i + 2..]) {
                return Some("set_config(..., false)");
            }
        }
    }
    None
}

/// Whether the argument list starting after `(` has a literal true as its third argument
/// (`set_config(name, value, true)` only changes the current transaction).
fn third_argument_is_true(args: &[&[u8]]) -> bool {
    let mut depth = 0;
    let mut commas = 0;
    let mut third: Vec<&[u8]> = Vec::new();
    for tok in args {
        match *tok {
            b"(" => depth += 1,
            b")" if depth == 0 => break,
            b")" => depth -= 1,
            b"," if depth == 0 => {
                commas += 1;
                continue;
            }
            _ => {}
        }
        if commas == 2 {
            third.push(tok);
        }
    }
    matches!(third.as_slice(), [one] if one.eq_ignore_ascii_case(b"true") || one.eq_ignore_ascii_case(b"'t'") || one.eq_ignore_ascii_case(b"'true'"))
}

/// Splits `sql` into top-level statements (ignoring empty ones) and classifies each.
pub fn commands(sql: &[u8]) -> Vec<Command> {
    split_statements(sql).into_iter().map(command).collect()
}

fn command(stmt: &[u8]) -> Command {
    let t = tokens(stmt);
    let first = t.first();
    if is(first, "set") {
        return classify_set(&t);
    }
    if is(first, "reset") {
        return match t.get(1) {
            Some(x) if x.eq_ignore_ascii_case(b"all") => Command::ResetAll,
            // Undoing SET ROLE / SET SESSION AUTHORIZATION, which pinned the server already.
            Some(x) if x.eq_ignore_ascii_case(b"session") || x.eq_ignore_ascii_case(b"role") => {
                Command::Other
            }
            Some(x) if x.eq_ignore_ascii_case(b"time") && is(t.get(2), "zone") => Command::Reset {
                name: "timezone".into(),
            },
            Some(_) => match setting_name(&t[1..]) {
                Some((name, _)) if t.len() == 2 => Command::Reset { name },
                _ => Command::Untracked("a RESET the proxy cannot read"),
            },
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

/// `SET [SESSION] ...`; `SET LOCAL`, `SET TRANSACTION` and `SET CONSTRAINTS` end with
/// their transaction and are `Other`.
fn classify_set(t: &[&[u8]]) -> Command {
    let mut k = 1;
    if is(t.get(1), "local") {
        // Ends with its transaction; the server may still report the change meanwhile.
        let name = if is(t.get(2), "time") && is(t.get(3), "zone") {
            Some("timezone".to_string())
        } else {
            setting_name(&t[2..]).map(|(name, _)| name)
        };
        return name.map_or(Command::Other, |name| Command::Local { name });
    }
    if is(t.get(1), "transaction") || is(t.get(1), "constraints") {
        return Command::Other;
    }
    if is(t.get(1), "session") {
        if is(t.get(2), "characteristics") {
            return Command::Untracked("SET SESSION CHARACTERISTICS");
        }
        k = 2;
    }
    if is(t.get(k), "role") {
        return Command::Untracked("SET ROLE");
    }
    if is(t.get(k), "session") && is(t.get(k + 1), "authorization") || is(t.get(k), "authorization") {
        return Command::Untracked("SET SESSION AUTHORIZATION");
    }
    // The special forms, which name a setting without TO or =.
    let (name, value_at) = if is(t.get(k), "time") && is(t.get(k + 1), "zone") {
        if is(t.get(k + 2), "local") || is(t.get(k + 2), "default") && t.len() == k + 3 {
            return Command::Reset {
                name: "timezone".into(),
            };
        }
        if is(t.get(k + 2), "interval") {
            return Command::Untracked("SET TIME ZONE INTERVAL");
        }
        ("timezone".to_string(), k + 2)
    } else if is(t.get(k), "schema") && !is(t.get(k + 1), "to") && t.get(k + 1) != Some(&&b"="[..]) {
        ("search_path".to_string(), k + 1)
    } else if is(t.get(k), "names") && !is(t.get(k + 1), "to") && t.get(k + 1) != Some(&&b"="[..]) {
        ("client_encoding".to_string(), k + 1)
    } else if is(t.get(k), "xml") && is(t.get(k + 1), "option") {
        ("xmloption".to_string(), k + 2)
    } else if is(t.get(k), "seed") && !is(t.get(k + 1), "to") && t.get(k + 1) != Some(&&b"="[..]) {
        return Command::Other; // setseed(): affects random() only
    } else {
        let Some((name, used)) = setting_name(&t[k..]) else {
            return Command::Untracked("a SET the proxy cannot read");
        };
        let at = k + used;
        if !(is(t.get(at), "to") || t.get(at).is_some_and(|x| *x == b"=")) {
            return Command::Untracked("a SET the proxy cannot read");
        }
        (name, at + 1)
    };
    let items = &t[value_at..];
    if let [only] = items {
        if only.eq_ignore_ascii_case(b"default") {
            return Command::Reset { name };
        }
    }
    match set_value(items) {
        Some(value) => Command::Set { name, value },
        None => Command::Untracked("a SET value the proxy cannot read"),
    }
}

/// A setting's name at the front of `t` (`name` or `ext.name`, each part an identifier),
/// folded as Postgres folds it, and the tokens it used.
fn setting_name(t: &[&[u8]]) -> Option<(String, usize)> {
    let first = t.first()?;
    let name = if first.first() == Some(&b'"') {
        ident(first)
    } else {
        // Unquoted words keep their dots (`ext.name` is one token).
        if !first
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c >= 0x80)
            || first[0].is_ascii_digit()
        {
            return None;
        }
        ident(first)
    };
    (!name.is_empty()).then_some((name, 1))
}

/// The value items of a SET, re-quoted as the proxy replays them: each string (a literal,
/// an `E''` string, a dollar quote, or an identifier, which Postgres folds and treats as a
/// string here) becomes a fresh literal, each number stays a number. `None` for anything
/// else (an operator, `U&''`, a bit string, a backslash in a plain literal, a missing comma).
fn set_value(items: &[&[u8]]) -> Option<String> {
    let mut out = String::new();
    let mut rest = items;
    loop {
        let (item, used) = value_item(rest)?;
        if !out.is_empty() {
            out.push_str(", ");
        }
        out.push_str(&item);
        rest = &rest[used..];
        match rest {
            [] => return Some(out),
            [comma, more @ ..] if *comma == b"," && !more.is_empty() => rest = more,
            _ => return None,
        }
    }
}

/// One value item at the front of `t`: its replay SQL and how many tokens it used.
fn value_item(t: &[&[u8]]) -> Option<(String, usize)> {
    let tok = *t.first()?;
    match tok[0] {
        b'\'' => Some((quote_literal(&standard_string(tok)?), 1)),
        b'$' => {
            let tag_len = tok[1..].iter().position(|&c| c == b'$')? + 2;
            let body = tok.get(tag_len..tok.len().checked_sub(tag_len)?)?;
            Some((quote_literal(std::str::from_utf8(body).ok()?), 1))
        }
        b'"' => Some((quote_literal(&ident(tok)), 1)),
        b'-' | b'+' => {
            let num = t.get(1).filter(|n| is_number(n) && adjacent(tok, n))?;
            let sign = if tok[0] == b'-' { "-" } else { "" };
            Some((format!("{sign}{}", std::str::from_utf8(num).ok()?), 2))
        }
        c if c.is_ascii_digit() || c == b'.' => {
            is_number(tok).then(|| (String::from_utf8_lossy(tok).into_owned(), 1))
        }
        c if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 => {
            let quoted = t.get(1).filter(|n| n.first() == Some(&b'\'') && adjacent(tok, n));
            match quoted {
                // A word right before a quote is a string prefix.
                Some(q) if tok.eq_ignore_ascii_case(b"e") => Some((quote_literal(&escape_string(q)?), 2)),
                Some(q) if tok.eq_ignore_ascii_case(b"n") => Some((quote_literal(&standard_string(q)?), 2)),
                Some(_) => None,
                None => Some((quote_literal(&ident(tok)), 1)),
            }
        }
        _ => None,
    }
}

fn is_number(tok: &[u8]) -> bool {
    tok.iter().any(u8::is_ascii_digit)
        && tok.iter().all(|&c| c.is_ascii_digit() || c == b'.')
        && tok.iter().filter(|&&c| c == b'.').count() <= 1
}

/// The text of a standard `'...'` literal; `None` if it holds a backslash, whose meaning
/// depends on the session's `standard_conforming_strings`.
fn standard_string(tok: &[u8]) -> Option<String> {
    let body = tok.get(1..tok.len().checked_sub(1)?)?;
    if tok.last() != Some(&b'\'') || body.contains(&b'\\') {
        return None;
    }
    Some(String::from_utf8(body.to_vec()).ok()?.replace("''", "'"))
}

/// The text of an `E'...'` literal body; `None` for escapes other than the common ones.
fn escape_string(tok: &[u8]) -> Option<String> {
    let body = tok.get(1..tok.len().checked_sub(1)?)?;
    if tok.last() != Some(&b'\'') {
        return None;
    }
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            b'\\' => {
                out.push(match body.get(i + 1)? {
                    b'\\' => b'\\',
                    b'\'' => b'\'',
                    b'"' => b'"',
                    b'n' => b'\n',
                    b't' => b'\t',
                    b'r' => b'\r',
                    b'b' => 8,
                    b'f' => 12,
                    _ => return None,
                });
                i += 2;
            }
            b'\'' => {
                out.push(b'\'');
                i += 2; // '' inside the literal
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// A SQL string literal for `v` that means `v` whatever `standard_conforming_strings` is:
/// an `E''` literal when it holds a backslash.
pub fn quote_literal(v: &str) -> String {
    if v.contains('\\') {
        format!("E'{}'", v.replace('\\', "\\\\").replace('\'', "''"))
    } else {
        format!("'{}'", v.replace('\'', "''"))
    }
}

/// A setting name as the proxy writes it: each dotted part an identifier, quoted unless
/// it is plain lower case.
pub fn quote_setting_name(name: &str) -> String {
    name.split('.')
        .map(|part| {
            let plain = !part.is_empty()
                && !part.as_bytes()[0].is_ascii_digit()
                && part
                    .bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_');
            if plain {
                part.to_string()
            } else {
                format!("\"{}\"", part.replace('"', "\"\""))
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(sql: &str) -> Command {
        let c = commands(sql.as_bytes());
        assert_eq!(c.len(), 1, "{sql:?} gave {c:?}");
        c.into_iter().next().unwrap()
    }

    fn set(name: &str, value: &str) -> Command {
        Command::Set {
            name: name.into(),
            value: value.into(),
        }
    }

    #[test]
    fn set_forms() {
        assert_eq!(
            one("SET search_path TO a, public"),
            set("search_path", "'a', 'public'")
        );
        assert_eq!(one("set SESSION Work_Mem = '64MB' "), set("work_mem", "'64MB'"));
        assert_eq!(one("SET TIME ZONE 'UTC'"), set("timezone", "'UTC'"));
        assert_eq!(
            one("SET TIME ZONE LOCAL"),
            Command::Reset {
                name: "timezone".into()
            }
        );
        assert_eq!(
            one("SET extra_float_digits = -3"),
            set("extra_float_digits", "-3")
        );
        assert_eq!(one("SET x.y TO 1.5"), set("x.y", "1.5"));
        assert_eq!(one("SET SCHEMA 'app'"), set("search_path", "'app'"));
        assert_eq!(one("SET NAMES 'UTF8'"), set("client_encoding", "'UTF8'"));
        assert_eq!(
            one("SET search_path = DEFAULT"),
            Command::Reset {
                name: "search_path".into()
            }
        );
        assert_eq!(
            one("SET LOCAL work_mem = 1"),
            Command::Local {
                name: "work_mem".into()
            }
        );
        assert_eq!(
            one("SET LOCAL TIME ZONE 'UTC'"),
            Command::Local {
                name: "timezone".into()
            }
        );
        assert_eq!(
            one("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE"),
            Command::Other
        );
        assert_eq!(one("RESET ALL"), Command::ResetAll);
        assert_eq!(one("reset \"Foo\""), Command::Reset { name: "Foo".into() });
        assert_eq!(
            one("RESET TIME ZONE"),
            Command::Reset {
                name: "timezone".into()
            }
        );
    }

    /// Values are rebuilt from their parsed items: comments, spacing and the client's
    /// quoting never reach the replay.
    #[test]
    fn set_values_are_requoted() {
        assert_eq!(
            one("SET application_name TO 'x' -- note"),
            set("application_name", "'x'")
        );
        assert_eq!(
            one("SET application_name /* a */ = /* b */ 'it''s' /* c */"),
            set("application_name", "'it''s'")
        );
        assert_eq!(one("SET a.b = $$x'y$$"), set("a.b", "'x''y'"));
        assert_eq!(one("SET a.b = $q$x$$y$q$"), set("a.b", "'x$$y'"));
        assert_eq!(one(r"SET a.b = E'x\'y\\z'"), set("a.b", r"E'x''y\\z'"));
        assert_eq!(
            one("SET search_path = \"$user\", Public"),
            set("search_path", "'$user', 'public'")
        );
        assert_eq!(one("SET a.b = on"), set("a.b", "'on'"));
        assert_eq!(
            commands(b"SET application_name TO 'x' -- note;RESET search_path;").len(),
            1
        );
    }

    #[test]
    fn what_cannot_be_carried_is_untracked() {
        for sql in [
            "SET ROLE other",
            "SET SESSION AUTHORIZATION other",
            "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
            "SET TIME ZONE INTERVAL '+02:00' HOUR TO MINUTE",
            r"SET a.b = 'x\y'",
            "SET a.b = U&'d\\0061t'",
            "SET a.b = 1 + 1",
            "SET a.b = 'x' 'y'",
            "SET a.b",
        ] {
            assert!(matches!(one(sql), Command::Untracked(_)), "{sql}");
        }
        assert_eq!(one("RESET ROLE"), Command::Other);
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

    /// The filter says yes exactly when a marker word appears anywhere, in any case.
    #[test]
    fn filter_finds_every_marker() {
        let markers = ["temp", "listen", "advisory", "hold", "set_config"];
        let anywhere = |sql: &str| {
            let lower = sql.to_ascii_lowercase();
            markers.iter().any(|m| lower.contains(m))
        };
        for sql in [
            "SELECT abalance FROM pgbench_accounts WHERE aid = 1",
            "create TEMP table t (a int)",
            "SELECT 1 INTO tEmPoRaRy t",
            "LISTEN x",
            "select pg_advisory_lock(1)",
            "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
            "SELECT SET_CONFIG('a', 'b', false)",
            "SELECT set_confi",
            "SELECT hol",
            "st tem",
            "",
        ] {
            assert_eq!(may_create_server_state(sql.as_bytes()), anywhere(sql), "{sql:?}");
        }
    }

    proptest::proptest! {
        /// The eight-at-a-time filter agrees with a plain search for the markers, in any
        /// case, at any position and alignment, next to any bytes (UTF-8 and bytes whose
        /// `| 0x20` is a letter included).
        #[test]
        fn filter_agrees_with_a_plain_search(
            before in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
            after in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
            marker in proptest::sample::select(vec!["temp", "listen", "advisory", "hold", "set_config", "", "te", "hol", "set_confi"]),
            upper in proptest::collection::vec(proptest::prelude::any::<bool>(), 10),
        ) {
            let marker: Vec<u8> = marker.bytes().zip(&upper).map(|(b, u)| if *u { b.to_ascii_uppercase() } else { b }).collect();
            let sql = [before, marker, after].concat();
            let lower = sql.to_ascii_lowercase();
            let plain = ["temp", "listen", "advisory", "hold", "set_config"]
                .iter()
                .any(|m| lower.windows(m.len()).any(|w| w == m.as_bytes()));
            proptest::prop_assert_eq!(may_create_server_state(&sql), plain);
        }
    }

    #[test]
    fn server_state_is_read_from_tokens() {
        let st = |sql: &str| server_state(sql.as_bytes());
        assert!(st("CREATE TEMP TABLE t (a int)").is_some());
        assert!(st("create global temporary table t (a int)").is_some());
        assert!(st("CREATE OR REPLACE TEMP VIEW v AS SELECT 1").is_some());
        assert!(st("SELECT 1 INTO TEMP t").is_some());
        assert!(st("CREATE TABLE pg_temp.t (a int)").is_some());
        assert!(st("LISTEN jobs").is_some());
        assert!(st("SELECT pg_advisory_lock(1)").is_some());
        assert!(st("SELECT pg_catalog.pg_try_advisory_lock_shared(1, 2)").is_some());
        assert!(st("DECLARE c CURSOR WITH HOLD FOR SELECT 1").is_some());
        assert!(st("SELECT set_config('x.y', 'secret', false)").is_some());
        assert!(st("SELECT set_config('x.y', $1, $2)").is_some());
        assert!(st("SELECT 1; SELECT pg_catalog.set_config('x.y', 'v', false)").is_some());
        // Transaction-scoped, or not state at all.
        assert!(st("CREATE TEMP TABLE t (a int) ON COMMIT DROP").is_none());
        assert!(st("SELECT set_config('x.y', 'v', true)").is_none());
        assert!(st("SELECT pg_advisory_xact_lock(1)").is_none());
        assert!(st("DECLARE c CURSOR FOR SELECT 1").is_none());
        assert!(st("SELECT temperature, 'listen', \"hold\" FROM t").is_none());
        assert!(st("SELECT abalance FROM pgbench_accounts WHERE aid = 1").is_none());
        assert!(st("-- LISTEN x\nSELECT 1").is_none());
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
            let _ = server_state(s);
        }
    }
}
