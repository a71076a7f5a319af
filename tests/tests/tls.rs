//! TLS on both sides of the proxy.
//!
//! Client-facing: with `[proxy] tls_cert/tls_key` the proxy answers
//! SSLRequest with `S` and libpq's `sslmode=require` and `verify-full` work
//! (the latter proving the proxy presents the configured certificate);
//! without them it answers `N`, so `sslmode=require` is refused by libpq
//! while `prefer` and `disable` still work.
//!
//! Server-facing: against a PostgreSQL with `ssl=on` whose pg_hba accepts
//! `app` only over SSL (`hostssl`), `[pool] server_tls = "require"`,
//! `"prefer"` and `"verify-full"` (with the right CA, or with the server's
//! own self-signed certificate as the root, as libpq allows) reach the
//! server over TLS (`pg_stat_ssl` says so); `verify-full` with another CA,
//! `require` against a server without SSL, and `disable` against the
//! hostssl-only rule fail with a clean error carrying a SQLSTATE, and the
//! proxy keeps serving the pools that work.
//!
//! Client authentication over TLS (issue 18): client certificates and the
//! `cert` method, SCRAM-SHA-256-PLUS channel binding, `client_tls = "require"`,
//! `auth_hba_file` rules and their reload, pgbench and psycopg over TLS under
//! load, and hostile handshakes (garbage after SSLRequest, a second
//! SSLRequest, GSSENCRequest).
//!
//! Certificates are made with the `openssl` CLI in the test's scratch
//! directory, for `IP:127.0.0.1` and `DNS:localhost`; client certificates
//! carry the user name as their common name.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use bytes::BytesMut;
use switchyard_tests::client::{connect, describe_error};
use switchyard_tests::pki::{CertKey, Pki};
use switchyard_tests::proxy::{ClusterSection, DatabaseSection, NodeEntry};
use switchyard_tests::raw::{RawConn, Startup};
use switchyard_tests::tls::{connect_tls, EndPoint, RustlsConnect};
use switchyard_tests::tools::{Driver, Length, QueryMode};
use switchyard_tests::{
    roles, scratch, skip_if_direct, ClusterOptions, Endpoint, PgCluster, PgResultExt, Proxy, ProxyConfig,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

// ------------------------------------------------------------------ helpers

/// pg_hba rules ahead of the standard ones: `app` may log in over TCP only
/// with SSL; plaintext attempts are rejected (28000).
const APP_HOSTSSL_ONLY: &str = "\
hostnossl all app 127.0.0.1/32 reject
hostssl   all app 127.0.0.1/32 scram-sha-256
";

/// A primary with `ssl=on` serving `server` as its certificate, on which
/// `app` may connect over TCP only with SSL.
fn ssl_cluster(pki: &Pki, server: &CertKey) -> Result<PgCluster> {
    pki.hand_to_postgres()?;
    let opts = ClusterOptions::default()
        .setting("ssl", "on")
        .setting("ssl_cert_file", path_str(&server.cert))
        .setting("ssl_key_file", path_str(&server.key))
        .hba_first(APP_HOSTSSL_ONLY)?;
    PgCluster::start_with(opts)
}

/// Proxy for `pg` with `[pool] server_tls = mode` (and `server_tls_ca`).
fn proxy_with_server_tls(pg: &PgCluster, mode: &str, ca: Option<&Path>) -> Result<Proxy> {
    let mut cfg = ProxyConfig::for_cluster(pg).set("pool.server_tls", mode);
    if let Some(ca) = ca {
        cfg = cfg.set("pool.server_tls_ca", path_str(ca));
    }
    Proxy::start(cfg)
}

fn endpoint(proxy: &Proxy) -> Endpoint {
    Endpoint::new(&proxy.host(), proxy.port())
}

/// Log in as `app` and check, on the server, who we are and whether the
/// server connection the query ran on is encrypted.
async fn server_ssl_as_app(ep: &Endpoint) -> Result<bool> {
    let client = ep.connect_app().await?;
    let row = client
        .query_one(
            "SELECT current_user::text, ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .ctx("pg_stat_ssl for the server connection")?;
    let (user, ssl): (String, bool) = (row.get(0), row.get(1));
    ensure!(user == roles::APP.0, "the server says current_user = {user:?}");
    Ok(ssl)
}

/// Connect as `user` and run a query, expecting a server error (at login or
/// at the query, wherever the proxy reports it); returns its SQLSTATE and
/// description.
async fn expect_server_error(
    ep: &Endpoint,
    user: (&str, &str),
    db: &str,
    what: &str,
) -> Result<(String, String)> {
    let result = async {
        let client = connect(&ep.config(user.0, user.1, db)).await?;
        client.query_one("SELECT 1", &[]).await
    }
    .await;
    match result {
        Ok(_) => bail!("{what}: expected an error, but login and query succeeded"),
        Err(e) => match e.as_db_error() {
            Some(db) => Ok((db.code().code().to_owned(), describe_error(&e))),
            None => bail!(
                "{what}: expected a server error with a SQLSTATE, got a non-server error \
                 (connection dropped?): {}",
                describe_error(&e)
            ),
        },
    }
}

// ------------------------------------------------------------------ client-facing TLS

#[tokio::test]
async fn client_tls_with_sslmode_require_and_verify_full() -> Result<()> {
    skip_if_direct!();
    let pki = Pki::new()?;
    let cert = pki.self_signed("proxy")?;
    let other = pki.self_signed("other")?;
    let pg = PgCluster::start()?;
    let mut cfg = ProxyConfig::for_cluster(&pg);
    cfg.proxy.tls_cert = Some(path_str(&cert.cert));
    cfg.proxy.tls_key = Some(path_str(&cert.key));
    let mut proxy = Proxy::start(cfg)?;
    let ep = endpoint(&proxy);
    let (user, password) = roles::APP;

    // sslmode=require: encrypted, without verification.
    let out = ep
        .psql(user, password, roles::APP_DB)
        .env("PGSSLMODE", "require")
        .run_async("SELECT current_user || '@' || current_database()")
        .await?;
    out.ensure_success()?;
    ensure!(
        out.stdout.trim() == "app@app",
        "psql (sslmode=require) printed {:?}",
        out.stdout
    );
    let out = ep
        .psql(user, password, roles::APP_DB)
        .env("PGSSLMODE", "require")
        .run_async("\\conninfo")
        .await?;
    out.ensure_success()?;
    ensure!(
        out.stdout.contains("SSL connection"),
        "psql with sslmode=require is not on an SSL connection; \\conninfo printed {:?}",
        out.stdout
    );

    // verify-full: libpq checks the chain against the certificate and the
    // host name against its subjectAltName (IP and DNS).
    for host in ["127.0.0.1", "localhost"] {
        let out = Endpoint::new(host, proxy.port())
            .psql(user, password, roles::APP_DB)
            .env("PGSSLMODE", "verify-full")
            .env("PGSSLROOTCERT", &path_str(&cert.cert))
            .run_async("SELECT count(*) FROM generate_series(1, 1000)")
            .await?;
        out.ensure_success()
            .with_context(|| format!("psql sslmode=verify-full host={host}"))?;
        ensure!(
            out.stdout.trim() == "1000",
            "psql (verify-full, host={host}) printed {:?}",
            out.stdout
        );
    }

    // ...and the proxy really presents the configured certificate: another
    // root does not verify it.
    let out = ep
        .psql(user, password, roles::APP_DB)
        .env("PGSSLMODE", "verify-full")
        .env("PGSSLROOTCERT", &path_str(&other.cert))
        .run_async("SELECT 1")
        .await?;
    ensure!(
        !out.status_ok && out.stderr.contains("certificate verify failed"),
        "{}",
        out.describe("verify-full against an unrelated root should fail with 'certificate verify failed'")
    );

    // Plaintext clients are still served by a TLS-enabled proxy.
    let out = ep
        .psql(user, password, roles::APP_DB)
        .env("PGSSLMODE", "disable")
        .run_async("SELECT 1")
        .await?;
    out.ensure_success()?;
    let client = ep.connect_app().await?;
    let n: i32 = client
        .query_one("SELECT 7", &[])
        .await
        .ctx("plaintext query")?
        .get(0);
    ensure!(n == 7, "plaintext client got {n}");
    proxy.ensure_running()
}

#[tokio::test]
async fn proxy_without_tls_refuses_sslmode_require() -> Result<()> {
    skip_if_direct!();
    let pg = PgCluster::start()?;
    let mut proxy = Proxy::start(ProxyConfig::for_cluster(&pg))?;
    let ep = endpoint(&proxy);
    let (user, password) = roles::APP;

    let out = ep
        .psql(user, password, roles::APP_DB)
        .env("PGSSLMODE", "require")
        .run_async("SELECT 1")
        .await?;
    ensure!(
        !out.status_ok && out.stderr.contains("server does not support SSL"),
        "{}",
        out.describe(
            "sslmode=require against a proxy without TLS should fail with 'server does not support SSL'"
        )
    );

    for mode in ["prefer", "disable", "allow"] {
        let out = ep
            .psql(user, password, roles::APP_DB)
            .env("PGSSLMODE", mode)
            .run_async("SELECT current_user")
            .await?;
        out.ensure_success()
            .with_context(|| format!("psql sslmode={mode}"))?;
        ensure!(
            out.stdout.trim() == user,
            "psql (sslmode={mode}) printed {:?}",
            out.stdout
        );
    }
    proxy.ensure_running()
}

// ------------------------------------------------------------------ server-facing TLS

#[tokio::test]
async fn server_tls_require_and_prefer_encrypt_server_connections() -> Result<()> {
    skip_if_direct!();
    let pki = Pki::new()?;
    let server = pki.self_signed("server")?;
    let pg = ssl_cluster(&pki, &server)?;
    for mode in ["require", "prefer"] {
        let mut proxy = proxy_with_server_tls(&pg, mode, None)?;
        let ep = endpoint(&proxy);
        let ssl = server_ssl_as_app(&ep)
            .await
            .with_context(|| format!("server_tls = {mode:?}"))?;
        ensure!(
            ssl,
            "server_tls = {mode:?}: pg_stat_ssl says the server connection is not encrypted"
        );
        // Other users go over TLS as well.
        let client = ep.connect(roles::MD5.0, roles::MD5.1, roles::APP_DB).await?;
        let ssl: bool = client
            .query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[])
            .await
            .ctx("pg_stat_ssl as md5user")?
            .get(0);
        ensure!(
            ssl,
            "server_tls = {mode:?}: md5user's server connection is not encrypted"
        );
        proxy.ensure_running()?;
    }
    Ok(())
}

#[tokio::test]
async fn server_tls_verify_full_with_the_servers_ca() -> Result<()> {
    skip_if_direct!();
    let pki = Pki::new()?;
    let ca = pki.ca("ca")?;
    let server = pki.issue(&ca, "server")?;
    let pg = ssl_cluster(&pki, &server)?;
    let mut proxy = proxy_with_server_tls(&pg, "verify-full", Some(&ca.cert))?;
    let ep = endpoint(&proxy);
    ensure!(
        server_ssl_as_app(&ep).await?,
        "verify-full: pg_stat_ssl says the server connection is not encrypted"
    );
    // Several server connections (concurrent transactions), all verified.
    let mut clients = Vec::new();
    for _ in 0..4 {
        let c = ep.connect_app().await?;
        c.batch_execute("BEGIN").await.ctx("BEGIN")?;
        clients.push(c);
    }
    for c in &clients {
        let ssl: bool = c
            .query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[])
            .await
            .ctx("pg_stat_ssl in a transaction")?
            .get(0);
        ensure!(ssl, "verify-full: a server connection is not encrypted");
        c.batch_execute("COMMIT").await.ctx("COMMIT")?;
    }
    proxy.ensure_running()
}

