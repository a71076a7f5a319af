//! `[auth_query]`: users that are not in `[users]` are looked up on the
//! server (default query on `pg_shadow`, run as a configured user), and the
//! password the server stores is used both to check the client and, by
//! pass-through, to log in to the servers as that user.
//!
//! Roles created here exist only on the server: a SCRAM role and an md5
//! role (stored with `password_encryption = 'md5'`, allowed by an `md5`
//! pg_hba line, and challenged with md5 by the proxy). Wrong passwords and
//! unknown roles get 28P01. A password changed on the server applies once
//! the cached answer expires (`cache_ttl`), both to client logins and to the
//! server connections the pool opens afterwards. Also: `auth_query.user`
//! must be a `[users]` entry, which `switchyard check-config` enforces,
//! naming the key.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use switchyard_tests::client::connect;
use switchyard_tests::raw::{self, expect_unknown_user_refused, Challenge, RawConn, Startup};
use switchyard_tests::tools::run_command;
use switchyard_tests::{
    env, expect_sqlstate, roles, scratch, skip_if_direct, ClusterOptions, Endpoint, PgCluster, PgResultExt,
    Proxy, ProxyConfig, TestBed,
};

/// A SCRAM role known only to the server.
const SCRAM_ROLE: (&str, &str) = ("aq_scram", "aq-scram-secret");
/// A role whose server-side password is an md5 hash.
const MD5_ROLE: (&str, &str) = ("aq_md5", "aq-md5-secret");

/// A cluster with the two roles above (the md5 one allowed with `md5` in
/// pg_hba, as the server cannot do SCRAM with an md5 hash) and a proxy that
/// knows neither: it looks them up as `postgres` with the default query.
fn auth_query_bed(configure: impl FnOnce(ProxyConfig) -> ProxyConfig) -> Result<TestBed> {
    let opts = ClusterOptions::default().hba_first(&format!("host all {} 127.0.0.1/32 md5", MD5_ROLE.0))?;
    let bed = TestBed::start_full(opts, |cfg, _| {
        for (role, _) in [SCRAM_ROLE, MD5_ROLE] {
            ensure!(
                !cfg.users.contains_key(role),
                "{role} must not be in [users] for these tests"
            );
        }
        Ok(configure(cfg.set("auth_query.user", roles::SUPERUSER.0)))
    })?;
    // Created after the proxy started: it can only learn of them by asking.
    bed.pg().primary().admin_sql(
        "postgres",
        &format!(
            "SET password_encryption = 'scram-sha-256';\n\
             CREATE ROLE {} LOGIN PASSWORD '{}';\n\
             SET password_encryption = 'md5';\n\
             CREATE ROLE {} LOGIN PASSWORD '{}';\n",
            SCRAM_ROLE.0, SCRAM_ROLE.1, MD5_ROLE.0, MD5_ROLE.1
        ),
    )?;
    Ok(bed)
}

/// What the server stores as `role`'s password.
fn stored_password(bed: &TestBed, role: &str) -> Result<String> {
    Ok(bed
        .pg()
        .primary()
        .admin_sql(
            "postgres",
            &format!("SELECT rolpassword FROM pg_authid WHERE rolname = '{role}'"),
        )?
        .trim()
        .to_owned())
}

/// Log in as `user` and check that the *server* runs our queries as that
/// user; returns the server backend pid the query ran on.
async fn check_login(ep: &Endpoint, user: &str, password: &str) -> Result<i32> {
    let client = ep.connect(user, password, roles::APP_DB).await?;
    let row = client
        .query_one(
            "SELECT current_user::text, session_user::text, pg_backend_pid()",
            &[],
        )
        .await
        .ctx("query after login")?;
    let (cur, sess, pid): (String, String, i32) = (row.get(0), row.get(1), row.get(2));
    ensure!(
        cur == user && sess == user,
        "logged in as {user} but the server says current_user = {cur}, session_user = {sess}"
    );
    Ok(pid)
}

