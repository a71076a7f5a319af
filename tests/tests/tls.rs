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
//! Certificates are made with the `openssl` CLI in the test's scratch
//! directory, for `IP:127.0.0.1` and `DNS:localhost`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use switchyard_tests::client::{connect, describe_error};
use switchyard_tests::proxy::{ClusterSection, DatabaseSection, NodeEntry};
use switchyard_tests::tools::run_command;
use switchyard_tests::{
    env, roles, scratch, skip_if_direct, ClusterOptions, Endpoint, PgCluster, PgResultExt, Proxy, ProxyConfig,
};

// ------------------------------------------------------------------ certificates

/// A certificate and its private key (PEM files).
#[derive(Clone, Debug)]
struct CertKey {
    cert: PathBuf,
    key: PathBuf,
}

/// A scratch directory of certificates made with the `openssl` CLI.
struct Pki {
    dir: PathBuf,
}

/// Names every server certificate here is valid for.
const SAN: &str = "subjectAltName=IP:127.0.0.1,DNS:localhost";

impl Pki {
    fn new() -> Result<Self> {
        Ok(Self {
            dir: scratch::fresh_dir("tls")?,
        })
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    fn openssl(&self, args: &[&str]) -> Result<()> {
        let mut cmd = Command::new("openssl");
        cmd.args(args).current_dir(&self.dir);
        let out = run_command(&mut cmd, None, Duration::from_secs(60)).with_context(|| {
            "running the openssl CLI (install it with `scripts/lib.sh install` or `apt-get install openssl`)"
        })?;
        out.ensure_success()?;
        Ok(())
    }

    /// A self-signed server certificate, the way the PostgreSQL docs make
    /// one (`openssl req -x509`; OpenSSL marks it `CA:TRUE`), so it can also
    /// serve as its own root for `verify-full`.
    fn self_signed(&self, name: &str) -> Result<CertKey> {
        let ck = CertKey {
            cert: self.path(&format!("{name}.crt")),
            key: self.path(&format!("{name}.key")),
        };
        self.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "30",
            "-subj",
            &format!("/CN=localhost/O=switchyard tests {name}"),
            "-addext",
            SAN,
            "-keyout",
            &ck.key.to_string_lossy(),
            "-out",
            &ck.cert.to_string_lossy(),
        ])?;
        Ok(ck)
    }

    /// A certificate authority (self-signed, `CA:TRUE`).
    fn ca(&self, name: &str) -> Result<CertKey> {
        let ck = CertKey {
            cert: self.path(&format!("{name}.crt")),
            key: self.path(&format!("{name}.key")),
        };
        self.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "30",
            "-subj",
            &format!("/CN=switchyard tests {name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            &ck.key.to_string_lossy(),
            "-out",
            &ck.cert.to_string_lossy(),
        ])?;
        Ok(ck)
    }

    /// A server certificate (`CA:FALSE`, serverAuth) issued by `ca`.
    fn issue(&self, ca: &CertKey, name: &str) -> Result<CertKey> {
        let ck = CertKey {
            cert: self.path(&format!("{name}.crt")),
            key: self.path(&format!("{name}.key")),
        };
        let csr = self.path(&format!("{name}.csr"));
        let ext = self.path(&format!("{name}.ext"));
        std::fs::write(
            &ext,
            format!(
                "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
                 extendedKeyUsage=serverAuth\n{SAN}\n"
            ),
        )?;
        self.openssl(&[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            &format!("/CN=localhost/O=switchyard tests {name}"),
            "-keyout",
            &ck.key.to_string_lossy(),
            "-out",
            &csr.to_string_lossy(),
        ])?;
        let serial = format!(
            "0x{:x}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_nanos()
        );
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr.to_string_lossy(),
            "-CA",
            &ca.cert.to_string_lossy(),
            "-CAkey",
            &ca.key.to_string_lossy(),
            "-set_serial",
            &serial,
            "-days",
            "30",
            "-extfile",
            &ext.to_string_lossy(),
            "-out",
            &ck.cert.to_string_lossy(),
        ])?;
        Ok(ck)
    }

    /// Make everything readable by the PostgreSQL OS user, with private
    /// keys owned by it and mode 0600 (the server refuses laxer keys).
    fn hand_to_postgres(&self) -> Result<()> {
        env::chown_to_pg(&self.dir)?;
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let mode = if path.extension().is_some_and(|e| e == "key") {
                0o600
            } else {
                0o644
            };
            env::set_mode(&path, mode)?;
        }
        Ok(())
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            scratch::remove_dir(&self.dir);
        }
    }
}

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