#[tokio::test]
async fn server_tls_verify_full_with_a_self_signed_server_certificate() -> Result<()> {
    skip_if_direct!();
    // The PostgreSQL docs' quick recipe: a self-signed server certificate
    // that clients use as their root (libpq: sslrootcert=server.crt).
    let pki = Pki::new()?;
    let server = pki.self_signed("server")?;
    let pg = ssl_cluster(&pki, &server)?;

    // libpq itself accepts this setup against the server directly.
    let direct = Endpoint::new(pg.primary().host(), pg.primary().port());
    let out = direct
        .psql(roles::APP.0, roles::APP.1, roles::APP_DB)
        .env("PGSSLMODE", "verify-full")
        .env("PGSSLROOTCERT", &path_str(&server.cert))
        .run_async("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .await?;
    out.ensure_success()
        .context("libpq verify-full against the server with its self-signed certificate as root")?;
    ensure!(out.stdout.trim() == "t", "direct psql printed {:?}", out.stdout);

    let mut proxy = proxy_with_server_tls(&pg, "verify-full", Some(&server.cert))?;
    let ssl = server_ssl_as_app(&endpoint(&proxy))
        .await
        .context("server_tls = verify-full with server_tls_ca = the server's self-signed certificate")?;
    ensure!(
        ssl,
        "verify-full: pg_stat_ssl says the server connection is not encrypted"
    );
    proxy.ensure_running()
}

#[tokio::test]
async fn server_tls_verify_full_with_another_ca_fails_cleanly() -> Result<()> {
    skip_if_direct!();
    let pki = Pki::new()?;
    let good_ca = pki.ca("good-ca")?;
    let bad_ca = pki.ca("bad-ca")?;
    let good_cert = pki.issue(&good_ca, "good-server")?;
    let bad_cert = pki.issue(&bad_ca, "bad-server")?;
    let good = ssl_cluster(&pki, &good_cert)?;
    let bad = ssl_cluster(&pki, &bad_cert)?;

    // Database `app` lives on the server the CA vouches for; database
    // `untrusted` on one whose certificate comes from another CA.
    let mut cfg = ProxyConfig::for_cluster(&good)
        .set("pool.server_tls", "verify-full")
        .set("pool.server_tls_ca", path_str(&good_ca.cert));
    cfg.clusters.insert(
        "other".to_owned(),
        ClusterSection {
            nodes: vec![NodeEntry {
                host: bad.primary().host().to_owned(),
                port: bad.primary().port(),
                role: "primary".to_owned(),
                patroni_api: None,
            }],
        },
    );
    cfg.databases.insert(
        "untrusted".to_owned(),
        DatabaseSection {
            cluster: "other".to_owned(),
            dbname: Some(roles::APP_DB.to_owned()),
            ..Default::default()
        },
    );
    let mut proxy = Proxy::start(cfg)?;
    let ep = endpoint(&proxy);

    for attempt in 1..=3 {
        let (code, desc) =
            expect_server_error(&ep, roles::APP, "untrusted", "database on the untrusted server")
                .await
                .with_context(|| format!("attempt {attempt}"))?;
        ensure!(
            code.starts_with("08"),
            "attempt {attempt}: a server failing certificate verification should be a connection \
             exception (class 08), got {desc}"
        );
        // The other pool is unaffected.
        ensure!(
            server_ssl_as_app(&ep).await?,
            "verify-full: pg_stat_ssl says the server connection is not encrypted"
        );
    }
    // The refusal is the proxy's own (certificate verification), not a
    // server's, and the log says so.
    let log = proxy.log();
    ensure!(
        log.to_lowercase().contains("certificate"),
        "the proxy log should say why the untrusted server was refused (certificate)\n--- log ---\n{}",
        proxy.log_tail(40)
    );
    proxy.ensure_running()
}

#[tokio::test]
async fn server_tls_disable_against_hostssl_only_gets_the_servers_rejection() -> Result<()> {
    skip_if_direct!();
    let pki = Pki::new()?;
    let server = pki.self_signed("server")?;
    let pg = ssl_cluster(&pki, &server)?;
    let mut proxy = proxy_with_server_tls(&pg, "disable", None)?;
    let ep = endpoint(&proxy);
    for attempt in 1..=2 {
        let (code, desc) = expect_server_error(
            &ep,
            roles::APP,
            roles::APP_DB,
            "app over a plaintext server connection",
        )
        .await
        .with_context(|| format!("attempt {attempt}"))?;
        ensure!(
            code == "28000" && desc.contains("pg_hba.conf"),
            "attempt {attempt}: expected the server's pg_hba rejection (28000), got {desc}"
        );
        // Users the server accepts without SSL keep working.
        let client = ep.connect(roles::MD5.0, roles::MD5.1, roles::APP_DB).await?;
        let ssl: bool = client
            .query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[])
            .await
            .ctx("pg_stat_ssl as md5user")?
            .get(0);
        ensure!(
            !ssl,
            "server_tls = \"disable\" but the server connection is encrypted"
        );
    }
    proxy.ensure_running()
}

