use super::*;

const GOOD: &str = r#"
[proxy]
listen = "127.0.0.1:6432"

[pool]
size = 4
query_wait_timeout = "2s"

[clusters.main]
nodes = [{ host = "127.0.0.1", port = 15432, role = "primary" }]

[databases.app]
cluster = "main"

[users.app]
password = "app"

[admin]
users = ["app"]
"#;

#[test]
fn parses_a_good_config() {
    let c = Config::parse(GOOD, "t.toml").unwrap();
    assert_eq!(c.pool.size, 4);
    assert_eq!(c.pool.query_wait_timeout, std::time::Duration::from_secs(2));
    assert_eq!(c.pool_mode(&c.databases["app"]), PoolMode::Transaction);
}

fn err(text: &str) -> String {
    Config::parse(text, "t.toml").unwrap_err().to_string()
}

#[test]
fn unknown_key_names_key_and_line() {
    let e = err(&GOOD.replace("size = 4", "sise = 4"));
    assert!(e.contains("line 6") && e.contains("sise"), "{e}");
}

#[test]
fn bad_duration_names_line() {
    let e = err(&GOOD.replace("\"2s\"", "\"two seconds\""));
    assert!(e.contains("line 7"), "{e}");
}

#[test]
fn unknown_cluster_names_key_and_line() {
    let e = err(&GOOD.replace("cluster = \"main\"", "cluster = \"mian\""));
    assert!(
        e.contains("t.toml:13") && e.contains("databases.app.cluster") && e.contains("mian"),
        "{e}"
    );
}

#[test]
fn admin_must_be_a_user() {
    let e = err(&GOOD.replace("users = [\"app\"]", "users = [\"root\"]"));
    assert!(
        e.contains("admin.users") && e.contains("root") && e.contains(":19"),
        "{e}"
    );
}

#[test]
fn pipeline_is_off_by_default_and_refused_in_session_pooling() {
    let c = Config::parse(GOOD, "t.toml").unwrap();
    assert!(!c.pool.pipeline);
    let on = GOOD.replace("size = 4", "size = 4\npipeline = true");
    assert!(Config::parse(&on, "t.toml").unwrap().pool.pipeline);
    let e = err(&on.replace("size = 4", "mode = \"session\"\nsize = 4"));
    assert!(
        e.contains("pool.pipeline") && e.contains("t.toml:8") && e.contains("session pooling"),
        "{e}"
    );
}

#[test]
fn zero_pool_size_is_refused() {
    let e = err(&GOOD.replace("size = 4", "size = 0"));
    assert!(e.contains("pool.size") && e.contains("t.toml:6"), "{e}");
}

#[test]
fn topology_plugins_are_assigned_per_cluster() {
    let with = |extra: &str| format!("{GOOD}\n[plugins.ha]\npath = \"ha.wasm\"\n{extra}");
    let c = Config::parse(
        &with("hooks = [\"health\", \"switchover\"]\nclusters = [\"main\"]\n"),
        "t.toml",
    )
    .unwrap();
    let ha = &c.plugins["ha"];
    assert!(ha.serves_cluster(HookKind::Health, "main"));
    assert!(
        !ha.serves(HookKind::Health, "app"),
        "health is not a session hook"
    );
    let e = err(&with("hooks = [\"health\"]\nclusters = [\"mian\"]\n"));
    assert!(
        e.contains("t.toml:24") && e.contains("plugins.ha.clusters") && e.contains("mian"),
        "{e}"
    );
    let e = err(&with("hooks = [\"pool-mode\"]\nclusters = [\"main\"]\n"));
    assert!(
        e.contains("plugins.ha.clusters") && e.contains("t.toml:24"),
        "{e}"
    );
    let e = err(&with("hooks = [\"health\"]\ndatabases = [\"app\"]\n"));
    assert!(e.contains("plugins.ha.databases"), "{e}");
}