#[tokio::test]
async fn scram_role_on_the_server_logs_in() -> Result<()> {
    let mut bed = auth_query_bed(|cfg| cfg)?;
    ensure!(
        stored_password(&bed, SCRAM_ROLE.0)?.starts_with("SCRAM-SHA-256$"),
        "setup: {} should have a SCRAM verifier",
        SCRAM_ROLE.0
    );
    let ep = bed.endpoint();
    let (user, password) = SCRAM_ROLE;
    check_login(&ep, user, password).await?;

    // The proxy challenges with SCRAM (the stored password is a verifier).
    let mut raw = RawConn::connect(&ep.addr()).await?;
    match raw
        .startup(&[("user", user), ("database", roles::APP_DB)], password)
        .await?
    {
        Startup::Ready => {}
        Startup::Error(e) => bail!("raw SCRAM login of {user} failed: {}", e.describe()),
    }
    ensure!(
        raw.auth_requests.first() == Some(&10),
        "expected a SASL (SCRAM) challenge for {user}, got auth requests {:?}",
        raw.auth_requests
    );
    let who = raw.query_one_value("SELECT current_user").await?;
    ensure!(who.as_deref() == Some(user), "server says current_user = {who:?}");

    // psql (libpq) too.
    let out = ep
        .psql(user, password, roles::APP_DB)
        .run_async("SELECT current_user")
        .await?;
    out.ensure_success()?;
    ensure!(out.stdout.trim() == user, "psql printed {:?}", out.stdout);
    bed.ensure_proxy_alive()
}

#[tokio::test]
async fn wrong_password_and_unknown_role_get_28p01() -> Result<()> {
    let mut bed = auth_query_bed(|cfg| cfg)?;
    let ep = bed.endpoint();

    let wrong = connect(&ep.config(SCRAM_ROLE.0, "not-the-password", roles::APP_DB)).await;
    let wrong = expect_sqlstate(wrong, &["28P01"], "SCRAM role, wrong password")?;

    let wrong_md5 = connect(&ep.config(MD5_ROLE.0, "not-the-password", roles::APP_DB)).await;
    expect_sqlstate(wrong_md5, &["28P01"], "md5 role, wrong password")?;

    let unknown = connect(&ep.config("aq_no_such_role", "whatever", roles::APP_DB)).await;
    let unknown = expect_sqlstate(unknown, &["28P01"], "role unknown to the server and the proxy")?;
    let msg = unknown.message().to_lowercase();
    for leak in ["exist", "unknown", "not found", "no such"] {
        ensure!(
            !msg.contains(leak),
            "the error for an unknown role must not reveal that it is unknown; got {:?} \
             (wrong-password message: {:?})",
            unknown.message(),
            wrong.message()
        );
    }
    // Same exchange as for a real role: a SCRAM challenge first.
    expect_unknown_user_refused(&ep.addr(), "aq_no_such_role", roles::APP_DB).await?;

    // A role that exists on the server but cannot log in (NOLOGIN, no
    // password) fails the same way, and failures leave the proxy healthy.
    bed.pg()
        .primary()
        .admin_sql("postgres", "CREATE ROLE aq_nologin NOLOGIN")?;
    let nologin = connect(&ep.config("aq_nologin", "whatever", roles::APP_DB)).await;
    expect_sqlstate(nologin, &["28P01", "28000"], "role without a password")?;
    check_login(&ep, SCRAM_ROLE.0, SCRAM_ROLE.1).await?;
    bed.ensure_proxy_alive()
}

#[tokio::test]
async fn md5_role_logs_in_with_md5() -> Result<()> {
    let mut bed = auth_query_bed(|cfg| cfg)?;
    let stored = stored_password(&bed, MD5_ROLE.0)?;
    ensure!(
        stored.starts_with("md5") && stored.len() == 35,
        "setup: {} should have an md5 hash, has {stored:?}",
        MD5_ROLE.0
    );
    let ep = bed.endpoint();
    let (user, password) = MD5_ROLE;
    let mut raw = RawConn::connect(&ep.addr()).await?;
    match raw
        .startup(&[("user", user), ("database", roles::APP_DB)], password)
        .await?
    {
        Startup::Ready => {}
        Startup::Error(e) => bail!("raw md5 login of {user} failed: {}", e.describe()),
    }
    ensure!(
        raw.auth_requests.first() == Some(&5),
        "expected an md5 challenge for a role stored as an md5 hash, got auth requests {:?}",
        raw.auth_requests
    );
    let who = raw.query_one_value("SELECT current_user").await?;
    ensure!(who.as_deref() == Some(user), "server says current_user = {who:?}");
    check_login(&ep, user, password).await?;
    let out = ep
        .psql(user, password, roles::APP_DB)
        .run_async("SELECT current_user")
        .await?;
    out.ensure_success()?;
    ensure!(out.stdout.trim() == user, "psql printed {:?}", out.stdout);
    bed.ensure_proxy_alive()
}

