//! Isolation between clients that share servers (issue 15): one client's settings and
//! server-side state never reach another client, however it writes its commands, and a
//! client keeps what it set itself.
//!
//! Most tests use a pool of one server, so every client runs on the same server
//! connection and anything left behind would be seen by the next one. "Fresh" clients log
//! in with only `user` and `database`, so they have no settings of their own to replay and
//! see exactly what the server holds.

use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use switchyard_tests::admin::pool_row;
use switchyard_tests::raw::{msg, Msg, RawConn};
use switchyard_tests::TestBed;

const APP: [(&str, &str); 2] = [("user", "app"), ("database", "app")];

async fn login(bed: &TestBed, extra: &[(&str, &str)]) -> Result<RawConn> {
    let mut params = APP.to_vec();
    params.extend_from_slice(extra);
    RawConn::login(&bed.endpoint().addr(), &params, "app").await
}

/// One value, or the query's first error as `Err("SQLSTATE message")`.
async fn value(conn: &mut RawConn, sql: &str) -> Result<std::result::Result<String, String>> {
    let r = conn.simple_query(sql).await?;
    if let Some(e) = r.errors.first() {
        return Ok(Err(format!(
            "{} {}",
            e.sqlstate().unwrap_or_default(),
            e.message().unwrap_or_default()
        )));
    }
    match r.rows.as_slice() {
        [row] if row.len() == 1 => Ok(Ok(row[0].clone().unwrap_or_default())),
        rows => bail!("{sql:?}: expected one value, got {rows:?}"),
    }
}

async fn must(conn: &mut RawConn, sql: &str) -> Result<String> {
    value(conn, sql)
        .await?
        .map_err(|e| anyhow::anyhow!("{sql:?} failed: {e}"))
}

async fn exec(conn: &mut RawConn, sql: &str) -> Result<()> {
    let r = conn.simple_query(sql).await?;
    if let Some(e) = r.errors.first() {
        bail!("{sql:?} failed: {}", e.describe());
    }
    Ok(())
}

/// The server's default search_path, read directly.
async fn default_search_path(bed: &TestBed) -> Result<String> {
    let direct = bed.direct().connect_app().await?;
    let row = direct.query_one("SHOW search_path", &[]).await?;
    Ok(row.get(0))
}

/// A client with no settings of its own logs in and must see the default search_path.
async fn fresh_client_sees(bed: &TestBed, default: &str) -> Result<()> {
    let mut d = login(bed, &[]).await?;
    let d_path = must(&mut d, "SHOW search_path").await?;
    ensure!(
        d_path == default,
        "a fresh client sees search_path {d_path:?}, expected {default:?}"
    );
    d.terminate().await
}

fn transaction_pool_of_one(
    bed_cfg: switchyard_tests::proxy::ProxyConfig,
) -> switchyard_tests::proxy::ProxyConfig {
    bed_cfg.mode("transaction").pool_size(1).query_wait_timeout("10s")
}

async fn create_schemas(bed: &TestBed) -> Result<()> {
    bed.direct()
        .connect_app()
        .await?
        .batch_execute("CREATE SCHEMA IF NOT EXISTS s1; CREATE SCHEMA IF NOT EXISTS s2")
        .await
        .context("creating schemas")
}

/// Client B ends a SET with a comment (`--` and `/* */` forms) while client A, on the same
/// server, keeps `search_path = s1`. Checks that B's `SHOW search_path` is the default, not
/// A's (at 5e4167b the comment swallowed the RESET the proxy appended after B's replayed
/// SET), that B keeps its own application_name, that A keeps s1, and that a fresh client
/// afterwards sees the default.
#[tokio::test]
async fn a_comment_in_a_set_cannot_hide_another_clients_setting() -> Result<()> {
    let mut bed = TestBed::start_with(transaction_pool_of_one)?;
    create_schemas(&bed).await?;
    let default = default_search_path(&bed).await?;
    for (form, set) in [
        ("--", "SET application_name TO 'x' -- note"),
        ("/* */", "SET application_name TO 'x' /* note */ -- and more"),
        ("/* */ inside", "SET application_name /* a */ = /* b */ 'x'"),
    ] {
        let mut a = login(&bed, &[]).await?;
        let mut b = login(&bed, &[]).await?;
        exec(&mut a, "SET search_path TO s1").await?;
        exec(&mut b, set).await?;
        // A runs again: the server now holds A's search_path; B's next transaction must
        // undo it.
        ensure!(
            must(&mut a, "SHOW search_path").await? == "s1",
            "{form}: a lost s1"
        );
        let b_path = must(&mut b, "SHOW search_path").await?;
        ensure!(
            b_path == default,
            "{form}: client b sees search_path {b_path:?} (a's), expected the default {default:?}"
        );
        let b_app = must(&mut b, "SHOW application_name").await?;
        ensure!(
            b_app == "x",
            "{form}: client b's application_name is {b_app:?}, expected x"
        );
        ensure!(
            must(&mut a, "SHOW search_path").await? == "s1",
            "{form}: a lost s1"
        );
        a.terminate().await?;
        b.terminate().await?;
        fresh_client_sees(&bed, &default)
            .await
            .with_context(|| format!("after the {form} form"))?;
    }
    bed.ensure_proxy_alive()
}