#[test]
fn metrics_listen_is_an_address_apart_from_listen() {
    let with = |value: &str| {
        GOOD.replace(
            "listen = \"127.0.0.1:6432\"",
            &format!("listen = \"127.0.0.1:6432\"\nmetrics_listen = {value}"),
        )
    };
    let c = Config::parse(&with("\"127.0.0.1:9127\""), "t.toml").unwrap();
    assert_eq!(c.proxy.metrics_listen, Some("127.0.0.1:9127".parse().unwrap()));
    assert_eq!(Config::parse(GOOD, "t.toml").unwrap().proxy.metrics_listen, None);
    // A reload reports it as needing a restart, like `listen`.
    assert_eq!(
        Config::changed_sections(GOOD, &with("\"127.0.0.1:9127\"")),
        ["proxy"]
    );
    let e = err(&with("\"localhost\""));
    assert!(e.contains("line 4") && e.contains("metrics_listen"), "{e}");
    let e = err(&with("9127"));
    assert!(e.contains("line 4") && e.contains("metrics_listen"), "{e}");
    let e = err(&with("\"127.0.0.1:6432\""));
    assert!(
        e.contains("t.toml:4") && e.contains("proxy.metrics_listen"),
        "{e}"
    );
}

#[test]
fn auth_salt_secret_and_auth_query_limits_are_checked() {
    let with_secret = |s: &str| {
        GOOD.replace(
            "listen = \"127.0.0.1:6432\"",
            &format!("listen = \"127.0.0.1:6432\"\nauth_salt_secret = \"{s}\""),
        )
    };
    let c = Config::parse(&with_secret("0123456789abcdef"), "t.toml").unwrap();
    assert_eq!(c.proxy.auth_salt_secret.as_deref(), Some("0123456789abcdef"));
    let e = err(&with_secret("short"));
    assert!(
        e.contains("t.toml:4") && e.contains("proxy.auth_salt_secret"),
        "{e}"
    );

    let with_aq = |extra: &str| format!("{GOOD}\n[auth_query]\nuser = \"app\"\n{extra}");
    let c = Config::parse(&with_aq(""), "t.toml").unwrap();
    let aq = c.auth_query.unwrap();
    assert_eq!((aq.pool_size, aq.timeout), (2, std::time::Duration::from_secs(5)));
    assert!(aq.query.contains("valuntil"), "{}", aq.query);
    let e = err(&with_aq("pool_size = 0\n"));
    assert!(
        e.contains("auth_query.pool_size") && e.contains("t.toml:23"),
        "{e}"
    );
    let e = err(&with_aq("timeout = \"0s\"\n"));
    assert!(e.contains("auth_query.timeout") && e.contains("t.toml:23"), "{e}");
}

#[test]
fn max_message_size_takes_bytes_or_a_unit() {
    let c = Config::parse(GOOD, "t.toml").unwrap();
    assert_eq!(c.proxy.max_message_size, ByteSize(64 << 20));
    for (text, bytes) in [
        ("65536", 65536),
        ("\"512kB\"", 512 << 10),
        ("\"16 MiB\"", 16 << 20),
        ("\"1GB\"", 1 << 30),
    ] {
        let c = Config::parse(
            &GOOD.replace("listen = ", &format!("max_message_size = {text}\nlisten = ")),
            "t.toml",
        )
        .unwrap();
        assert_eq!(c.proxy.max_message_size, ByteSize(bytes), "{text}");
    }
}

#[test]
fn bad_max_message_size_names_key_and_line() {
    let with = |v: &str| err(&GOOD.replace("listen = ", &format!("max_message_size = {v}\nlisten = ")));
    let e = with("\"64 furlongs\"");
    assert!(e.contains("line 3") && e.contains("furlongs"), "{e}");
    let e = with("\"2GiB\"");
    assert!(
        e.contains("t.toml:3") && e.contains("proxy.max_message_size") && e.contains("1GiB"),
        "{e}"
    );
    let e = with("100");
    assert!(
        e.contains("t.toml:3") && e.contains("proxy.max_message_size"),
        "{e}"
    );
}