#[tokio::test]
async fn later_logins_reuse_the_pass_through_key() -> Result<()> {
    let mut bed = auth_query_bed(|cfg| cfg)?;
    let ep = bed.endpoint();
    let (user, password) = SCRAM_ROLE;

    // First login: the proxy learns the key from the client's proof.
    let first = ep.connect(user, password, roles::APP_DB).await?;
    first.batch_execute("BEGIN").await.ctx("BEGIN (first)")?;
    let pid1: i32 = first
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .ctx("first client")?
        .get(0);
    // Second login while the first holds its server connection: the proxy
    // must open another server connection as this role.
    let second = ep.connect(user, password, roles::APP_DB).await?;
    second.batch_execute("BEGIN").await.ctx("BEGIN (second)")?;
    let row = second
        .query_one("SELECT pg_backend_pid(), current_user::text", &[])
        .await
        .ctx("second client")?;
    let (pid2, who): (i32, String) = (row.get(0), row.get(1));
    ensure!(who == user, "second client runs as {who:?}");
    ensure!(
        pid1 != pid2,
        "two concurrent transactions ran on the same server connection ({pid1})"
    );
    first.batch_execute("COMMIT").await.ctx("COMMIT (first)")?;
    second.batch_execute("COMMIT").await.ctx("COMMIT (second)")?;
    drop(first);
    drop(second);

    // And again after both left (answer served from the cache).
    check_login(&ep, user, password).await?;
    bed.ensure_proxy_alive()
}

#[tokio::test]
async fn many_concurrent_logins_of_a_looked_up_role() -> Result<()> {
    // Each client derives its SCRAM keys (unoptimised, on the test's one thread): on a busy
    // machine the last of 40 may finish after the default 10 s login timeout.
    let mut bed = auth_query_bed(|cfg| cfg.pool_size(10).client_login_timeout("60s"))?;
    let ep = bed.endpoint();
    let (user, password) = SCRAM_ROLE;
    // From a cold cache: every client arrives before any lookup finished.
    let mut set = tokio::task::JoinSet::new();
    for i in 0..40 {
        let ep = ep.clone();
        set.spawn(async move {
            let client = ep.connect(user, password, roles::APP_DB).await?;
            let row = client
                .query_one("SELECT current_user::text, $1::int", &[&i])
                .await
                .ctx("query")?;
            let (who, n): (String, i32) = (row.get(0), row.get(1));
            ensure!(who == user && n == i, "client {i} got ({who:?}, {n})");
            Ok::<_, anyhow::Error>(())
        });
    }
    let mut errors = Vec::new();
    while let Some(r) = set.join_next().await {
        if let Err(e) = r? {
            errors.push(format!("{e:#}"));
        }
    }
    ensure!(
        errors.is_empty(),
        "{} of 40 concurrent logins of {user} failed:\n{}",
        errors.len(),
        errors.join("\n")
    );
    check_login(&ep, user, password).await?;
    bed.ensure_proxy_alive()
}