/// Client C logs in with a startup parameter the server rejects (`work_mem=not_a_size`)
/// while A's `search_path = s1` is on the only server. Checks that C's first statement gets
/// the server's own error (SQLSTATE 22023), not a result run with A's settings, and that a
/// fresh client afterwards sees the default search_path (at 5e4167b the failed replay was
/// recorded as applied and both C and the fresh client saw s1).
#[tokio::test]
async fn a_rejected_startup_parameter_is_the_clients_error_and_leaks_nothing() -> Result<()> {
    let mut bed = TestBed::start_with(transaction_pool_of_one)?;
    create_schemas(&bed).await?;
    let default = default_search_path(&bed).await?;
    let mut a = login(&bed, &[]).await?;
    exec(&mut a, "SET search_path TO s1").await?;
    ensure!(must(&mut a, "SHOW search_path").await? == "s1", "a lost s1");

    let mut c = login(&bed, &[("work_mem", "not_a_size")]).await?;
    let mut query = bytes::BytesMut::new();
    switchyard_tests::raw::msg::query(&mut query, "SHOW search_path");
    c.send(&query).await?;
    let replies = c.read_until_eof(Duration::from_secs(10)).await?;
    let got: Vec<String> = replies.iter().map(|m| m.describe()).collect();
    ensure!(
        replies.iter().any(|m| m.sqlstate().as_deref() == Some("22023"))
            && !replies.iter().any(|m| m.tag == b'D'),
        "client c with work_mem=not_a_size: expected error 22023 and no row, got {got:?}"
    );

    ensure!(must(&mut a, "SHOW search_path").await? == "s1", "a lost s1");
    a.terminate().await?;
    fresh_client_sees(&bed, &default).await?;
    bed.ensure_proxy_alive()
}

/// Client B's transaction sets search_path, then a SET fails and is rolled back to a
/// savepoint, and the transaction commits. Checks that B keeps its committed search_path
/// (s2), that A (same server) keeps s1, and that a fresh client sees the default (at
/// 5e4167b the error made the proxy forget B's SET while the server kept it, so the next
/// client got s2).
#[tokio::test]
async fn a_rejected_set_in_a_committed_transaction_leaks_nothing() -> Result<()> {
    let mut bed = TestBed::start_with(transaction_pool_of_one)?;
    create_schemas(&bed).await?;
    let default = default_search_path(&bed).await?;
    let mut a = login(&bed, &[]).await?;
    let mut b = login(&bed, &[]).await?;
    exec(&mut a, "SET search_path TO s1").await?;
    exec(&mut b, "BEGIN; SET search_path TO s2; SAVEPOINT before_bad").await?;
    let r = b.simple_query("SET work_mem TO 'bad'").await?;
    ensure!(
        r.errors.first().and_then(|e| e.sqlstate()).as_deref() == Some("22023"),
        "the bad SET did not fail with 22023: {r:?}"
    );
    exec(&mut b, "ROLLBACK TO SAVEPOINT before_bad; COMMIT").await?;
    let b_path = must(&mut b, "SHOW search_path").await?;
    ensure!(
        b_path == "s2",
        "b's committed search_path is {b_path:?}, expected s2"
    );
    ensure!(must(&mut a, "SHOW search_path").await? == "s1", "a lost s1");
    ensure!(must(&mut b, "SHOW search_path").await? == "s2", "b lost s2");
    a.terminate().await?;
    b.terminate().await?;
    fresh_client_sees(&bed, &default).await?;
    bed.ensure_proxy_alive()
}

/// `SET ROLE` cannot be replayed safely (`RESET ALL` does not undo it), so the client keeps
/// its server. Checks that A stays `tenant` across transactions, that SHOW POOLS counts one
/// pinned client while A is connected, and that after A leaves a fresh client on the same
/// server is `app` again (`current_user`), with SHOW POOLS back to 0 pinned.
#[tokio::test]
async fn set_role_pins_the_server_and_never_reaches_the_next_client() -> Result<()> {
    let mut bed = TestBed::start_with(|c| transaction_pool_of_one(c).with_admin())?;
    bed.pg()
        .primary()
        .admin_sql("app", "CREATE ROLE tenant NOLOGIN; GRANT tenant TO app;")?;
    let mut a = login(&bed, &[]).await?;
    exec(&mut a, "SET ROLE tenant").await?;
    ensure!(
        must(&mut a, "SELECT current_user").await? == "tenant",
        "SET ROLE had no effect"
    );
    ensure!(
        must(&mut a, "SELECT current_user").await? == "tenant",
        "a lost its role in its next transaction"
    );
    let count = pinned(&bed).await?;
    ensure!(count == 1, "SHOW POOLS shows {count} pinned clients, expected 1");
    a.terminate().await?;
    let mut d = login(&bed, &[]).await?;
    let who = must(&mut d, "SELECT current_user").await?;
    ensure!(who == "app", "a fresh client runs as {who:?}");
    let count = pinned(&bed).await?;
    ensure!(
        count == 0,
        "SHOW POOLS shows {count} pinned clients after the client left"
    );
    bed.ensure_proxy_alive()
}