#[tokio::test]
async fn server_tls_require_against_a_server_without_ssl_fails_cleanly() -> Result<()> {
    skip_if_direct!();
    let pg = PgCluster::start()?;
    let mut proxy = proxy_with_server_tls(&pg, "require", None)?;
    let ep = endpoint(&proxy);
    for attempt in 1..=2 {
        let (code, desc) = expect_server_error(&ep, roles::APP, roles::APP_DB, "require against ssl=off")
            .await
            .with_context(|| format!("attempt {attempt}"))?;
        ensure!(
            code.starts_with("08"),
            "attempt {attempt}: a server without SSL under server_tls = \"require\" should be a \
             connection exception (class 08), got {desc}"
        );
    }
    // `prefer` falls back to plaintext against the same server.
    let mut prefer = proxy_with_server_tls(&pg, "prefer", None)?;
    ensure!(
        !server_ssl_as_app(&endpoint(&prefer)).await?,
        "server_tls = \"prefer\" against ssl=off: pg_stat_ssl says encrypted"
    );
    prefer.ensure_running()?;
    proxy.ensure_running()
}

// ------------------------------------------------------------------ client certificates, channel binding

/// A proxy certificate issued by a CA of its own (clients verify it with `proxy-ca.crt`),
/// and a proxy config using it for client-facing TLS.
struct TlsProxy {
    proxy_ca: CertKey,
    cfg: ProxyConfig,
}

fn tls_proxy(pki: &Pki, pg: &PgCluster) -> Result<TlsProxy> {
    let proxy_ca = pki.ca("proxy-ca")?;
    let cert = pki.issue(&proxy_ca, "proxy")?;
    let mut cfg = ProxyConfig::for_cluster(pg);
    cfg.proxy.tls_cert = Some(path_str(&cert.cert));
    cfg.proxy.tls_key = Some(path_str(&cert.key));
    Ok(TlsProxy { proxy_ca, cfg })
}

/// tokio-postgres over TLS (rustls), verifying the proxy against `ca`, with an optional
/// client certificate.
fn rustls(ca: &CertKey, client: Option<&CertKey>, end_point: EndPoint) -> Result<RustlsConnect> {
    RustlsConnect::new(
        &ca.cert,
        client.map(|c| (c.cert.as_path(), c.key.as_path())),
        end_point,
    )
}

/// The server error a login attempt ended in: (SQLSTATE, message, detail).
async fn login_refused(
    cfg: &tokio_postgres::Config,
    tls: Option<RustlsConnect>,
    what: &str,
) -> Result<(String, String, String)> {
    let result = async {
        let client = match tls {
            Some(tls) => connect_tls(cfg, tls).await?,
            None => connect(cfg).await?,
        };
        client.simple_query("SELECT 1").await
    }
    .await;
    let e = match result {
        Ok(_) => bail!("{what}: expected the login to be refused, but it succeeded"),
        Err(e) => e,
    };
    let Some(db) = e.as_db_error() else {
        bail!(
            "{what}: expected a server error with a SQLSTATE, got {}",
            describe_error(&e)
        );
    };
    let found = (
        db.code().code().to_owned(),
        db.message().to_owned(),
        db.detail().unwrap_or_default().to_owned(),
    );
    println!("{what}: refused with {} {} ({})", found.0, found.1, found.2);
    Ok(found)
}

async fn current_user(client: &tokio_postgres::Client) -> Result<String> {
    let rows = client
        .simple_query("SELECT current_user")
        .await
        .ctx("SELECT current_user")?;
    rows.iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .context("no row from SELECT current_user")
}