#[tokio::test]
async fn password_change_on_the_server_applies_after_cache_ttl() -> Result<()> {
    // cache_ttl = 0: every login asks the server.
    let mut bed = auth_query_bed(|cfg| cfg.set("auth_query.cache_ttl", "0s"))?;
    let ep = bed.endpoint();
    let (user, old) = SCRAM_ROLE;
    let new = "aq-scram-new-secret";
    check_login(&ep, user, old).await?;
    bed.pg()
        .primary()
        .admin_sql("postgres", &format!("ALTER ROLE {user} PASSWORD '{new}'"))?;

    let stale = connect(&ep.config(user, old, roles::APP_DB)).await;
    expect_sqlstate(stale, &["28P01"], "old password after ALTER ROLE ... PASSWORD")?;
    check_login(&ep, user, new).await?;
    // New server connections for this role must use the new password too:
    // hold several transactions at once so the pool has to open more.
    let mut clients = Vec::new();
    let mut pids = Vec::new();
    for i in 0..4 {
        let c = ep
            .connect(user, new, roles::APP_DB)
            .await
            .with_context(|| format!("client {i} with the new password"))?;
        c.batch_execute("BEGIN")
            .await
            .ctx(&format!("client {i} (new password, logged in fine): BEGIN"))?;
        let pid: i32 = c
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .ctx(&format!("client {i}: first query in its transaction"))?
            .get(0);
        pids.push(pid);
        clients.push(c);
    }
    pids.sort_unstable();
    pids.dedup();
    ensure!(
        pids.len() == 4,
        "4 concurrent transactions shared server connections: {pids:?}"
    );
    for c in &clients {
        c.batch_execute("COMMIT").await.ctx("COMMIT")?;
    }
    bed.ensure_proxy_alive()
}

#[test]
fn auth_query_user_must_be_in_users() -> Result<()> {
    skip_if_direct!();
    let binary = env::proxy_binary()?;
    let pg = PgCluster::start()?;
    let dir = scratch::fresh_dir("auth-query-config")?;
    let check = |name: &str, cfg: &ProxyConfig| -> Result<(bool, String, String)> {
        let mut cfg = cfg.clone();
        cfg.proxy.listen = "127.0.0.1:6432".into();
        let text = cfg.to_toml()?;
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, &text)?;
        let out = run_command(
            std::process::Command::new(&binary).arg("check-config").arg(&path),
            None,
            Duration::from_secs(30),
        )?;
        Ok((out.status_ok, format!("{}{}", out.stdout, out.stderr), text))
    };

    let good = ProxyConfig::for_cluster(&pg).set("auth_query.user", roles::SUPERUSER.0);
    let (ok, output, text) = check("good", &good)?;
    ensure!(
        ok,
        "check-config rejected auth_query.user = a [users] entry:\n{output}\n--- config ---\n{text}"
    );

    let bad = ProxyConfig::for_cluster(&pg).set("auth_query.user", "aq_not_configured");
    let (ok, output, text) = check("bad", &bad)?;
    ensure!(
        !ok && output.contains("auth_query.user"),
        "check-config should reject auth_query.user not in [users] and name the key; \
         it {} with:\n{output}\n--- config ---\n{text}",
        if ok { "accepted it" } else { "failed" }
    );

    // The proxy refuses to start with it too.
    match Proxy::start(bad) {
        Ok(mut p) => {
            p.kill();
            bail!("switchyard started with auth_query.user not in [users]")
        }
        Err(e) => {
            let msg = format!("{e:#}");
            ensure!(
                msg.contains("auth_query.user"),
                "start-up failure should name auth_query.user:\n{msg}"
            );
        }
    }
    scratch::remove_dir(&dir);
    Ok(())
}

/// With `auth_query`, a role that exists on the server and names that exist nowhere are
/// challenged alike: the same mechanisms, iteration count and salt length; the existing role
/// gets its own salt from `pg_authid`, and each unknown name a salt of its own, stable across
/// attempts. Fails on the old code, where all unknown names shared one decoy salt.
#[tokio::test]
async fn existing_and_unknown_roles_are_challenged_alike() -> Result<()> {
    skip_if_direct!();
    let mut bed = auth_query_bed(|cfg| cfg)?;
    let ep = bed.endpoint();
    let stored = stored_password(&bed, SCRAM_ROLE.0)?;
    let (real_mech, real_salt, real_iter) = raw::scram_challenge(&ep.addr(), SCRAM_ROLE.0).await?;
    let (a_mech, a_salt, a_iter) = raw::scram_challenge(&ep.addr(), "aq_ghost_a").await?;
    let (_, a_salt2, _) = raw::scram_challenge(&ep.addr(), "aq_ghost_a").await?;
    let (b_mech, b_salt, b_iter) = raw::scram_challenge(&ep.addr(), "aq_ghost_b").await?;
    ensure!(
        real_mech == a_mech && a_mech == b_mech,
        "mechanisms differ: {real_mech:?} {a_mech:?} {b_mech:?}"
    );
    ensure!(
        real_iter == a_iter && a_iter == b_iter,
        "iterations differ: existing {real_iter}, unknown {a_iter} and {b_iter}"
    );
    ensure!(
        real_salt.len() == a_salt.len() && a_salt.len() == b_salt.len(),
        "salt lengths differ: {} {} {}",
        real_salt.len(),
        a_salt.len(),
        b_salt.len()
    );
    let real_b64 = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(&real_salt)
    };
    ensure!(
        stored.contains(&format!(":{real_b64}$")),
        "the existing role is not challenged with its own salt ({real_b64}); pg_authid has {stored}"
    );
    ensure!(
        a_salt == a_salt2,
        "an unknown name's salt changed between attempts"
    );
    ensure!(a_salt != b_salt, "two unknown names share one salt");
    ensure!(
        a_salt != real_salt,
        "an unknown name got the existing role's salt"
    );
    bed.ensure_proxy_alive()
}