async fn pinned(bed: &TestBed) -> Result<u64> {
    Ok(pool_row(&bed.endpoint(), "app/app").await?["pinned"].parse()?)
}

/// Client A creates a temporary table and sets a custom setting with
/// `set_config(..., false)` (pool of 20). Checks that A keeps its temporary table and
/// setting across transactions (its server is pinned), and, after A leaves, that none of
/// 20 clients holding every server of the pool at once (each inside a transaction) sees the
/// table or the value (at 5e4167b the one on A's backend saw both).
#[tokio::test]
async fn temporary_tables_and_set_config_stay_with_their_client() -> Result<()> {
    let mut bed = TestBed::start_with(|c| c.mode("transaction").pool_size(20).query_wait_timeout("20s"))?;
    let mut a = login(&bed, &[]).await?;
    exec(
        &mut a,
        "CREATE TEMP TABLE mine (v text); INSERT INTO mine VALUES ('a')",
    )
    .await?;
    exec(&mut a, "SELECT set_config('x.y', 'secret', false)").await?;
    for _ in 0..3 {
        ensure!(
            must(&mut a, "SELECT v FROM mine").await? == "a",
            "a lost its temporary table"
        );
        ensure!(
            must(&mut a, "SELECT current_setting('x.y', true)").await? == "secret",
            "a lost its set_config value"
        );
    }
    a.terminate().await?;
    let mut clients = Vec::new();
    for _ in 0..20 {
        let mut c = login(&bed, &[]).await?;
        exec(&mut c, "BEGIN").await?;
        clients.push(c);
    }
    let mut seen = Vec::new();
    for (i, c) in clients.iter_mut().enumerate() {
        let table = must(c, "SELECT coalesce(to_regclass('pg_temp.mine')::text, '')").await?;
        let setting = must(c, "SELECT coalesce(current_setting('x.y', true), '')").await?;
        if !table.is_empty() || !setting.is_empty() {
            seen.push((i, table, setting));
        }
    }
    ensure!(seen.is_empty(), "clients saw a's state: {seen:?}");
    for mut c in clients {
        exec(&mut c, "COMMIT").await?;
        c.terminate().await?;
    }
    bed.ensure_proxy_alive()
}

/// LISTEN, a session advisory lock and a WITH HOLD cursor each keep the client's server
/// (pool of two): checks that the client still holds them in later transactions (the lock
/// is held, seen from another client's failed `pg_try_advisory_lock`; the cursor can be
/// fetched; another client's NOTIFY reaches it) and that once it leaves, the clients that
/// hold both servers can take the lock and have no cursor.
#[tokio::test]
async fn listen_advisory_locks_and_cursors_stay_with_their_client() -> Result<()> {
    let mut bed = TestBed::start_with(|c| c.mode("transaction").pool_size(2).query_wait_timeout("10s"))?;
    let mut a = login(&bed, &[]).await?;
    exec(&mut a, "SELECT pg_advisory_lock(4242)").await?;
    exec(
        &mut a,
        "DECLARE held CURSOR WITH HOLD FOR SELECT generate_series(1, 3)",
    )
    .await?;
    exec(&mut a, "LISTEN jobs").await?;
    let mut b = login(&bed, &[]).await?;
    ensure!(
        must(&mut b, "SELECT pg_try_advisory_lock(4242)").await? == "f",
        "another client got a's advisory lock"
    );
    ensure!(
        must(&mut a, "FETCH 1 FROM held").await? == "1",
        "a lost its cursor"
    );
    exec(&mut b, "NOTIFY jobs, 'hello'").await?;
    let mut query = bytes::BytesMut::new();
    switchyard_tests::raw::msg::query(&mut query, "SELECT 1");
    a.send(&query).await?;
    let replies = a.read_until_ready().await?;
    let got: Vec<String> = replies.iter().map(|m| m.describe()).collect();
    ensure!(
        replies.iter().any(|m| m.tag == b'A') && !replies.iter().any(|m| m.tag == b'E'),
        "a, listening on jobs, did not get b's notification with its next statement: {got:?}"
    );
    a.terminate().await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Both servers are free now; take both so one of them is a's old one.
    let mut c = login(&bed, &[]).await?;
    exec(&mut b, "BEGIN").await?;
    exec(&mut c, "BEGIN").await?;
    for (name, conn) in [("b", &mut b), ("c", &mut c)] {
        let cursor = value(conn, "FETCH 1 FROM held").await?;
        ensure!(cursor.is_err(), "client {name} can fetch a's cursor: {cursor:?}");
        exec(conn, "ROLLBACK").await?;
    }
    ensure!(
        must(&mut b, "SELECT pg_try_advisory_lock(4242)").await? == "t",
        "a's advisory lock outlived a"
    );
    bed.ensure_proxy_alive()
}