/// `[proxy] tls_client_ca` and `auth = "cert"` for `app`: psql (libpq, `sslmode=verify-full`
/// with `sslcert`/`sslkey`) and tokio-postgres (rustls) log in as `app` with a certificate
/// whose CN is `app` from the client CA, no password asked, and the query runs as `app` on
/// the server. Refused with 28000, each with its message: no certificate ("connection
/// requires a valid client certificate"), a certificate for CN `app` from another CA and
/// one from the right CA for CN `md5user` ("certificate authentication failed for user
/// \"app\"", the detail saying why: not trusted / the common name). psql shows the same
/// message. The password user `md5user` still logs in with its password, over TLS with and
/// without a certificate and over plaintext.
#[tokio::test]
async fn client_certificates_log_in_cert_users_and_refuse_the_rest() -> Result<()> {
    skip_if_direct!();
    let pki = Pki::new()?;
    let pg = PgCluster::start()?;
    let TlsProxy { proxy_ca, cfg } = tls_proxy(&pki, &pg)?;
    let client_ca = pki.ca("client-ca")?;
    let rogue_ca = pki.ca("rogue-ca")?;
    let app_cert = pki.client(&client_ca, "app-client", "app")?;
    let rogue_app = pki.client(&rogue_ca, "rogue-app", "app")?;
    let md5_cert = pki.client(&client_ca, "md5user-client", roles::MD5.0)?;
    let cfg = cfg
        .set("proxy.tls_client_ca", path_str(&client_ca.cert))
        .set("users.app.auth", "cert");
    let mut proxy = Proxy::start(cfg)?;
    let ep = endpoint(&proxy);
    let libpq_with = |cert: &CertKey| {
        ep.psql(roles::APP.0, "not-the-password", roles::APP_DB)
            .env("PGSSLMODE", "verify-full")
            .env("PGSSLROOTCERT", &path_str(&proxy_ca.cert))
            .env("PGSSLCERT", &path_str(&cert.cert))
            .env("PGSSLKEY", &path_str(&cert.key))
    };

    let out = libpq_with(&app_cert)
        .run_async("SELECT current_user || ' ' || (SELECT count(*) FROM generate_series(1, 100))")
        .await?;
    out.ensure_success().context("psql with app's certificate")?;
    ensure!(
        out.stdout.trim() == "app 100",
        "psql with app's certificate printed {:?}",
        out.stdout
    );

    let app_cfg = ep.config(roles::APP.0, "not-the-password", roles::APP_DB);
    let client = connect_tls(&app_cfg, rustls(&proxy_ca, Some(&app_cert), EndPoint::Real)?)
        .await
        .map_err(|e| anyhow::anyhow!("tokio-postgres with app's certificate: {}", describe_error(&e)))?;
    let user = current_user(&client).await?;
    ensure!(
        user == "app",
        "tokio-postgres with app's certificate is {user:?} on the server"
    );

    let (code, message, _) = login_refused(
        &app_cfg,
        Some(rustls(&proxy_ca, None, EndPoint::Real)?),
        "no certificate",
    )
    .await?;
    ensure!(
        code == "28000" && message == "connection requires a valid client certificate",
        "no certificate: got {code} {message}"
    );
    let (code, message, detail) = login_refused(
        &app_cfg,
        Some(rustls(&proxy_ca, Some(&rogue_app), EndPoint::Real)?),
        "another CA",
    )
    .await?;
    ensure!(
        code == "28000"
            && message == "certificate authentication failed for user \"app\""
            && detail.contains("not trusted"),
        "a certificate from another CA: got {code} {message} ({detail})"
    );
    let (code, message, detail) = login_refused(
        &app_cfg,
        Some(rustls(&proxy_ca, Some(&md5_cert), EndPoint::Real)?),
        "another user's certificate",
    )
    .await?;
    ensure!(
        code == "28000"
            && message == "certificate authentication failed for user \"app\""
            && detail.contains("common name is \"md5user\""),
        "md5user's certificate for app: got {code} {message} ({detail})"
    );
    let out = libpq_with(&rogue_app).run_async("SELECT 1").await?;
    ensure!(
        !out.status_ok
            && out
                .stderr
                .contains("certificate authentication failed for user \"app\""),
        "{}",
        out.describe("psql with a certificate from another CA should be refused")
    );

    // Password users need no certificate, and may present one.
    let md5_cfg = ep.config(roles::MD5.0, roles::MD5.1, roles::APP_DB);
    for (what, cert) in [
        ("without a certificate", None),
        ("with its certificate", Some(&md5_cert)),
    ] {
        let client = connect_tls(&md5_cfg, rustls(&proxy_ca, cert, EndPoint::Real)?)
            .await
            .map_err(|e| anyhow::anyhow!("md5user over TLS {what}: {}", describe_error(&e)))?;
        ensure!(
            current_user(&client).await? == roles::MD5.0,
            "md5user over TLS {what}"
        );
    }
    let client = ep.connect(roles::MD5.0, roles::MD5.1, roles::APP_DB).await?;
    ensure!(
        current_user(&client).await? == roles::MD5.0,
        "md5user in plaintext"
    );
    let log = proxy.log();
    ensure!(
        log.matches("certificate authentication failed").count() >= 3,
        "the proxy log should give each certificate refusal with its reason\n{}",
        proxy.log_tail(30)
    );
    proxy.ensure_running()
}

