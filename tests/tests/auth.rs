//! Client authentication at the proxy: SCRAM-SHA-256 and md5 challenges,
//! users whose servers trust them or store md5 hashes, passwords configured
//! as plaintext, SCRAM verifiers or md5 hashes, and the errors a client gets
//! for a wrong password (28P01), an unknown user (28P01 as well, with nothing
//! that reveals whether the user exists) and an unknown database (3D000).

use anyhow::{bail, ensure, Result};
use switchyard_tests::client::connect;
use switchyard_tests::proxy::UserSection;
use switchyard_tests::raw::{expect_unknown_user_refused, RawConn, Startup};
use switchyard_tests::{expect_sqlstate, roles, PgResultExt, TestBed};

/// Log in and check who the *server* thinks we are.
async fn check_login(bed: &TestBed, user: &str, password: &str) -> Result<()> {
    let client = bed.endpoint().connect(user, password, roles::APP_DB).await?;
    let row = client
        .query_one("SELECT current_user::text, current_database()::text", &[])
        .await
        .ctx("query after login")?;
    let (u, d): (String, String) = (row.get(0), row.get(1));
    ensure!(
        u == user && d == roles::APP_DB,
        "logged in as {user}/{} but the server says {u}/{d}",
        roles::APP_DB
    );
    Ok(())
}

#[tokio::test]
async fn scram_user_with_tokio_postgres_and_psql() -> Result<()> {
    let mut bed = TestBed::start()?;
    let (user, password) = roles::APP;
    check_login(&bed, user, password).await?;
    let out = bed
        .endpoint()
        .psql(user, password, roles::APP_DB)
        .run_async("SELECT current_user || '@' || current_database()")
        .await?;
    out.ensure_success()?;
    ensure!(out.stdout.trim() == "app@app", "psql printed {:?}", out.stdout);
    // psql with sslmode=disable too (no SSLRequest first).
    let out = bed
        .endpoint()
        .psql(user, password, roles::APP_DB)
        .env("PGSSLMODE", "disable")
        .run_async("SELECT 1")
        .await?;
    out.ensure_success()?;
    let mut raw = RawConn::connect(&bed.endpoint().addr()).await?;
    match raw
        .startup(&[("user", user), ("database", roles::APP_DB)], password)
        .await?
    {
        Startup::Ready => {}
        Startup::Error(e) => bail!("raw SCRAM login failed: {}", e.describe()),
    }
    ensure!(
        raw.auth_requests.first() == Some(&10),
        "expected a SASL (SCRAM) challenge, got auth requests {:?}",
        raw.auth_requests
    );
    bed.ensure_proxy_alive()
}

#[tokio::test]
async fn md5_and_trust_users() -> Result<()> {
    let mut bed = TestBed::start()?;
    check_login(&bed, roles::MD5.0, roles::MD5.1).await?;
    check_login(&bed, roles::TRUST.0, roles::TRUST.1).await?;
    for (user, password) in [roles::MD5, roles::TRUST] {
        let out = bed
            .endpoint()
            .psql(user, password, roles::APP_DB)
            .run_async("SELECT current_user")
            .await?;
        out.ensure_success()?;
        ensure!(out.stdout.trim() == user, "psql printed {:?}", out.stdout);
    }
    bed.ensure_proxy_alive()
}

#[tokio::test]
async fn md5_hash_in_config_challenges_with_md5() -> Result<()> {
    switchyard_tests::skip_if_direct!();
    let (user, password) = roles::MD5;
    let hash = postgres_protocol::password::md5(password.as_bytes(), user);
    let mut bed = TestBed::start_with(|cfg| cfg.user(user, UserSection::with_password(&hash)))?;
    let mut raw = RawConn::connect(&bed.endpoint().addr()).await?;
    match raw
        .startup(&[("user", user), ("database", roles::APP_DB)], password)
        .await?
    {
        Startup::Ready => {}
        Startup::Error(e) => bail!(
            "md5 login with an md5 hash in the config failed: {}",
            e.describe()
        ),
    }
    ensure!(
        raw.auth_requests.first() == Some(&5),
        "expected an md5 challenge for a user configured with an md5 hash, got {:?}",
        raw.auth_requests
    );
    let who = raw.query_one_value("SELECT current_user").await?;
    ensure!(who.as_deref() == Some(user), "server says current_user = {who:?}");
    check_login(&bed, user, password).await?;
    bed.ensure_proxy_alive()
}