/// One step of the random settings workload: the SQL and what it does to the client's own
/// idea of its settings (None = not a settings change the client keeps).
fn random_step(rng: &mut StdRng, names: &[&str], values: &[&str]) -> String {
    let name = names[rng.gen_range(0..names.len())];
    let value = values[rng.gen_range(0..values.len())];
    let comment = match rng.gen_range(0..4) {
        0 => " -- trailing comment; RESET ALL",
        1 => " /* block ; comment */",
        _ => "",
    };
    let quoted = match rng.gen_range(0..4) {
        0 => format!("'{value}'"),
        1 => format!("$q${value}$q$"),
        2 => format!("E'{value}'"),
        _ => format!("'{value}'"),
    };
    match rng.gen_range(0..10) {
        0..=3 => format!("SET {name} TO {quoted}{comment}"),
        4 => format!("SET SESSION {name} = {quoted}{comment}"),
        5 => format!("BEGIN; SET LOCAL {name} TO {quoted}; COMMIT"),
        6 => format!("RESET {name}{comment}"),
        7 => "RESET ALL".to_string(),
        8 => format!("BEGIN; SET {name} TO {quoted}; ROLLBACK"),
        _ => format!("SET {name} TO DEFAULT{comment}"),
    }
}

/// Property test: four clients (some with startup settings) run random sequences of
/// SET / SET SESSION / SET LOCAL / RESET / RESET ALL / SET DEFAULT / rolled-back SET, with
/// random comments and quoting, over one pooled server; each has a twin connected directly
/// to Postgres that runs the same statements. After every step, every client's `SHOW` of
/// every setting must equal its twin's: a client always sees exactly what it set itself.
#[tokio::test]
async fn random_settings_always_match_a_direct_connection() -> Result<()> {
    let mut bed = TestBed::start_with(transaction_pool_of_one)?;
    create_schemas(&bed).await?;
    let names = ["search_path", "application_name", "statement_timeout", "x.custom"];
    let values = ["s1", "s2", "5s", "a b", "it''s"];
    let seed: u64 = std::env::var("SWITCHYARD_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("seed {seed} (SWITCHYARD_SEED={seed} repeats this run)");
    let mut rng = StdRng::seed_from_u64(seed);
    let direct = bed.direct().addr();
    let startups: [&[(&str, &str)]; 4] = [
        &[],
        &[("application_name", "startup-b"), ("search_path", "s2")],
        &[("options", "-c statement_timeout=3s")],
        &[("x.custom", "from-startup")],
    ];
    let mut pairs = Vec::new();
    for extra in startups {
        let mut params = APP.to_vec();
        params.extend_from_slice(extra);
        let proxied = RawConn::login(&bed.endpoint().addr(), &params, "app").await?;
        let twin = RawConn::login(&direct, &params, "app").await?;
        pairs.push((proxied, twin));
    }
    for step in 0..120 {
        let i = rng.gen_range(0..pairs.len());
        let sql = random_step(&mut rng, &names, &values);
        let (proxied, twin) = &mut pairs[i];
        let p = proxied.simple_query(&sql).await?;
        let t = twin.simple_query(&sql).await?;
        // A statement that failed inside BEGIN leaves the transaction open: end it.
        if p.status != b'I' || t.status != b'I' {
            ensure!(
                p.status == t.status,
                "seed {seed} step {step}: transaction status differs"
            );
            proxied.simple_query("ROLLBACK").await?;
            twin.simple_query("ROLLBACK").await?;
        }
        let codes = |r: &switchyard_tests::raw::SimpleResult| {
            r.errors
                .iter()
                .map(|e| e.sqlstate().unwrap_or_default())
                .collect::<Vec<_>>()
        };
        ensure!(
            codes(&p) == codes(&t),
            "seed {seed} step {step} client {i} {sql:?}: proxy errors {:?}, direct {:?}",
            codes(&p),
            codes(&t)
        );
        for (j, (proxied, twin)) in pairs.iter_mut().enumerate() {
            for name in names {
                let show = format!("SELECT current_setting('{name}', true)");
                let got = value(proxied, &show).await?;
                let want = value(twin, &show).await?;
                ensure!(
                    got == want,
                    "seed {seed} after step {step} ({sql:?} by client {i}): client {j} sees {name} = {got:?}, a direct connection {want:?}"
                );
            }
        }
    }
    bed.ensure_proxy_alive()
}

/// A client whose server stays with it (session mode, or transaction mode after it created
/// a temporary table) runs `DISCARD ALL` itself, which drops every prepared statement on
/// the server, the proxy's included. Checks that preparing and running the same statement
/// again works (the proxy prepares it anew instead of trusting a server copy that is gone).
#[tokio::test]
async fn discard_all_on_a_kept_server_forgets_the_proxys_statements() -> Result<()> {
    for mode in ["session", "transaction"] {
        let mut bed = TestBed::start_with(|c| c.mode(mode).pool_size(2))?;
        let client = bed.endpoint().connect_app().await?;
        if mode == "transaction" {
            client.batch_execute("CREATE TEMP TABLE keep_me (a int)").await?;
        }
        let sql = "SELECT $1::int + 1";
        let first = client.prepare(sql).await?;
        let row = client.query_one(&first, &[&1i32]).await?;
        ensure!(row.get::<_, i32>(0) == 2, "{mode}: first run");
        client.batch_execute("DISCARD ALL").await.context("DISCARD ALL")?;
        let again = client.prepare(sql).await.context("prepare after DISCARD ALL")?;
        let row = client
            .query_one(&again, &[&41i32])
            .await
            .with_context(|| format!("{mode}: running the statement prepared again after DISCARD ALL"))?;
        ensure!(row.get::<_, i32>(0) == 42, "{mode}: second run");
        bed.ensure_proxy_alive()?;
    }
    Ok(())
}

/// A setting changed where the proxy cannot see it (a `DO` block running `SET` through
/// `EXECUTE`) is caught by the server's ParameterStatus report: checks that the client is
/// counted as pinned, keeps its value, and that a fresh client on the same server (pool of
/// one) afterwards sees an empty application_name. A `SET LOCAL` sent as its own message,
/// which the server also reports, must not pin: checks 0 pinned after it.
#[tokio::test]
async fn a_reported_setting_nobody_asked_for_pins_the_server() -> Result<()> {
    let mut bed = TestBed::start_with(|c| transaction_pool_of_one(c).with_admin())?;
    let mut a = login(&bed, &[]).await?;
    exec(&mut a, "BEGIN").await?;
    exec(&mut a, "SET LOCAL application_name = 'local-only'").await?;
    exec(&mut a, "COMMIT").await?;
    let count = pinned(&bed).await?;
    ensure!(count == 0, "SET LOCAL pinned the server ({count} pinned)");
    exec(
        &mut a,
        "DO $$ BEGIN EXECUTE 'SET application_name = ''from-do'''; END $$",
    )
    .await?;
    let count = pinned(&bed).await?;
    ensure!(
        count == 1,
        "SHOW POOLS shows {count} pinned clients after the DO block, expected 1"
    );
    ensure!(
        must(&mut a, "SHOW application_name").await? == "from-do",
        "a lost the setting its DO block made"
    );
    a.terminate().await?;
    let mut d = login(&bed, &[]).await?;
    let app = must(&mut d, "SHOW application_name").await?;
    ensure!(app.is_empty(), "a fresh client sees application_name {app:?}");
    bed.ensure_proxy_alive()
}

/// How a client leaves in the middle of its transaction.
#[derive(Clone, Copy, Debug)]
enum Leave {
    /// Sends Terminate, then closes.
    Terminate,
    /// Closes its socket without a word (FIN).
    Close,
    /// Closes its socket with a reset (RST, `SO_LINGER` 0), as a killed process's may.
    Reset,
}

impl Leave {
    async fn go(self, conn: RawConn) -> Result<()> {
        match self {
            Leave::Terminate => conn.terminate().await,
            Leave::Close => {
                drop(conn);
                Ok(())
            }
            Leave::Reset => {
                let (stream, _) = conn.into_parts();
                // Deprecated because a lingering close blocks the thread; a zero linger
                // does not linger: the close sends RST at once.
                #[allow(deprecated)]
                stream.set_linger(Some(Duration::ZERO))?;
                drop(stream);
                Ok(())
            }
        }
    }
}

/// What the leaving client has on its server when it goes: the statements it ran (each
/// must succeed; the last leaves a transaction block open) and whether it then starts a
/// `COPY ... FROM STDIN` and sends part of its data.
struct Leftover {
    name: &'static str,
    statements: &'static [&'static str],
    copy_in: bool,
}