/// SCRAM-SHA-256-PLUS (`tls-server-end-point`): over TLS, psql with `channel_binding=require`
/// logs in and runs a query, and so does tokio-postgres with `channel_binding=require`
/// binding the certificate it saw; tokio-postgres sending other binding data (a man in the
/// middle) is refused with 28000 "SCRAM channel binding check failed". In plaintext -PLUS
/// is not offered, so libpq's `channel_binding=require` fails on the client side with its
/// own message (naming channel binding), while `channel_binding=prefer` logs in.
#[tokio::test]
async fn scram_channel_binding_over_tls_and_not_offered_in_plaintext() -> Result<()> {
    skip_if_direct!();
    let pki = Pki::new()?;
    let pg = PgCluster::start()?;
    let TlsProxy { proxy_ca, cfg } = tls_proxy(&pki, &pg)?;
    let mut proxy = Proxy::start(cfg)?;
    let ep = endpoint(&proxy);
    let (user, password) = roles::APP;

    let out = ep
        .psql(user, password, roles::APP_DB)
        .env("PGSSLMODE", "verify-full")
        .env("PGSSLROOTCERT", &path_str(&proxy_ca.cert))
        .env("PGCHANNELBINDING", "require")
        .run_async("SELECT current_user || ' ' || (SELECT count(*) FROM generate_series(1, 10))")
        .await?;
    out.ensure_success()
        .context("psql channel_binding=require over TLS")?;
    ensure!(
        out.stdout.trim() == "app 10",
        "psql (channel_binding=require) printed {:?}",
        out.stdout
    );

    let mut cfg = ep.config(user, password, roles::APP_DB);
    cfg.ssl_mode(tokio_postgres::config::SslMode::Require)
        .channel_binding(tokio_postgres::config::ChannelBinding::Require);
    let client = connect_tls(&cfg, rustls(&proxy_ca, None, EndPoint::Real)?)
        .await
        .map_err(|e| anyhow::anyhow!("tokio-postgres channel_binding=require: {}", describe_error(&e)))?;
    ensure!(
        current_user(&client).await? == user,
        "tokio-postgres with channel binding"
    );

    let (code, message, _) = login_refused(
        &cfg,
        Some(rustls(&proxy_ca, None, EndPoint::Wrong)?),
        "wrong binding data",
    )
    .await?;
    ensure!(
        code == "28000" && message == "SCRAM channel binding check failed",
        "wrong channel binding data: got {code} {message}"
    );

    let out = ep
        .psql(user, password, roles::APP_DB)
        .env("PGSSLMODE", "disable")
        .env("PGCHANNELBINDING", "require")
        .run_async("SELECT 1")
        .await?;
    println!("plaintext, channel_binding=require: {}", out.stderr.trim());
    ensure!(
        !out.status_ok && out.stderr.contains("channel binding"),
        "{}",
        out.describe("libpq channel_binding=require in plaintext should fail on the client side, naming channel binding")
    );
    let out = ep
        .psql(user, password, roles::APP_DB)
        .env("PGSSLMODE", "disable")
        .env("PGCHANNELBINDING", "prefer")
        .run_async("SELECT current_user")
        .await?;
    out.ensure_success()
        .context("psql channel_binding=prefer in plaintext")?;
    proxy.ensure_running()
}

// ------------------------------------------------------------------ client_tls, auth_hba_file

/// `client_tls = "require"`: a plaintext login is refused with 28000 "this proxy accepts
/// only TLS connections (client_tls = require)", the admin console's included (tokio-postgres
/// for the SQLSTATE, psql for the message), while over TLS both the database and the admin
/// console serve.
#[tokio::test]
async fn client_tls_require_refuses_plaintext_logins_including_the_admin_console() -> Result<()> {
    skip_if_direct!();
    let pki = Pki::new()?;
    let pg = PgCluster::start()?;
    let TlsProxy { proxy_ca, cfg } = tls_proxy(&pki, &pg)?;
    let mut proxy = Proxy::start(cfg.with_admin().set("proxy.client_tls", "require"))?;
    let ep = endpoint(&proxy);
    for (user, password, db) in [
        (roles::APP.0, roles::APP.1, roles::APP_DB),
        ("admin", "admin", "switchyard"),
    ] {
        let (code, message, _) =
            login_refused(&ep.config(user, password, db), None, &format!("plaintext {db}")).await?;
        ensure!(
            code == "28000" && message == "this proxy accepts only TLS connections (client_tls = require)",
            "plaintext login to {db}: got {code} {message}"
        );
        let out = ep
            .psql(user, password, db)
            .env("PGSSLMODE", "disable")
            .run_async("SELECT 1")
            .await?;
        ensure!(
            !out.status_ok && out.stderr.contains("accepts only TLS connections"),
            "{}",
            out.describe(&format!("psql sslmode=disable to {db} should be refused"))
        );
    }
    let out = ep
        .psql(roles::APP.0, roles::APP.1, roles::APP_DB)
        .env("PGSSLMODE", "verify-full")
        .env("PGSSLROOTCERT", &path_str(&proxy_ca.cert))
        .run_async("SELECT current_user")
        .await?;
    out.ensure_success()
        .context("psql over TLS with client_tls = require")?;
    let out = ep
        .psql("admin", "admin", "switchyard")
        .env("PGSSLMODE", "require")
        .run_async("SHOW POOLS")
        .await?;
    out.ensure_success().context("the admin console over TLS")?;
    proxy.ensure_running()
}