/// The default query refuses a password past the role's `VALID UNTIL`: such a role gets
/// 28P01 from the proxy even though the server itself trusts it (pg_hba `trust`, so only the
/// proxy checks the password), while a role valid until a future date logs in.
/// Fails on the old code, whose default query ignored `valuntil`.
#[tokio::test]
async fn expired_password_cannot_log_in() -> Result<()> {
    skip_if_direct!();
    let opts = ClusterOptions::default()
        .hba_first("host all aq_expired 127.0.0.1/32 trust\nhost all aq_valid 127.0.0.1/32 trust")?;
    let mut bed = TestBed::start_full(opts, |cfg, _| Ok(cfg.set("auth_query.user", roles::SUPERUSER.0)))?;
    bed.pg().primary().admin_sql(
        "postgres",
        "SET password_encryption = 'scram-sha-256';\n\
         CREATE ROLE aq_expired LOGIN PASSWORD 'expired-secret' VALID UNTIL '2001-01-01';\n\
         CREATE ROLE aq_valid LOGIN PASSWORD 'valid-secret' VALID UNTIL '2999-01-01';\n\
         GRANT ALL ON DATABASE app TO aq_expired, aq_valid;",
    )?;
    let ep = bed.endpoint();
    let expired = connect(&ep.config("aq_expired", "expired-secret", roles::APP_DB)).await;
    expect_sqlstate(expired, &["28P01"], "role whose password expired in 2001")?;
    check_login(&ep, "aq_valid", "valid-secret").await?;
    bed.ensure_proxy_alive()
}

/// Connections the auth user holds on the primary now (not counting `psql` and the
/// connection asking).
async fn auth_user_connections(watcher: &tokio_postgres::Client) -> Result<i64> {
    let row = watcher
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = 'postgres' \
             AND backend_type = 'client backend' AND pid <> pg_backend_pid() \
             AND application_name <> 'psql'",
            &[],
        )
        .await
        .ctx("counting the auth user's connections")?;
    Ok(row.get(0))
}