const LEFTOVERS: [Leftover; 5] = [
    Leftover {
        name: "temporary table",
        statements: &[
            "BEGIN",
            "CREATE TEMP TABLE leftover (v int)",
            "INSERT INTO leftover VALUES (1)",
        ],
        copy_in: false,
    },
    Leftover {
        // A session-level lock survives the ROLLBACK of the block it was taken in.
        name: "session advisory lock",
        statements: &["BEGIN", "SELECT pg_advisory_lock(77)"],
        copy_in: false,
    },
    Leftover {
        name: "SET and SET LOCAL",
        statements: &[
            "SET work_mem = '3MB'",
            "BEGIN",
            "SET application_name = 'leaver'",
            "SET LOCAL statement_timeout = '4s'",
        ],
        copy_in: false,
    },
    Leftover {
        name: "failed transaction",
        statements: &["BEGIN", "INSERT INTO left_rows VALUES (-1)", "SELECT 1/0"],
        copy_in: false,
    },
    Leftover {
        name: "open COPY FROM STDIN",
        statements: &["BEGIN", "INSERT INTO left_rows VALUES (0)"],
        copy_in: true,
    },
];

/// A fresh client's view of its server: backend pid, whether a temporary table
/// `leftover` is visible, work_mem, statement_timeout, application_name, and whether its
/// statement started its own transaction (`now() = statement_timestamp()`, false inside
/// a transaction someone else began).
const VIEW: &str = "SELECT pg_backend_pid(), to_regclass('pg_temp.leftover') IS NULL, \
     current_setting('work_mem'), current_setting('statement_timeout'), \
     current_setting('application_name'), now() = statement_timestamp()";