#[tokio::test]
async fn scram_verifier_in_config_with_server_password() -> Result<()> {
    switchyard_tests::skip_if_direct!();
    let (user, password) = roles::APP;
    let verifier = postgres_protocol::password::scram_sha_256(password.as_bytes());
    let mut bed = TestBed::start_with(|cfg| {
        cfg.user(
            user,
            UserSection {
                password: verifier,
                server_password: Some(password.to_owned()),
                auth: None,
            },
        )
    })?;
    check_login(&bed, user, password).await?;
    let wrong = connect(&bed.endpoint().config(user, "not-app", roles::APP_DB)).await;
    expect_sqlstate(wrong, &["28P01"], "wrong password against a SCRAM verifier")?;
    bed.ensure_proxy_alive()
}

#[tokio::test]
async fn scram_verifier_in_config_passes_through_to_servers() -> Result<()> {
    switchyard_tests::skip_if_direct!();
    // No plaintext anywhere in the config: the proxy must log in to servers
    // with the keys recovered from the client's own SCRAM proof. That only
    // works with the verifier the servers store (same salt and iterations),
    // as with PgBouncer, so copy it from pg_authid.
    let (user, password) = roles::APP;
    let mut bed = TestBed::start_full(Default::default(), |cfg, pg| {
        let verifier = pg.primary().admin_sql(
            "postgres",
            &format!("SELECT rolpassword FROM pg_authid WHERE rolname = '{user}'"),
        )?;
        Ok(cfg.user(user, UserSection::with_password(verifier.trim())))
    })?;
    check_login(&bed, user, password).await?;
    bed.ensure_proxy_alive()
}

#[tokio::test]
async fn wrong_password_unknown_user_unknown_database() -> Result<()> {
    let mut bed = TestBed::start()?;
    let ep = bed.endpoint();

    let wrong = connect(&ep.config("app", "wrong", "app")).await;
    let wrong = expect_sqlstate(wrong, &["28P01"], "wrong password")?;

    let unknown_user = connect(&ep.config("no_such_user", "whatever", "app")).await;
    let unknown_user = expect_sqlstate(unknown_user, &["28P01"], "unknown user")?;
    let msg = unknown_user.message().to_lowercase();
    for leak in ["exist", "unknown", "not found", "no such"] {
        ensure!(
            !msg.contains(leak),
            "the error for an unknown user must not reveal that the user is unknown; got {:?} \
             (wrong-password message: {:?})",
            unknown_user.message(),
            wrong.message()
        );
    }

    let unknown_db = connect(&ep.config("app", "app", "no_such_db")).await;
    expect_sqlstate(unknown_db, &["3D000"], "unknown database")?;

    // The same through psql: non-zero exit and libpq's message.
    let out = ep.psql("app", "wrong", "app").run_async("SELECT 1").await?;
    ensure!(
        !out.status_ok && out.stderr.contains("password authentication failed"),
        "{}",
        out.describe("psql with a wrong password should fail with 'password authentication failed'")
    );

    // A raw client must see the SCRAM challenge for an unknown user just as
    // for a known one (so probing cannot tell them apart before the proof).
    expect_unknown_user_refused(&ep.addr(), "no_such_user", "app").await?;

    // Failed logins leave the proxy healthy.
    check_login(&bed, "app", "app").await?;
    bed.ensure_proxy_alive()
}
