//! Which authentication methods a server may ask the proxy for (`[pool] server_auth_methods`).
//!
//! Against a PostgreSQL whose pg_hba asks `app` for its password in clear (`password`), the
//! proxy by default sends nothing and the client gets 28000 naming the method and the
//! setting, the proxy's log naming the server; the md5 and trust users of the same proxy go
//! on working. With `"password"` added to the list, `app` logs in. With the list cut to
//! `["scram-sha-256"]`, the md5 user is refused the same way.

use anyhow::{bail, ensure, Result};
use switchyard_tests::client::{connect, describe_error};
use switchyard_tests::{roles, skip_if_direct, ClusterOptions, Endpoint, PgCluster, Proxy, ProxyConfig};

/// `app` is asked for its password in clear over TCP; the standard rules follow.
const APP_CLEARTEXT: &str = "host all app 127.0.0.1/32 password";

/// Logs in as `user` and asks the server who it is: `Ok(current_user)` or the error's
/// SQLSTATE and text, wherever the proxy reports it (at login or at the first query).
async fn login(proxy: &Proxy, (user, password): (&str, &str)) -> Result<Result<String, (String, String)>> {
    let ep = Endpoint::new(&proxy.host(), proxy.port());
    let result = async {
        let client = connect(&ep.config(user, password, roles::APP_DB)).await?;
        client.query_one("SELECT current_user::text", &[]).await
    }
    .await;
    match result {
        Ok(row) => Ok(Ok(row.get(0))),
        Err(e) => match e.as_db_error() {
            Some(db) => Ok(Err((db.code().code().to_owned(), describe_error(&e)))),
            None => bail!("{user}: an error without a SQLSTATE: {}", describe_error(&e)),
        },
    }
}

/// Logs in as `user` and checks the server runs the query as `user`.
async fn expect_login(proxy: &Proxy, user: (&str, &str), what: &str) -> Result<()> {
    match login(proxy, user).await? {
        Ok(current) => ensure!(
            current == user.0,
            "{what}: the server says current_user = {current:?}"
        ),
        Err((code, text)) => bail!("{what}: login as {} failed: {code} {text}", user.0),
    }
    Ok(())
}

/// Logs in as `user` and checks the login is refused with 28000 naming `method` and the
/// setting, and that the proxy's log names the server.
async fn expect_refused(proxy: &Proxy, pg: &PgCluster, user: (&str, &str), method: &str) -> Result<()> {
    let (code, text) = match login(proxy, user).await? {
        Ok(current) => bail!(
            "{}: the server asked for {method}, which is not allowed, yet the login succeeded (as {current:?})",
            user.0
        ),
        Err(e) => e,
    };
    println!("{} refused: {code} {text}", user.0);
    ensure!(code == "28000", "{}: expected 28000, got {code} {text}", user.0);
    ensure!(
        text.contains(&format!("\"{method}\"")) && text.contains("server_auth_methods"),
        "{}: the error should name the method {method:?} and the setting: {text}",
        user.0
    );
    let server = format!("{}:{}", pg.primary().host(), pg.primary().port());
    let log = proxy.log();
    ensure!(
        log.lines()
            .any(|l| l.contains("server_auth_methods") && l.contains(&server)),
        "no log line names the setting and the server {server}:\n{}",
        proxy.log_tail(20)
    );
    Ok(())
}

#[tokio::test]
async fn cleartext_password_to_a_server_only_when_allowed() -> Result<()> {
    skip_if_direct!();
    let pg = PgCluster::start_with(ClusterOptions::default().hba_first(APP_CLEARTEXT)?)?;

    // Default: scram-sha-256 and md5 only.
    let proxy = Proxy::start(ProxyConfig::for_cluster(&pg))?;
    expect_refused(&proxy, &pg, roles::APP, "password").await?;
    expect_login(&proxy, roles::MD5, "md5 user next to the refused one").await?;
    expect_login(&proxy, roles::TRUST, "trust user next to the refused one").await?;
    drop(proxy);

    // Allowed explicitly.
    let allowed = ProxyConfig::for_cluster(&pg).set(
        "pool.server_auth_methods",
        toml::Value::try_from(["scram-sha-256", "md5", "password"])?,
    );
    let proxy = Proxy::start(allowed)?;
    expect_login(&proxy, roles::APP, "cleartext allowed").await?;
    Ok(())
}

#[tokio::test]
async fn md5_to_a_server_refused_when_only_scram_is_allowed() -> Result<()> {
    skip_if_direct!();
    let pg = PgCluster::start()?;
    let scram_only = ProxyConfig::for_cluster(&pg).set(
        "pool.server_auth_methods",
        toml::Value::try_from(["scram-sha-256"])?,
    );
    let proxy = Proxy::start(scram_only)?;
    expect_refused(&proxy, &pg, roles::MD5, "md5").await?;
    expect_login(&proxy, roles::APP, "SCRAM user next to the refused md5 one").await?;
    Ok(())
}