/// Runs [`VIEW`] on `conn`; checks that it ends outside any transaction (ReadyForQuery
/// 'I') and returns the row.
async fn view(conn: &mut RawConn) -> Result<Vec<Option<String>>> {
    let r = conn.simple_query(VIEW).await?;
    ensure!(
        r.errors.is_empty() && r.rows.len() == 1 && r.status == b'I',
        "the view query: {r:?}"
    );
    Ok(r.rows[0].clone())
}

/// A client leaves (Terminate, a plain close, a reset) in the middle of a transaction
/// block holding a temporary table, a session advisory lock, session-level `SET` and
/// `SET LOCAL` settings, a failed statement, or an open `COPY ... FROM STDIN` with part
/// of its data sent, on the only server of a transaction pool (pool of one). For each of
/// the 15 combinations, checks on the server that the next client is not in that
/// transaction and sees none of it:
///
/// - the next client's query runs in its own transaction (ReadyForQuery 'I',
///   `now() = statement_timestamp()`), sees no temporary table `leftover`, and the
///   default work_mem, statement_timeout and application_name (those of a direct
///   connection's fresh client);
/// - seen by a superuser on the server: no advisory lock in `pg_locks`, no relation
///   `leftover` in `pg_class`, no row of the left transaction or COPY in `left_rows`, and
///   every backend of `app` is `idle` (none `idle in transaction`, none still in COPY),
///   with the leaver's backend either the next client's or ended;
/// - after Terminate or a plain close outside COPY, the server is reused (the next
///   client has the same `pg_backend_pid()`): it was reset, not just thrown away. After a
///   reset (RST) or in COPY the proxy may close the server instead.
#[tokio::test]
async fn a_client_leaving_mid_transaction_leaves_nothing_on_its_server() -> Result<()> {
    switchyard_tests::skip_if_direct!(); // the next client is on the pool's only server
    let mut bed = TestBed::start_with(transaction_pool_of_one)?;
    let direct = bed.direct();
    direct
        .connect_app()
        .await?
        .batch_execute("CREATE TABLE left_rows (v int)")
        .await?;
    let dba = direct.connect("postgres", "postgres", "app").await?;
    let mut fresh = RawConn::login(&direct.addr(), &APP, "app").await?;
    let defaults = view(&mut fresh).await?[2..5].to_vec();
    for leftover in &LEFTOVERS {
        for leave in [Leave::Terminate, Leave::Close, Leave::Reset] {
            let case = format!("{} then {leave:?}", leftover.name);
            let mut a = login(&bed, &[]).await?;
            let a_pid = must(&mut a, "SELECT pg_backend_pid()").await?;
            for sql in leftover.statements {
                let r = a.simple_query(sql).await?;
                let failing = sql.contains("1/0");
                ensure!(r.errors.is_empty() != failing, "{case}: {sql:?} gave {r:?}");
            }
            if leftover.copy_in {
                let mut out = bytes::BytesMut::new();
                switchyard_tests::raw::msg::query(&mut out, "COPY left_rows FROM STDIN");
                a.send(&out).await?;
                let start = a.expect_msg().await?;
                ensure!(
                    start.tag == b'G',
                    "{case}: no CopyInResponse: {}",
                    start.describe()
                );
                out.clear();
                switchyard_tests::raw::msg::raw(&mut out, b'd', b"1\n2\n");
                a.send(&out).await?;
            }
            leave.go(a).await.with_context(|| format!("{case}: leaving"))?;

            let mut b = login(&bed, &[]).await?;
            let seen = view(&mut b).await.with_context(|| case.clone())?;
            let b_pid = seen[0].clone().unwrap_or_default();
            ensure!(
                seen[1].as_deref() == Some("t")
                    && seen[2..5] == defaults[..]
                    && seen[5].as_deref() == Some("t"),
                "{case}: the next client sees (pid, no temp table, work_mem, statement_timeout, \
                 application_name, own transaction) = {seen:?}; defaults {defaults:?}"
            );
            let reused = b_pid == a_pid;
            if !leftover.copy_in && !matches!(leave, Leave::Reset) {
                ensure!(
                    reused,
                    "{case}: the next client got backend {b_pid}, not the leaver's {a_pid}: the server was not reset and reused"
                );
            }
            server_is_clean(&dba, &a_pid, &b_pid)
                .await
                .with_context(|| case.clone())?;
            println!(
                "{case}: next client on {} backend",
                if reused { "the same" } else { "a new" }
            );
            b.terminate().await?;
        }
    }
    bed.ensure_proxy_alive()
}