/// A flood of 200 concurrent logins with random unknown names: the lookups never hold more
/// server connections than `auth_query.pool_size` (2; sampled in `pg_stat_activity` all
/// along), every flooded login is challenged (its name looked up), or refused with 53300
/// once too many lookups wait (or 08006 if one outlives `auth_query.timeout` on a loaded
/// machine), and
/// meanwhile a configured user and a looked-up role logged in earlier (cached) log in and
/// query. A role created afterwards under a flooded name logs in once the cached "unknown"
/// answer expires (`cache_ttl`). Fails on the old code, which opened one server connection
/// per lookup.
#[tokio::test]
async fn a_flood_of_unknown_names_stays_within_the_lookup_pool() -> Result<()> {
    skip_if_direct!();
    let mut bed = auth_query_bed(|cfg| cfg.set("auth_query.cache_ttl", "2s"))?;
    let ep = bed.endpoint();
    // Logged in once: its answer is cached for the flood.
    check_login(&ep, SCRAM_ROLE.0, SCRAM_ROLE.1).await?;
    let watcher = bed
        .direct()
        .connect(roles::SUPERUSER.0, roles::SUPERUSER.1, "postgres")
        .await
        .context("watcher connection to the primary")?;
    let idle_before = auth_user_connections(&watcher).await?;

    let flooding = Arc::new(AtomicBool::new(true));
    let sampler = {
        let flooding = flooding.clone();
        tokio::spawn(async move {
            let mut max = 0;
            while flooding.load(Ordering::Relaxed) {
                max = max.max(auth_user_connections(&watcher).await?);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Ok::<_, anyhow::Error>((max, watcher))
        })
    };
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..200 {
        let addr = ep.addr();
        // Up to the challenge, which comes after the lookup: no client-side key derivation,
        // so the flood is as fast as the proxy lets it be.
        set.spawn(async move {
            let user = format!("aq_flood_{i}");
            let mut raw = RawConn::connect(&addr).await?;
            raw.challenge(&[("user", &user), ("database", roles::APP_DB)])
                .await
        });
    }
    // Meanwhile, users that need no lookup log in.
    check_login(&ep, roles::APP.0, roles::APP.1).await?;
    check_login(&ep, SCRAM_ROLE.0, SCRAM_ROLE.1).await?;
    let mut codes = std::collections::BTreeMap::<String, usize>::new();
    while let Some(r) = set.join_next().await {
        let code = match r?? {
            Challenge::Scram { .. } => "challenged".to_string(),
            Challenge::Error(code, message) => {
                ensure!(
                    code == "53300" || code == "08006",
                    "a flooded login got {code} {message}"
                );
                code
            }
            other => bail!("a flooded login got {other:?}"),
        };
        *codes.entry(code).or_default() += 1;
    }
    let flood_time = started.elapsed();
    flooding.store(false, Ordering::Relaxed);
    let (max, watcher) = sampler.await??;
    println!(
        "200 unknown-name logins in {flood_time:?}: {codes:?}; auth user's connections: {idle_before} before, at most {max} during"
    );
    ensure!(
        max <= 2,
        "the lookups held {max} server connections at once; auth_query.pool_size is 2"
    );
    ensure!(
        auth_user_connections(&watcher).await? <= 2,
        "lookup connections left open beyond the pool size"
    );

    // A role created under a flooded name becomes usable once the answer expires.
    bed.pg()
        .primary()
        .admin_sql("postgres", "CREATE ROLE aq_flood_7 LOGIN PASSWORD 'flood-secret'")?;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    check_login(&ep, "aq_flood_7", "flood-secret").await?;
    bed.ensure_proxy_alive()
}

/// A lookup that fails on the server (here the query names a missing table) gives the
/// client a generic FATAL 08006 that says nothing of the server's error (no table name, no
/// "relation", no "auth_query"), while the proxy's log has the server's message.
/// Fails on the old code, which passed the server's error text to the client.
#[tokio::test]
async fn a_failing_lookup_tells_the_client_nothing_of_the_server() -> Result<()> {
    skip_if_direct!();
    let mut bed = auth_query_bed(|cfg| {
        cfg.set(
            "auth_query.query",
            "SELECT usename, passwd FROM aq_missing_table WHERE usename = $1",
        )
    })?;
    let ep = bed.endpoint();
    let mut raw = RawConn::connect(&ep.addr()).await?;
    let e = match raw
        .startup(&[("user", "aq_whoever"), ("database", roles::APP_DB)], "x")
        .await?
    {
        Startup::Error(e) => e,
        Startup::Ready => bail!("logged in although the lookup cannot work"),
    };
    let text = format!("{} {:?} {:?}", e.describe(), e.field(b'D'), e.field(b'H'));
    ensure!(
        e.sqlstate().as_deref() == Some("08006"),
        "expected 08006 for a failing lookup, got {text}"
    );
    for leak in ["aq_missing_table", "relation", "auth_query", "does not exist"] {
        ensure!(!text.contains(leak), "the client sees {leak:?} in {text}");
    }
    // A configured user is not affected.
    check_login(&ep, roles::APP.0, roles::APP.1).await?;
    let log = bed.proxy().expect("not direct").log();
    ensure!(
        log.contains("aq_missing_table"),
        "the proxy's log should name the server's error; log tail:\n{}",
        bed.proxy().expect("not direct").log_tail(20)
    );
    bed.ensure_proxy_alive()
}