#[test]
fn admission_limits_are_checked_with_key_and_line() {
    let with = |v: &str| err(&GOOD.replace("listen = ", &format!("{v}\nlisten = ")));
    let e = with("max_client_conn = 3\nadmin_reserved_conn = 3");
    assert!(
        e.contains("proxy.admin_reserved_conn") && e.contains("below max_client_conn (3)"),
        "{e}"
    );
    let e = with("max_unauthenticated_conn = 0");
    assert!(
        e.contains("t.toml:3") && e.contains("proxy.max_unauthenticated_conn"),
        "{e}"
    );
    let c = Config::parse(GOOD, "t.toml").unwrap();
    assert_eq!(
        (c.proxy.admin_reserved_conn, c.proxy.max_unauthenticated_conn),
        (3, 1000)
    );
}

/// A bad value under a secret key (a password, `server_password`, `auth_salt_secret`, a
/// mistyped `passwrod`) is reported with its key and line but never echoed: neither in the
/// parser's message nor in the source line shown.
#[test]
fn errors_never_echo_a_secret_value() {
    for (from, to, line, key) in [
        ("password = \"app\"", "password = 12345678", 16, "password"),
        ("password = \"app\"", "passwrod = \"12345678\"", 16, "passwrod"),
        ("password = \"app\"", "password = \"12345678", 16, "password"),
        ("password = \"app\"", "password = [\"12345678\"]", 16, "password"),
        (
            "password = \"app\"",
            "password = \"app\"\nserver_password = 12345678",
            17,
            "server_password",
        ),
        ("password = \"app\"", "password = 12345678.5", 16, "password"),
        (
            "listen = \"127.0.0.1:6432\"",
            "listen = \"127.0.0.1:6432\"\nauth_salt_secret = 12345678",
            4,
            "auth_salt_secret",
        ),
        (
            "[users.app]\npassword = \"app\"",
            "[users]\napp = { password = 12345678 }",
            16,
            "app",
        ),
    ] {
        let e = err(&GOOD.replace(from, to));
        println!("{e}");
        assert!(!e.contains("12345678"), "the secret is echoed: {e}");
        assert!(e.contains(&format!("line {line}")) && e.contains(key), "{e}");
    }
    // A mistyped key still names the expected ones.
    let e = err(&GOOD.replace("password = \"app\"", "passwrod = \"12345678\""));
    assert!(
        e.contains("unknown field `passwrod`") && e.contains("`password`"),
        "{e}"
    );
    // A bad value elsewhere is still shown.
    let e = err(&GOOD.replace("size = 4", "size = \"four\""));
    assert!(e.contains("\"four\"") && e.contains("column"), "{e}");
}