/// The Unix-domain socket of a proxy with a certificate and `client_tls = "require"`:
/// SSLRequest over TCP is answered 'S' (TLS is on) but over the Unix socket 'N' (TLS over a
/// local socket protects nothing its file permissions do not), and `require` does not apply
/// there: psql over the socket logs in unencrypted and gets its row, while a plaintext
/// login over TCP is still refused with 28000.
#[tokio::test]
async fn unix_socket_answers_no_to_ssl_and_is_spared_client_tls_require() -> Result<()> {
    skip_if_direct!();
    let pki = Pki::new()?;
    let pg = PgCluster::start()?;
    let TlsProxy { cfg, .. } = tls_proxy(&pki, &pg)?;
    let dir = scratch::fresh_dir("sock")?;
    let port = switchyard_tests::ports::free_port()?;
    let mut cfg = cfg
        .set("proxy.client_tls", "require")
        .set("proxy.unix_socket_dir", path_str(&dir));
    cfg.proxy.listen = format!("127.0.0.1:{port}");
    let mut proxy = Proxy::start(cfg)?;
    let ssl_request = [0u8, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

    let mut tcp = RawConn::connect(&format!("127.0.0.1:{port}")).await?;
    tcp.send(&ssl_request).await?;
    let answer = tcp.read_byte(Duration::from_secs(5)).await?;
    ensure!(answer == Some(b'S'), "SSLRequest over TCP: {answer:?}");

    let socket = dir.join(format!(".s.PGSQL.{port}"));
    let mut unix = tokio::net::UnixStream::connect(&socket)
        .await
        .with_context(|| format!("connecting to {}", socket.display()))?;
    unix.write_all(&ssl_request).await?;
    let mut answer = [0u8; 1];
    tokio::time::timeout(Duration::from_secs(5), unix.read_exact(&mut answer))
        .await
        .context("no answer to SSLRequest over the Unix socket within 5 s")??;
    ensure!(
        answer[0] == b'N',
        "SSLRequest over the Unix socket: {:?}",
        answer[0] as char
    );
    println!("SSLRequest: 'S' over TCP, 'N' over the Unix socket");

    let (user, password) = roles::APP;
    let out = Endpoint::new(&path_str(&dir), port)
        .psql(user, password, roles::APP_DB)
        .run_async("SELECT 'over ' || 'the socket'")
        .await?;
    out.ensure_success()
        .context("psql over the Unix socket with client_tls = require")?;
    ensure!(
        out.stdout.trim() == "over the socket",
        "psql printed {:?}",
        out.stdout
    );
    let (code, message, _) = login_refused(
        &Endpoint::new("127.0.0.1", port).config(user, password, roles::APP_DB),
        None,
        "plaintext over TCP",
    )
    .await?;
    ensure!(code == "28000", "plaintext over TCP: {code} {message}");
    proxy.ensure_running()
}

/// `client_tls = "disable"` with a certificate configured: SSLRequest is answered 'N', so
/// psql with `sslmode=require` fails ("server does not support SSL") and with
/// `sslmode=prefer` logs in unencrypted (`\conninfo` names no SSL).
#[tokio::test]
async fn client_tls_disable_answers_no_despite_a_certificate() -> Result<()> {
    skip_if_direct!();
    let pki = Pki::new()?;
    let pg = PgCluster::start()?;
    let TlsProxy { cfg, .. } = tls_proxy(&pki, &pg)?;
    let mut proxy = Proxy::start(cfg.set("proxy.client_tls", "disable"))?;
    let ep = endpoint(&proxy);
    let (user, password) = roles::APP;
    let out = ep
        .psql(user, password, roles::APP_DB)
        .env("PGSSLMODE", "require")
        .run_async("SELECT 1")
        .await?;
    ensure!(
        !out.status_ok && out.stderr.contains("server does not support SSL"),
        "{}",
        out.describe(
            "sslmode=require against client_tls = disable should fail with 'server does not support SSL'"
        )
    );
    let out = ep
        .psql(user, password, roles::APP_DB)
        .env("PGSSLMODE", "prefer")
        .run_async("\\conninfo")
        .await?;
    out.ensure_success()?;
    ensure!(
        out.stdout.contains("You are connected") && !out.stdout.contains("SSL"),
        "sslmode=prefer against client_tls = disable: \\conninfo printed {:?}",
        out.stdout
    );
    proxy.ensure_running()
}

/// `client_tls = "require"` still accepts a CancelRequest in plaintext (libpq sends them
/// so): a TLS client's `SELECT pg_sleep(30)` is cancelled by its cancel key sent over a
/// plaintext connection and ends with 57014 well before the 30 s.
#[tokio::test]
async fn client_tls_require_still_accepts_plaintext_cancel_requests() -> Result<()> {
    skip_if_direct!();
    let pki = Pki::new()?;
    let pg = PgCluster::start()?;
    let TlsProxy { proxy_ca, cfg } = tls_proxy(&pki, &pg)?;
    let mut proxy = Proxy::start(cfg.set("proxy.client_tls", "require"))?;
    let ep = endpoint(&proxy);
    let client = connect_tls(
        &ep.config(roles::APP.0, roles::APP.1, roles::APP_DB),
        rustls(&proxy_ca, None, EndPoint::Real)?,
    )
    .await
    .map_err(|e| anyhow::anyhow!("TLS login: {}", describe_error(&e)))?;
    let token = client.cancel_token();
    let started = std::time::Instant::now();
    let sleeping = tokio::spawn(async move { client.simple_query("SELECT pg_sleep(30)").await.map(|_| ()) });
    tokio::time::sleep(Duration::from_millis(500)).await;
    token
        .cancel_query(tokio_postgres::NoTls)
        .await
        .ctx("sending the cancel in plaintext")?;
    let result = tokio::time::timeout(Duration::from_secs(20), sleeping)
        .await
        .context("the cancelled query did not end within 20 s")??;
    println!("pg_sleep(30) ended after {:?}", started.elapsed());
    match result {
        Err(e) if e.code().map(|c| c.code()) == Some("57014") => {}
        other => bail!("expected 57014 from the cancelled query, got {other:?}"),
    }
    proxy.ensure_running()
}

/// The rules the `auth_hba_file` test starts with; line numbers are asserted.
const HBA_RULES: &str = "\
# switchyard test rules
hostssl   switchyard  admin        127.0.0.1/32  scram-sha-256
host      switchyard  all          all           reject
host      all         all          127.0.0.2     reject
hostssl   app         md5user      127.0.0.1     password
host      app         app,md5user  127.0.0.1/32  scram-sha-256
";

/// `auth_hba_file`, first match wins: the admin console serves over TLS (line 2) and is
/// refused in plaintext by line 3; a client from 127.0.0.2 is refused by line 4 (a raw
/// client bound to that address); md5user over TLS gets the cleartext `password` method
/// (line 5, the password checked against what is stored; the login's log line names the
/// method) and in plaintext SCRAM (line 6), and a wrong password is 28P01;
/// a user no rule names is refused ("no auth_hba_file entry"). Every refusal is 28000 and
/// the log names the rule (`file:line`). RELOAD re-reads the file: a version allowing
/// 127.0.0.2 lets it in; a version with a bad line is refused naming the file and line,
/// and the rules in force stay (127.0.0.2 still logs in, the admin console still refuses
/// plaintext).
#[tokio::test]
async fn auth_hba_file_rules_decide_and_reload() -> Result<()> {
    skip_if_direct!();
    let pki = Pki::new()?;
    let pg = PgCluster::start()?;
    let TlsProxy { cfg, .. } = tls_proxy(&pki, &pg)?;
    let hba = pki.path("hba.conf");
    std::fs::write(&hba, HBA_RULES)?;
    let hba_name = path_str(&hba);
    let mut proxy = Proxy::start(cfg.with_admin().set("proxy.auth_hba_file", hba_name.clone()))?;
    let ep = endpoint(&proxy);
    let admin_tls = || {
        ep.psql("admin", "admin", "switchyard")
            .env("PGSSLMODE", "require")
    };
    admin_tls()
        .run_async("SHOW POOLS")
        .await?
        .ensure_success()
        .context("admin console over TLS (line 2)")?;
    let (code, message, _) = login_refused(
        &ep.config("admin", "admin", "switchyard"),
        None,
        "admin in plaintext",
    )
    .await?;
    ensure!(
        code == "28000" && message.starts_with("auth_hba_file rejects connection for host \"127.0.0.1\", user \"admin\", database \"switchyard\", no encryption"),
        "admin console in plaintext: got {code} {message}"
    );
    ensure!(
        proxy.log().contains(&format!("{hba_name}:3")),
        "the log should name rule {hba_name}:3\n{}",
        proxy.log_tail(20)
    );

    let from_second_loopback = || async {
        let mut conn = RawConn::connect_from(&ep.addr(), "127.0.0.2".parse()?).await?;
        conn.startup(
            &[("user", roles::APP.0), ("database", roles::APP_DB)],
            roles::APP.1,
        )
        .await
    };
    match from_second_loopback().await? {
        Startup::Error(e) => ensure!(
            e.sqlstate().as_deref() == Some("28000")
                && e.message().unwrap_or_default().contains("host \"127.0.0.2\""),
            "from 127.0.0.2: expected 28000 naming the host, got {}",
            e.describe()
        ),
        Startup::Ready => bail!("a login from 127.0.0.2 passed rule 4 (reject)"),
    }
    ensure!(
        proxy.log().contains(&format!("{hba_name}:4")),
        "the log should name rule {hba_name}:4\n{}",
        proxy.log_tail(20)
    );

    // md5user: the password in clear over TLS (line 5), SCRAM in plaintext (line 6).
    let mut conn = RawConn::connect(&ep.addr()).await?;
    match conn
        .startup(
            &[("user", roles::MD5.0), ("database", roles::APP_DB)],
            roles::MD5.1,
        )
        .await?
    {
        Startup::Ready => ensure!(
            conn.auth_requests.first() == Some(&10),
            "md5user in plaintext: auth requests {:?}, expected SCRAM (10)",
            conn.auth_requests
        ),
        Startup::Error(e) => bail!("md5user in plaintext (line 6): {}", e.describe()),
    }
    let out = ep
        .psql(roles::MD5.0, roles::MD5.1, roles::APP_DB)
        .env("PGSSLMODE", "require")
        .run_async("SELECT current_user")
        .await?;
    out.ensure_success()
        .context("md5user over TLS with the password method (line 5)")?;
    ensure!(
        proxy.log().lines().any(|l| l.contains("client logged in")
            && l.contains("user=md5user")
            && l.contains("method=password")),
        "the proxy should log md5user's TLS login with method=password\n{}",
        proxy.log_tail(20)
    );
    let (code, message, _) = login_refused(
        &ep.config(roles::MD5.0, "wrong", roles::APP_DB),
        None,
        "wrong password",
    )
    .await?;
    ensure!(
        code == "28P01",
        "md5user with a wrong password: got {code} {message}"
    );
    let (code, message, _) = login_refused(
        &ep.config("trustuser", "trustpass", roles::APP_DB),
        None,
        "no rule",
    )
    .await?;
    ensure!(
        code == "28000"
            && message.starts_with("no auth_hba_file entry for host \"127.0.0.1\", user \"trustuser\""),
        "a user no rule names: got {code} {message}"
    );

    // RELOAD with 127.0.0.2 allowed.
    std::fs::write(
        &hba,
        HBA_RULES.replace("127.0.0.2     reject", "127.0.0.2     scram-sha-256"),
    )?;
    let out = admin_tls().run_async("RELOAD").await?;
    out.ensure_success()?;
    ensure!(
        out.stdout.contains("auth_hba_file|loaded|||5 rules"),
        "RELOAD printed {:?}",
        out.stdout
    );
    ensure!(
        matches!(from_second_loopback().await?, Startup::Ready),
        "127.0.0.2 is allowed after RELOAD"
    );

    // A bad file: refused with file and line, the rules in force stay.
    std::fs::write(&hba, "host all all all scram-sha-256\nhost all all all trust\n")?;
    let out = admin_tls().run_async("RELOAD").await?;
    out.ensure_success()?;
    ensure!(
        out.stdout.contains("auth_hba_file|failed")
            && out
                .stdout
                .contains(&format!("{hba_name}:2: unknown method \"trust\"")),
        "RELOAD of a bad file printed {:?}",
        out.stdout
    );
    ensure!(
        proxy.log().contains("auth_hba_file not reloaded"),
        "the log should say the file was not reloaded"
    );
    ensure!(
        matches!(from_second_loopback().await?, Startup::Ready),
        "the rules in force (127.0.0.2 allowed) stay"
    );
    let (code, _, _) = login_refused(
        &ep.config("admin", "admin", "switchyard"),
        None,
        "admin in plaintext, after the bad reload",
    )
    .await?;
    ensure!(code == "28000", "the admin console in plaintext is still refused");
    proxy.ensure_running()
}

/// `auth_hba_file` choosing `cert` (line 1: `hostssl app all 127.0.0.1/32 cert`; line 2:
/// SCRAM for the rest) for `app`, whose `[users]` entry asks for SCRAM: over TLS psql
/// (verify-full, a wrong password in the environment) logs in with the certificate alone;
/// over TLS without a certificate the login is refused with 28000 "connection requires a
/// valid client certificate" (line 1 decides, no fallback to line 2); in plaintext line 2
/// asks for the password, which logs in; a trusted certificate naming a user the proxy does
/// not know (`ghost`) is refused with 28000, the detail saying it knows no such user.
#[tokio::test]
async fn auth_hba_file_cert_rule_logs_in_by_certificate() -> Result<()> {
    skip_if_direct!();
    let pki = Pki::new()?;
    let pg = PgCluster::start()?;
    let TlsProxy { proxy_ca, cfg } = tls_proxy(&pki, &pg)?;
    let client_ca = pki.ca("client-ca")?;
    let app_cert = pki.client(&client_ca, "app-client", "app")?;
    let ghost_cert = pki.client(&client_ca, "ghost-client", "ghost")?;
    let hba = pki.path("hba.conf");
    std::fs::write(
        &hba,
        "hostssl app all 127.0.0.1/32 cert\nhost all all all scram-sha-256\n",
    )?;
    let cfg = cfg
        .set("proxy.tls_client_ca", path_str(&client_ca.cert))
        .set("proxy.auth_hba_file", path_str(&hba));
    let mut proxy = Proxy::start(cfg)?;
    let ep = endpoint(&proxy);

    let out = ep
        .psql(roles::APP.0, "not-the-password", roles::APP_DB)
        .env("PGSSLMODE", "verify-full")
        .env("PGSSLROOTCERT", &path_str(&proxy_ca.cert))
        .env("PGSSLCERT", &path_str(&app_cert.cert))
        .env("PGSSLKEY", &path_str(&app_cert.key))
        .run_async("SELECT current_user")
        .await?;
    out.ensure_success()
        .context("psql with app's certificate under the cert rule")?;
    ensure!(out.stdout.trim() == "app", "psql printed {:?}", out.stdout);

    let app_cfg = ep.config(roles::APP.0, roles::APP.1, roles::APP_DB);
    let (code, message, _) = login_refused(
        &app_cfg,
        Some(rustls(&proxy_ca, None, EndPoint::Real)?),
        "TLS without a certificate",
    )
    .await?;
    ensure!(
        code == "28000" && message == "connection requires a valid client certificate",
        "TLS without a certificate under the cert rule: got {code} {message}"
    );
    let client = ep
        .connect_app()
        .await
        .context("app in plaintext (line 2, SCRAM)")?;
    ensure!(current_user(&client).await? == "app", "app in plaintext");

    let ghost_cfg = ep.config("ghost", "whatever", roles::APP_DB);
    let (code, message, detail) = login_refused(
        &ghost_cfg,
        Some(rustls(&proxy_ca, Some(&ghost_cert), EndPoint::Real)?),
        "a certificate for an unknown user",
    )
    .await?;
    ensure!(
        code == "28000"
            && message == "certificate authentication failed for user \"ghost\""
            && detail.contains("knows no such user"),
        "an unknown user's certificate: got {code} {message} ({detail})"
    );
    proxy.ensure_running()
}

// ------------------------------------------------------------------ drivers under load, hostile handshakes

/// pgbench over TLS (`PGSSLMODE=require`): 16 clients for 4 s of TPC-B through the proxy,
/// 0 failed transactions and pgbench exits 0; then psycopg 3 with `sslmode=require`, 8
/// connections of 50 checked transactions each: 0 errors.
#[tokio::test]
async fn pgbench_and_psycopg_over_tls_under_load() -> Result<()> {
    skip_if_direct!();
    let pki = Pki::new()?;
    let pg = PgCluster::start()?;
    let TlsProxy { cfg, .. } = tls_proxy(&pki, &pg)?;
    let mut proxy = Proxy::start(cfg.pool_size(8))?;
    let ep = endpoint(&proxy);
    let (user, password) = roles::APP;
    let bench = ep
        .pgbench(user, password, roles::APP_DB)
        .env("PGSSLMODE", "require");
    bench.init(1)?;
    let result = bench
        .run_async(QueryMode::Simple, 16, 2, Length::Seconds(4))
        .await?;
    println!(
        "pgbench over TLS: {} transactions, {} failed, {:.0} tps",
        result.processed, result.failed, result.tps
    );
    ensure!(
        result.status_ok && result.failed == 0 && result.processed > 0,
        "{}",
        result
            .output
            .describe("pgbench over TLS should finish with 0 failed transactions")
    );
    let report = tokio::task::spawn_blocking({
        let target = ep.client_target(user, password, roles::APP_DB);
        move || Driver::Psycopg.run_with(&target, 8, 50, &["--sslmode", "require"])
    })
    .await??;
    println!("psycopg over TLS: ok={} errors={}", report.ok, report.errors);
    ensure!(
        report.errors == 0 && report.ok == 8 * 50,
        "{}",
        report
            .output
            .describe("psycopg over TLS: expected 400 transactions and 0 errors")
    );
    proxy.ensure_running()
}

/// SSLRequest without the TLS that should follow
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
const GSSENC_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30];