/// Checks (waiting up to 5 s for a closed server's backend to exit) that, seen by the
/// superuser `dba`, no advisory lock is held, no relation `leftover` exists, `left_rows`
/// is empty, every backend of user `app` is `idle`, and backend `left` is `current`'s or
/// gone.
async fn server_is_clean(dba: &tokio_postgres::Client, left: &str, current: &str) -> Result<()> {
    let left: i32 = left.parse()?;
    let current: i32 = current.parse()?;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let row = dba
            .query_one(
                "SELECT (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'), \
                        (SELECT count(*) FROM pg_class WHERE relname = 'leftover'), \
                        (SELECT count(*) FROM left_rows), \
                        (SELECT coalesce(string_agg(pid || ' ' || state, ', '), '') \
                           FROM pg_stat_activity \
                          WHERE usename = 'app' AND state IS DISTINCT FROM 'idle'), \
                        (SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND pid <> $2)",
                &[&left, &current],
            )
            .await?;
        let (locks, tables, rows, busy, left_alive): (i64, i64, i64, String, i64) =
            (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
        if (locks, tables, rows, busy.as_str(), left_alive) == (0, 0, 0, "", 0) {
            return Ok(());
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "on the server: {locks} advisory locks, {tables} relations named leftover, {rows} rows in \
             left_rows, backends of app not idle: [{busy}], the leaver's backend {left} still there \
             beside the next client's {current}: {left_alive}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends `batch` and reads up to its last ReadyForQuery (`syncs` of them); returns the
/// message tags (e.g. "12DCZ") and the messages.
async fn batch(conn: &mut RawConn, batch: &bytes::BytesMut, syncs: usize) -> Result<(String, Vec<Msg>)> {
    conn.send(batch).await?;
    let mut got = Vec::new();
    for _ in 0..syncs {
        got.extend(conn.read_until_ready().await?);
    }
    Ok((got.iter().map(Msg::tag_char).collect(), got))
}

/// Parse of each (name, text), then Sync.
fn parses(statements: &[(&str, &str)]) -> bytes::BytesMut {
    let mut out = bytes::BytesMut::new();
    for (name, sql) in statements {
        msg::parse(&mut out, name, sql);
    }
    msg::sync(&mut out);
    out
}

/// Bind of statement `name` with one text parameter (or none), Execute, Sync.
fn run(name: &str, param: Option<&str>) -> bytes::BytesMut {
    let mut out = bytes::BytesMut::new();
    let params: Vec<Option<&str>> = param.into_iter().map(Some).collect();
    msg::bind(&mut out, "", name, &params);
    msg::execute(&mut out, "", 0);
    msg::sync(&mut out);
    out
}

/// The value of the single DataRow in `got`.
fn row_value(got: &[Msg]) -> Option<String> {
    let rows: Vec<_> = got.iter().filter_map(Msg::data_row).collect();
    match rows.as_slice() {
        [row] if row.len() == 1 => row[0].clone(),
        _ => None,
    }
}

/// A client's `DEALLOCATE ALL` and `DISCARD ALL`, each sent as a simple query and as an
/// unnamed extended-protocol statement (as drivers in pipeline mode send it), on the pool's
/// only server, which client B shares with a statement `S_1` of its own. For each of the
/// four forms, checks that A gets the form's CommandComplete and ReadyForQuery 'I'; that
/// A's statements `S_1` and `S_2` are gone (Bind: 26000); that A can prepare `S_1` again
/// with another text and run it (11 for `$1::int + 10` with 1); that B's `S_1` still runs
/// (300 for `$1::int * 100` with 3) though the extended form ran on the server B uses;
/// that after `DISCARD ALL` A's work_mem is the default again and after `DEALLOCATE ALL`
/// it keeps its 2MB; and that B's work_mem is the default throughout. Then with
/// tokio-postgres: a statement prepared before `DEALLOCATE ALL` fails with 26000 after it,
/// and preparing the same text again works.
#[tokio::test]
async fn deallocate_all_and_discard_all_forget_only_the_clients_own_statements() -> Result<()> {
    let mut bed = TestBed::start_with(transaction_pool_of_one)?;
    let default_work_mem: String = bed
        .direct()
        .connect_app()
        .await?
        .query_one("SELECT current_setting('work_mem')", &[])
        .await?
        .get(0);
    let mut b = login(&bed, &[]).await?;
    let (tags, _) = batch(&mut b, &parses(&[("S_1", "SELECT $1::int * 100")]), 1).await?;
    ensure!(tags == "1Z", "b's Parse: {tags}");
    for (form, extended) in [
        ("DEALLOCATE ALL", false),
        ("DISCARD ALL", false),
        ("DEALLOCATE ALL", true),
        ("DISCARD ALL", true),
    ] {
        let case = format!("{form} ({})", if extended { "extended" } else { "simple" });
        let mut a = login(&bed, &[]).await?;
        exec(&mut a, "SET work_mem = '2MB'").await?;
        let (tags, _) = batch(
            &mut a,
            &parses(&[("S_1", "SELECT $1::int + 1"), ("S_2", "SELECT 'two'::text")]),
            1,
        )
        .await?;
        ensure!(tags == "11Z", "{case}: a's Parses: {tags}");
        let (tags, got) = batch(&mut a, &run("S_1", Some("1")), 1).await?;
        ensure!(
            tags == "2DCZ" && row_value(&got).as_deref() == Some("2"),
            "{case}: a's S_1: {tags}"
        );

        let mut reset = bytes::BytesMut::new();
        if extended {
            msg::parse(&mut reset, "", form);
            msg::bind(&mut reset, "", "", &[]);
            msg::execute(&mut reset, "", 0);
            msg::sync(&mut reset);
        } else {
            msg::query(&mut reset, form);
        }
        let (tags, got) = batch(&mut a, &reset, 1).await?;
        let complete: Vec<_> = got.iter().filter_map(Msg::command_tag).collect();
        ensure!(
            tags.ends_with("CZ")
                && !tags.contains('E')
                && complete == [form]
                && got.last().and_then(Msg::ready_status) == Some(b'I'),
            "{case}: expected CommandComplete {form:?} and ReadyForQuery 'I', got {:?}",
            got.iter().map(Msg::describe).collect::<Vec<_>>()
        );
        for name in ["S_1", "S_2"] {
            let (tags, got) = batch(&mut a, &run(name, None), 1).await?;
            let code = got.iter().find_map(Msg::sqlstate);
            ensure!(
                tags == "EZ" && code.as_deref() == Some("26000"),
                "{case}: a's {name} after {form}: expected 26000, got {:?}",
                got.iter().map(Msg::describe).collect::<Vec<_>>()
            );
        }
        let mut again = parses(&[("S_1", "SELECT $1::int + 10")]);
        again.extend_from_slice(&run("S_1", Some("1")));
        let (tags, got) = batch(&mut a, &again, 2).await?;
        ensure!(
            tags == "1Z2DCZ" && row_value(&got).as_deref() == Some("11"),
            "{case}: S_1 prepared again: {:?}",
            got.iter().map(Msg::describe).collect::<Vec<_>>()
        );
        let (tags, got) = batch(&mut b, &run("S_1", Some("3")), 1).await?;
        ensure!(
            tags == "2DCZ" && row_value(&got).as_deref() == Some("300"),
            "{case}: b's own S_1 after a's {form}: {:?}",
            got.iter().map(Msg::describe).collect::<Vec<_>>()
        );
        let a_work_mem = must(&mut a, "SHOW work_mem").await?;
        let want = if form == "DISCARD ALL" {
            default_work_mem.as_str()
        } else {
            "2MB"
        };
        ensure!(
            a_work_mem == want,
            "{case}: a's work_mem is {a_work_mem}, expected {want}"
        );
        let b_work_mem = must(&mut b, "SHOW work_mem").await?;
        ensure!(
            b_work_mem == default_work_mem,
            "{case}: b's work_mem is {b_work_mem}, expected the default {default_work_mem}"
        );
        a.terminate().await?;
    }

    let client = bed.endpoint().connect_app().await?;
    let sql = "SELECT $1::int - 1";
    let old = client.prepare(sql).await?;
    ensure!(client.query_one(&old, &[&1i32]).await?.get::<_, i32>(0) == 0);
    client.batch_execute("DEALLOCATE ALL").await?;
    let gone = client.query_one(&old, &[&1i32]).await;
    switchyard_tests::expect_sqlstate(gone, &["26000"], "a statement prepared before DEALLOCATE ALL")?;
    let new = client.prepare(sql).await?;
    ensure!(client.query_one(&new, &[&5i32]).await?.get::<_, i32>(0) == 4);
    bed.ensure_proxy_alive()
}