/// The warning for a group- or world-readable file with secrets names the file, its mode
/// and `chmod 600`; a private file, or one without secrets, gets none.
#[test]
fn readable_config_with_secrets_is_flagged() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("switchyard-secrets-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("switchyard.toml");
    std::fs::write(&path, GOOD).unwrap();
    let config = Config::parse(GOOD, "t.toml").unwrap();
    for (mode, readers) in [
        (0o644, "its group and others"),
        (0o640, "its group"),
        (0o604, "others"),
    ] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        let warning = exposed_secrets(&path, &config).expect("a readable file is flagged");
        assert!(
            warning.contains(&path.display().to_string())
                && warning.contains(&format!("mode {mode:04o}"))
                && warning.contains(readers)
                && warning.contains("chmod 600"),
            "{warning}"
        );
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(exposed_secrets(&path, &config), None);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut no_secrets = config.clone();
    no_secrets.users.clear();
    assert_eq!(exposed_secrets(&path, &no_secrets), None);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Client TLS settings: `tls_client_ca` and a `client_tls` other than `disable` need a
/// `tls_cert`, and `tls_client_ca` is refused with `client_tls = "disable"`; `auth = "cert"` needs `tls_client_ca` and a password for servers; each
/// error names its key and line. `client_tls` defaults to `allow` with a certificate.
#[test]
fn client_tls_settings_are_checked_with_key_and_line() {
    let with = |v: &str| GOOD.replace("listen = ", &format!("{v}\nlisten = "));
    let e = err(&with("tls_client_ca = \"ca.crt\""));
    assert!(
        e.contains("t.toml:3") && e.contains("proxy.tls_client_ca") && e.contains("tls_cert"),
        "{e}"
    );
    let e = err(&with("client_tls = \"require\""));
    assert!(
        e.contains("t.toml:3") && e.contains("proxy.client_tls") && e.contains("\"require\""),
        "{e}"
    );
    let e = err(&with("client_tls = \"always\""));
    assert!(e.contains("line 3") && e.contains("always"), "{e}");
    let tls = "tls_cert = \"c.crt\"\ntls_key = \"c.key\"";
    let c = Config::parse(&with(tls), "t.toml").unwrap();
    assert_eq!(c.proxy.client_tls(), ClientTlsMode::Allow);
    assert_eq!(
        Config::parse(GOOD, "t.toml").unwrap().proxy.client_tls(),
        ClientTlsMode::Disable
    );

    let cert_user = |proxy: &str, password: &str| {
        with(proxy).replace(
            "[users.app]\npassword = \"app\"",
            &format!("[users.app]\npassword = \"{password}\"\nauth = \"cert\""),
        )
    };
    let e = err(&cert_user(tls, "app"));
    assert!(
        e.contains("t.toml:19") && e.contains("users.app.auth") && e.contains("tls_client_ca"),
        "{e}"
    );
    let with_ca = format!("{tls}\ntls_client_ca = \"ca.crt\"");
    let e = err(&with(&format!("{with_ca}\nclient_tls = \"disable\"")));
    assert!(
        e.contains("t.toml:5") && e.contains("proxy.tls_client_ca") && e.contains("disable"),
        "{e}"
    );
    let verifier = postgres_protocol::password::scram_sha_256(b"app");
    let e = err(&cert_user(&with_ca, &verifier));
    assert!(
        e.contains("users.app.auth") && e.contains("server_password"),
        "{e}"
    );
    let c = Config::parse(&cert_user(&with_ca, "app"), "t.toml").unwrap();
    assert_eq!(c.users["app"].auth, Some(ClientAuthMethod::Cert));
}

#[test]
fn server_caps_default_to_none_and_are_overridden_per_database_and_user() {
    let text = GOOD
        .replace(
            "size = 4",
            "size = 4\nmax_db_connections = 10\nmax_user_connections = 7",
        )
        .replace("cluster = \"main\"", "cluster = \"main\"\nmax_db_connections = 3")
        .replace(
            "password = \"app\"",
            "password = \"app\"\nmax_user_connections = 2",
        );
    let c = Config::parse(&text, "t.toml").unwrap();
    assert_eq!(c.max_db_connections(&c.databases["app"]), 3);
    assert_eq!(c.max_user_connections("app"), 2);
    assert_eq!(c.max_user_connections("found-by-auth-query"), 7);
    let plain = Config::parse(GOOD, "t.toml").unwrap();
    assert_eq!(plain.max_db_connections(&plain.databases["app"]), 0);
    assert_eq!(plain.max_user_connections("app"), 0);
}

#[test]
fn stats_users_must_be_users() {
    let e = err(&GOOD.replace(
        "users = [\"app\"]",
        "users = [\"app\"]\nstats_users = [\"watcher\"]",
    ));
    assert!(
        e.contains("admin.stats_users") && e.contains("watcher") && e.contains("t.toml:20"),
        "{e}"
    );
}

#[test]
fn metrics_beyond_loopback_are_flagged() {
    let with = |addr: &str| {
        let text = GOOD.replace(
            "listen = \"127.0.0.1:6432\"",
            &format!("listen = \"127.0.0.1:6432\"\nmetrics_listen = \"{addr}\""),
        );
        Config::parse(&text, "t.toml").unwrap()
    };
    let warning = exposed_metrics(&with("0.0.0.0:9127")).expect("0.0.0.0 is flagged");
    assert!(
        warning.contains("proxy.metrics_listen") && warning.contains("no authentication"),
        "{warning}"
    );
    assert!(exposed_metrics(&with("10.1.2.3:9127")).is_some());
    assert_eq!(exposed_metrics(&with("127.0.0.1:9127")), None);
    assert_eq!(exposed_metrics(&with("[::1]:9127")), None);
    assert_eq!(exposed_metrics(&Config::parse(GOOD, "t.toml").unwrap()), None);
}

#[test]
fn debug_forms_never_show_a_secret() {
    let text = GOOD
        .replace(
            "password = \"app\"",
            "password = \"pl41n-s3cret\"\nserver_password = \"s3rver-s3cret\"",
        )
        .replace(
            "listen = \"127.0.0.1:6432\"",
            "listen = \"127.0.0.1:6432\"\nauth_salt_secret = \"s4lt-s3cret-0123456789\"",
        );
    let config = Config::parse(&text, "t.toml").unwrap();
    let shown = format!("{config:?} {config:#?}");
    for secret in ["pl41n-s3cret", "s3rver-s3cret", "s4lt-s3cret"] {
        assert!(
            !shown.contains(secret),
            "Debug of the configuration shows {secret}"
        );
    }
    assert!(shown.contains("<hidden>"), "{shown}");
}

#[test]
fn ipv6_addresses_are_accepted_and_bad_ones_named() {
    let v6 = GOOD
        .replace(
            "listen = \"127.0.0.1:6432\"",
            "listen = \"[::1]:6432\"\nmetrics_listen = \"[::1]:9127\"",
        )
        .replace("host = \"127.0.0.1\"", "host = \"::1\"");
    let c = Config::parse(&v6, "t.toml").unwrap();
    assert_eq!(c.proxy.listen, vec!["[::1]:6432".parse().unwrap()]);
    assert_eq!(c.clusters["main"].nodes[0].get_ref().host, "::1");

    let e = err(&GOOD.replace("listen = \"127.0.0.1:6432\"", "listen = \"::1:6432\""));
    assert!(
        e.contains("line 3") && e.contains("\"::1:6432\"") && e.contains("[::1]:6432"),
        "{e}"
    );
    let e = err(&GOOD.replace(
        "listen = \"127.0.0.1:6432\"",
        "listen = \"127.0.0.1:6432\"\nmetrics_listen = \"localhost\"",
    ));
    assert!(
        e.contains("line 4") && e.contains("not an address and port"),
        "{e}"
    );
    for bad in ["[::1]", "[::1]:5432", "fe80::1::2"] {
        let e = err(&GOOD.replace("host = \"127.0.0.1\"", &format!("host = \"{bad}\"")));
        assert!(
            e.contains("t.toml:10") && e.contains("clusters.main.nodes") && e.contains("without brackets"),
            "{bad}: {e}"
        );
    }
}

#[test]
fn removing_databases_is_told_apart_from_other_changes() {
    let two = GOOD.replace(
        "[users.app]",
        "[databases.other]\ncluster = \"main\"\n\n[users.app]",
    );
    assert!(Config::databases_only_removed(&two, GOOD));
    assert!(Config::databases_only_removed(&two, &two));
    assert!(
        !Config::databases_only_removed(GOOD, &two),
        "an added database needs a restart"
    );
    let changed = two.replace(
        "[databases.other]\ncluster = \"main\"",
        "[databases.other]\ncluster = \"main\"\ndbname = \"elsewhere\"",
    );
    assert!(
        !Config::databases_only_removed(&two, &changed),
        "a changed database needs a restart"
    );
    let resized = two.replace(
        "[databases.other]\ncluster = \"main\"",
        "[databases.other]\ncluster = \"main\"\npool_size = 3",
    );
    assert!(
        Config::databases_only_removed(&two, &resized),
        "a database's pool_size applies at a reload"
    );
}

/// `[proxy] threading`: `shared` by default with one idle list per pool node and one worker
/// (unless `workers` says otherwise, 0 meaning one per core); `per-core` keeps one list per
/// worker (`workers`, or one per core when unset or 0); any other value is refused naming
/// the key, the value and the line.
#[test]
fn threading_is_shared_by_default_and_per_core_shards_pools_by_worker() {
    let with = |v: &str| GOOD.replace("listen = ", &format!("{v}\nlisten = "));
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let c = Config::parse(GOOD, "t.toml").unwrap();
    assert_eq!(c.proxy.threading, Threading::Shared);
    assert_eq!(c.proxy.pool_shards(), 1);
    assert_eq!(c.proxy.worker_threads(), 1);
    let c = Config::parse(&with("workers = 0"), "t.toml").unwrap();
    assert_eq!((c.proxy.worker_threads(), c.proxy.pool_shards()), (cores, 1));
    let c = Config::parse(&with("threading = \"per-core\"\nworkers = 0"), "t.toml").unwrap();
    assert_eq!(c.proxy.pool_shards(), cores);
    let c = Config::parse(&with("threading = \"per-core\"\nworkers = 3"), "t.toml").unwrap();
    assert_eq!(c.proxy.threading, Threading::PerCore);
    assert_eq!(c.proxy.pool_shards(), 3);
    let c = Config::parse(&with("threading = \"per-core\""), "t.toml").unwrap();
    assert_eq!(c.proxy.pool_shards(), cores);
    let e = err(&with("threading = \"percore\""));
    assert!(
        e.contains("line 3") && e.contains("threading") && e.contains("percore"),
        "{e}"
    );
}

/// `listen` takes one address or an array (IPv6 included); an empty array, a duplicate, a bad
/// address in the array and a `metrics_listen` among them are named with key and line.
#[test]
fn listen_takes_an_array_and_names_each_mistake() {
    let with = |v: &str| GOOD.replace("listen = \"127.0.0.1:6432\"", v);
    let c = Config::parse(&with("listen = [\"127.0.0.1:6432\", \"[::1]:6433\"]"), "t.toml").unwrap();
    assert_eq!(
        c.proxy.listen,
        vec!["127.0.0.1:6432".parse().unwrap(), "[::1]:6433".parse().unwrap()]
    );
    assert_eq!(c.proxy.first_port(), 6432);
    let e = err(&with("listen = []"));
    assert!(
        e.contains("t.toml:3") && e.contains("proxy.listen") && e.contains("at least one"),
        "{e}"
    );
    let e = err(&with("listen = [\"127.0.0.1:6432\", \"127.0.0.1:6432\"]"));
    assert!(e.contains("t.toml:3") && e.contains("listed twice"), "{e}");
    let e = err(&with("listen = [\"127.0.0.1:6432\", \"::1:6432\"]"));
    assert!(
        e.contains("line 3") && e.contains("\"::1:6432\"") && e.contains("[::1]:6432"),
        "{e}"
    );
    let e = err(&with(
        "listen = [\"127.0.0.1:6432\", \"127.0.0.2:6432\"]\nmetrics_listen = \"127.0.0.2:6432\"",
    ));
    assert!(
        e.contains("t.toml:4") && e.contains("proxy.metrics_listen") && e.contains("already in `listen`"),
        "{e}"
    );
}

/// `unix_socket_dir` must be an existing directory (and the first port not 0); the socket's
/// path is `<dir>/.s.PGSQL.<first port>`; `unix_socket_mode` is octal, 0777 by default.
#[test]
fn unix_socket_settings_are_checked() {
    let dir = std::env::temp_dir();
    let with = |v: &str| GOOD.replace("listen = ", &format!("{v}\nlisten = "));
    let ok = with(&format!(
        "unix_socket_dir = {:?}\nunix_socket_mode = \"0770\"",
        dir.display().to_string()
    ));
    let c = Config::parse(&ok, "t.toml").unwrap();
    assert_eq!(c.proxy.unix_socket_path(), Some(dir.join(".s.PGSQL.6432")));
    assert_eq!(c.proxy.unix_socket_mode, 0o770);
    assert_eq!(
        Config::parse(GOOD, "t.toml").unwrap().proxy.unix_socket_mode,
        0o777
    );
    assert_eq!(
        Config::parse(GOOD, "t.toml").unwrap().proxy.unix_socket_path(),
        None
    );
    let c = Config::parse(&with("unix_socket_mode = 0o700"), "t.toml").unwrap();
    assert_eq!(c.proxy.unix_socket_mode, 0o700);

    let e = err(&with("unix_socket_dir = \"/nonexistent/switchyard\""));
    assert!(
        e.contains("t.toml:3")
            && e.contains("proxy.unix_socket_dir")
            && e.contains("/nonexistent/switchyard"),
        "{e}"
    );
    let e = err(&with("unix_socket_dir = \"/etc/hostname\""));
    assert!(e.contains("t.toml:3") && e.contains("not a directory"), "{e}");
    let long = format!("unix_socket_dir = \"/tmp/{}\"", "x/".repeat(60));
    let e = err(&with(&long));
    assert!(
        e.contains("proxy.unix_socket_dir") && e.contains("too long"),
        "{e}"
    );
    let e = err(&GOOD
        .replace("127.0.0.1:6432", "127.0.0.1:0")
        .replace("listen = ", "unix_socket_dir = \"/tmp\"\nlisten = "));
    assert!(e.contains("t.toml:3") && e.contains("port"), "{e}");
    for bad in ["\"0999\"", "777", "\"rw\""] {
        let e = err(&with(&format!("unix_socket_mode = {bad}")));
        assert!(
            e.contains("line 3") && e.contains("not a file mode"),
            "{bad}: {e}"
        );
    }
}

/// `takeover_socket` defaults to `.s.switchyard.<port>.takeover` in `unix_socket_dir` or the
/// temporary directory; a given one needs an existing directory, a path that fits a
/// socket, and must not be the clients' socket; errors name the key and line.
#[test]
fn takeover_socket_is_defaulted_and_checked() {
    let with = |v: &str| GOOD.replace("listen = ", &format!("{v}\nlisten = "));
    let c = Config::parse(GOOD, "t.toml").unwrap();
    assert_eq!(
        c.proxy.takeover_socket_path(),
        std::env::temp_dir().join(".s.switchyard.6432.takeover")
    );
    let dir = std::env::temp_dir().display().to_string();
    let c = Config::parse(&with(&format!("unix_socket_dir = {dir:?}")), "t.toml").unwrap();
    assert_eq!(
        c.proxy.takeover_socket_path(),
        std::env::temp_dir().join(".s.switchyard.6432.takeover")
    );
    let c = Config::parse(&with("takeover_socket = \"/tmp/sy.takeover\""), "t.toml").unwrap();
    assert_eq!(
        c.proxy.takeover_socket_path(),
        std::path::PathBuf::from("/tmp/sy.takeover")
    );

    let e = err(&with("takeover_socket = \"/nonexistent/switchyard/t.sock\""));
    assert!(
        e.contains("t.toml:3")
            && e.contains("proxy.takeover_socket")
            && e.contains("/nonexistent/switchyard"),
        "{e}"
    );
    let e = err(&with(&format!("takeover_socket = \"/tmp/{}s\"", "x".repeat(110))));
    assert!(
        e.contains("proxy.takeover_socket") && e.contains("too long"),
        "{e}"
    );
    let e = err(&with(&format!(
        "unix_socket_dir = {dir:?}\ntakeover_socket = {:?}",
        std::env::temp_dir().join(".s.PGSQL.6432").display().to_string()
    )));
    assert!(
        e.contains("proxy.takeover_socket") && e.contains("clients' Unix-domain socket"),
        "{e}"
    );
}

#[test]
fn trace_is_off_by_default_and_its_bound_is_checked() {
    let c = Config::parse(GOOD, "t.toml").unwrap();
    assert_eq!(c.trace, TraceSettings::default());
    assert!(c.trace.path.is_none());
    let with = |body: &str| format!("{GOOD}\n[trace]\n{body}\n");
    let c = Config::parse(&with("path = \"/tmp/t.jsonl\"\nmax_bytes = 1048576"), "t.toml").unwrap();
    assert_eq!(
        c.trace.path.as_deref(),
        Some(std::path::Path::new("/tmp/t.jsonl"))
    );
    assert_eq!(c.trace.max_bytes, 1 << 20);
    let e = err(&with("path = \"/tmp/t.jsonl\"\nmax_bytes = 100"));
    let line = GOOD.lines().count() + 4;
    assert!(
        e.contains("trace.max_bytes") && e.contains(&format!("t.toml:{line}")) && e.contains("at least"),
        "{e}"
    );
    let e = err(&with("path = \"\""));
    assert!(e.contains("trace.path") && e.contains("empty"), "{e}");
    let e = err(&with("file = \"x\""));
    assert!(e.contains("file"), "{e}");
}