/// Raw clients answered 'S' to SSLRequest that then send a plaintext StartupMessage, 512
/// random bytes, or nothing before closing: each connection is closed by the proxy (EOF
/// within 15 s; `client_login_timeout` is 60 s, so it is the handshake's failure that
/// closes it), each leaves a log line "TLS handshake failed after SSLRequest", the proxy
/// does not panic, and a session opened before serves a query after each.
#[tokio::test]
async fn garbage_after_ssl_request_closes_only_that_connection() -> Result<()> {
    skip_if_direct!();
    let pki = Pki::new()?;
    let pg = PgCluster::start()?;
    let TlsProxy { cfg, .. } = tls_proxy(&pki, &pg)?;
    let mut proxy = Proxy::start(cfg.client_login_timeout("60s"))?;
    let ep = endpoint(&proxy);
    let bystander = ep.connect_app().await?;
    let mut startup = BytesMut::new();
    let body = b"\0\x03\0\0user\0app\0database\0app\0\0";
    startup.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    startup.extend_from_slice(body);
    let garbage: Vec<u8> = (0..512).map(|_| rand::random::<u8>()).collect();
    let cases: [(&str, &[u8]); 3] = [
        ("a plaintext StartupMessage", &startup),
        ("random bytes", &garbage),
        ("nothing", b""),
    ];
    for (i, (what, bytes)) in cases.into_iter().enumerate() {
        let mut conn = RawConn::connect(&ep.addr()).await?;
        conn.send(&SSL_REQUEST).await?;
        ensure!(
            conn.read_byte(Duration::from_secs(10)).await? == Some(b'S'),
            "{what}: SSLRequest not answered 'S'"
        );
        if bytes.is_empty() {
            conn.shutdown_write().await?;
        } else {
            conn.send(bytes).await?;
        }
        let started = std::time::Instant::now();
        let (mut tcp, _) = conn.into_parts();
        let mut sink = Vec::new();
        tokio::time::timeout(Duration::from_secs(15), tcp.read_to_end(&mut sink))
            .await
            .map_err(|_| anyhow::anyhow!("{what}: the proxy did not close the connection within 15 s"))?
            .ok();
        println!(
            "{what} after 'S': closed after {:?} ({} bytes back: a TLS alert at most)",
            started.elapsed(),
            sink.len()
        );
        ensure!(
            sink.len() < 64,
            "{what}: {} bytes back, more than a TLS alert",
            sink.len()
        );
        let n: i32 = bystander
            .query_one("SELECT 7", &[])
            .await
            .ctx("the session opened before")?
            .get(0);
        ensure!(n == 7, "the bystander got {n}");
        let lines = proxy
            .log()
            .matches("TLS handshake failed after SSLRequest")
            .count();
        ensure!(
            lines == i + 1,
            "after {what}: {lines} log lines about the failed handshake, expected {}\n{}",
            i + 1,
            proxy.log_tail(20)
        );
    }
    proxy.ensure_running()
}

