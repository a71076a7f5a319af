//! Session state in transaction mode: each client must see its own settings
//! whichever pooled server runs its transaction. Startup parameters
//! (application_name, search_path, `options=-c ...`) and `SET` commands follow
//! the client; `SET LOCAL` and settings of rolled-back transactions do not
//! persist; nothing leaks to other clients. A pool of one server makes every
//! client share the same server connection.

use anyhow::{ensure, Result};
use switchyard_tests::raw::RawConn;
use switchyard_tests::{PgResultExt, TestBed};
use tokio_postgres::Client;

async fn show(client: &Client, setting: &str) -> Result<String> {
    let rows = client
        .simple_query(&format!("SHOW {setting}"))
        .await
        .ctx(&format!("SHOW {setting}"))?;
    rows.iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .ok_or_else(|| anyhow::anyhow!("SHOW {setting} returned no row"))
}

async fn create_schemas(bed: &TestBed) -> Result<()> {
    bed.direct()
        .connect_app()
        .await?
        .batch_execute(
            "CREATE SCHEMA s1; CREATE SCHEMA s2; \
             CREATE TABLE s1.t AS SELECT 's1' AS v; CREATE TABLE s2.t AS SELECT 's2' AS v",
        )
        .await
        .ctx("creating schemas")
}

#[tokio::test]
async fn startup_parameters_follow_the_client() -> Result<()> {
    let mut bed = TestBed::start_with(|cfg| cfg.mode("transaction").pool_size(1))?;
    create_schemas(&bed).await?;
    let addr = bed.endpoint().addr();
    let mut a = RawConn::login(
        &addr,
        &[
            ("user", "app"),
            ("database", "app"),
            ("application_name", "client-a"),
            ("search_path", "s1"),
        ],
        "app",
    )
    .await?;
    let mut b = RawConn::login(
        &addr,
        &[
            ("user", "app"),
            ("database", "app"),
            ("application_name", "client-b"),
            ("search_path", "s2"),
        ],
        "app",
    )
    .await?;
    for (name, conn) in [("a", &a), ("b", &b)] {
        let reported = conn
            .params
            .iter()
            .find(|(k, _)| k == "application_name")
            .map(|(_, v)| v.as_str());
        ensure!(
            reported == Some(&format!("client-{name}")[..]),
            "client {name}: ParameterStatus application_name at login was {reported:?}"
        );
    }
    for round in 0..5 {
        for (name, conn, schema) in [("a", &mut a, "s1"), ("b", &mut b, "s2")] {
            let path = conn.query_one_value("SHOW search_path").await?;
            let app = conn
                .query_one_value("SELECT current_setting('application_name')")
                .await?;
            let v = conn.query_one_value("SELECT v FROM t").await?;
            ensure!(
                path.as_deref() == Some(schema)
                    && app.as_deref() == Some(&format!("client-{name}")[..])
                    && v.as_deref() == Some(schema),
                "round {round}, client {name}: expected search_path {schema}, application_name \
                 client-{name}, t from {schema}; got {path:?}, {app:?}, {v:?}"
            );
        }
    }
    // Inside an explicit transaction too.
    let r = a.simple_query("BEGIN; SELECT v FROM t; COMMIT").await?;
    ensure!(
        r.errors.is_empty() && r.rows == vec![vec![Some("s1".to_owned())]],
        "client a in a transaction: {r:?}"
    );
    bed.ensure_proxy_alive()
}

#[tokio::test]
async fn tokio_postgres_application_name_and_options() -> Result<()> {
    let mut bed = TestBed::start_with(|cfg| cfg.mode("transaction").pool_size(1))?;
    create_schemas(&bed).await?;
    let ep = bed.endpoint();
    let mut clients = Vec::new();
    for (name, schema) in [("one", "s1"), ("two", "s2")] {
        let mut cfg = ep.config("app", "app", "app");
        cfg.application_name(name)
            .options(format!("-c search_path={schema} -c statement_timeout=1234"));
        clients.push((
            name,
            schema,
            switchyard_tests::client::connect(&cfg).await.ctx("connect")?,
        ));
    }
    for round in 0..4 {
        for (name, schema, client) in &clients {
            let got = (
                show(client, "application_name").await?,
                show(client, "search_path").await?,
                show(client, "statement_timeout").await?,
            );
            ensure!(
                got == (name.to_string(), schema.to_string(), "1234ms".to_string()),
                "round {round}, client {name}: expected ({name}, {schema}, 1234ms), got {got:?}"
            );
        }
    }
    bed.ensure_proxy_alive()
}

#[tokio::test]
async fn set_follows_the_client_and_does_not_leak() -> Result<()> {
    let mut bed = TestBed::start_with(|cfg| cfg.mode("transaction").pool_size(1))?;
    let ep = bed.endpoint();
    let a = ep.connect_app().await?;
    let b = ep.connect_app().await?;
    let default_timeout = show(&b, "statement_timeout").await?;
    let default_work_mem = show(&b, "work_mem").await?;

    // Plain SET (autocommit).
    a.batch_execute("SET statement_timeout = '7s'").await.ctx("SET")?;
    ensure!(
        show(&b, "statement_timeout").await? == default_timeout,
        "a's SET leaked to b"
    );
    ensure!(show(&a, "statement_timeout").await? == "7s", "a lost its SET");

    // SET inside a committed transaction persists for the session.
    a.batch_execute("BEGIN; SET application_name = 'in-tx'; COMMIT")
        .await
        .ctx("SET in transaction")?;
    ensure!(
        show(&b, "application_name").await? != "in-tx",
        "SET in a's transaction leaked to b"
    );
    ensure!(
        show(&a, "application_name").await? == "in-tx",
        "SET inside a committed transaction was lost"
    );

    // SET LOCAL is visible in its transaction only.
    a.batch_execute("BEGIN; SET LOCAL work_mem = '8MB'")
        .await
        .ctx("SET LOCAL")?;
    ensure!(
        show(&a, "work_mem").await? == "8MB",
        "SET LOCAL not visible in its transaction"
    );
    a.batch_execute("COMMIT").await.ctx("COMMIT")?;
    ensure!(
        show(&a, "work_mem").await? == default_work_mem,
        "SET LOCAL outlived its transaction"
    );

    // SET in a rolled-back transaction is undone.
    a.batch_execute("BEGIN; SET statement_timeout = '9s'; ROLLBACK")
        .await
        .ctx("SET then ROLLBACK")?;
    ensure!(
        show(&a, "statement_timeout").await? == "7s",
        "SET in a rolled-back transaction persisted"
    );

    // RESET and RESET ALL.
    a.batch_execute("RESET statement_timeout").await.ctx("RESET")?;
    ensure!(
        show(&a, "statement_timeout").await? == default_timeout,
        "RESET ignored"
    );
    a.batch_execute("SET work_mem = '16MB'; RESET ALL")
        .await
        .ctx("RESET ALL")?;
    ensure!(
        show(&a, "work_mem").await? == default_work_mem,
        "RESET ALL ignored"
    );

    bed.ensure_proxy_alive()
}