/// A proxy without TLS: SSLRequest is answered 'N', and a second SSLRequest on the same
/// connection is refused with 08P01 and the connection closed; GSSENCRequest is answered
/// 'N' and the normal startup that follows logs in and runs a query.
#[tokio::test]
async fn second_ssl_request_is_refused_and_gssenc_falls_back() -> Result<()> {
    skip_if_direct!();
    let pg = PgCluster::start()?;
    let mut proxy = Proxy::start(ProxyConfig::for_cluster(&pg))?;
    let ep = endpoint(&proxy);
    let mut conn = RawConn::connect(&ep.addr()).await?;
    conn.send(&SSL_REQUEST).await?;
    ensure!(
        conn.read_byte(Duration::from_secs(10)).await? == Some(b'N'),
        "first SSLRequest"
    );
    conn.send(&SSL_REQUEST).await?;
    let msgs = conn.read_until_eof(Duration::from_secs(10)).await?;
    ensure!(
        msgs.len() == 1 && msgs[0].sqlstate().as_deref() == Some("08P01"),
        "a second SSLRequest: expected one ErrorResponse 08P01 and EOF, got {:?}",
        msgs.iter().map(|m| m.describe()).collect::<Vec<_>>()
    );
    println!("second SSLRequest: {}", msgs[0].describe());

    let mut conn = RawConn::connect(&ep.addr()).await?;
    conn.send(&GSSENC_REQUEST).await?;
    ensure!(
        conn.read_byte(Duration::from_secs(10)).await? == Some(b'N'),
        "GSSENCRequest"
    );
    match conn
        .startup(
            &[("user", roles::APP.0), ("database", roles::APP_DB)],
            roles::APP.1,
        )
        .await?
    {
        Startup::Ready => {}
        Startup::Error(e) => bail!("startup after GSSENCRequest: {}", e.describe()),
    }
    ensure!(
        conn.query_one_value("SELECT 41 + 1").await?.as_deref() == Some("42"),
        "query after GSSENCRequest"
    );
    proxy.ensure_running()
}
