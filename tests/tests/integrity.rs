//! Integrity under load: clients move money between accounts in transactions, as fast as
//! they can, through the demo's setup (`switchyard_tests::shipped`: Patroni in synchronous
//! mode with the callbacks, the proxy with the bundled plugins and read routing), while the
//! cluster switches over, the router plugin is replaced and reloaded, and the replica
//! restarts. Checked on the primary afterwards: the total is unchanged, every transfer a
//! client was told committed is there, none a client was told failed is, and every balance
//! is what the recorded transfers make it.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use rand::Rng;
use switchyard_tests::admin::{admin_rows, wait_for_primary};
use switchyard_tests::{describe_error, plugin, scratch, shipped, skip_if_direct, Endpoint};
use tokio::task::block_in_place;
use tokio_postgres::Client;

const ACCOUNTS: i32 = 100;
const OPENING: i64 = 1_000;
const CLIENTS: usize = 12;

/// What one client saw.
#[derive(Default)]
struct Ledger {
    /// Transfers whose COMMIT succeeded.
    committed: Vec<i64>,
    /// Transfers that failed before their COMMIT was sent: rolled back for certain.
    failed: Vec<i64>,
    /// Transfers whose COMMIT got an error: the outcome is unknown.
    unknown: Vec<i64>,
    /// Every error: the phase, SQLSTATE and message.
    errors: Vec<String>,
    /// Totals read (autocommit, routed to the replica) that were not the opening total.
    wrong_totals: Vec<i64>,
    /// Transfers committed after the last event had finished.
    committed_after_events: usize,
}

/// One transfer: `amount` from `from` to `to`, the rows locked in id order (no deadlocks),
/// recorded in `transfers` under `id`. `Err((committing, error))`.
async fn transfer(
    c: &mut Client,
    id: i64,
    from: i32,
    to: i32,
    amount: i64,
) -> Result<(), (bool, tokio_postgres::Error)> {
    let not_committing = |e| (false, e);
    let tx = c.transaction().await.map_err(not_committing)?;
    let mut moves = [(from, -amount), (to, amount)];
    moves.sort();
    for (account, delta) in moves {
        tx.execute(
            "UPDATE accounts SET balance = balance + $2 WHERE id = $1",
            &[&account, &delta],
        )
        .await
        .map_err(not_committing)?;
    }
    tx.execute(
        "INSERT INTO transfers (id, src, dst, amount) VALUES ($1, $2, $3, $4)",
        &[&id, &from, &to, &amount],
    )
    .await
    .map_err(not_committing)?;
    tx.commit().await.map_err(|e| (true, e))
}

/// A client that transfers until `stop`, reading the total (autocommit) after each
/// transfer, reconnecting after an error.
async fn client(
    endpoint: Endpoint,
    n: usize,
    stop: Arc<AtomicBool>,
    events_done: Arc<AtomicBool>,
) -> Result<Ledger> {
    let mut ledger = Ledger::default();
    let mut c = endpoint.connect_app().await?;
    let mut seq = 0i64;
    while !stop.load(Ordering::SeqCst) {
        seq += 1;
        let id = n as i64 * 1_000_000 + seq;
        let (from, to, amount) = {
            let mut rng = rand::thread_rng();
            let from = rng.gen_range(1..=ACCOUNTS);
            let to = (from + rng.gen_range(1..ACCOUNTS) - 1) % ACCOUNTS + 1;
            (from, to, rng.gen_range(1..=50))
        };
        let broken = match transfer(&mut c, id, from, to, amount).await {
            Ok(()) => {
                ledger.committed.push(id);
                if events_done.load(Ordering::SeqCst) {
                    ledger.committed_after_events += 1;
                }
                match c
                    .query_one("SELECT sum(balance)::bigint FROM accounts", &[])
                    .await
                {
                    Ok(row) => {
                        let total: i64 = row.get(0);
                        if total != ACCOUNTS as i64 * OPENING {
                            ledger.wrong_totals.push(total);
                        }
                        false
                    }
                    Err(e) => {
                        ledger
                            .errors
                            .push(format!("reading the total: {}", describe_error(&e)));
                        true
                    }
                }
            }
            Err((committing, e)) => {
                let phase = if committing { "COMMIT" } else { "before COMMIT" };
                ledger
                    .errors
                    .push(format!("transfer {id}, {phase}: {}", describe_error(&e)));
                if committing {
                    ledger.unknown.push(id);
                } else {
                    ledger.failed.push(id);
                }
                true
            }
        };
        if broken && c.is_closed() {
            c = reconnect(&endpoint).await?;
        }
    }
    Ok(ledger)
}

async fn reconnect(endpoint: &Endpoint) -> Result<Client> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match endpoint.connect_app().await {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() < deadline => {
                eprintln!("reconnecting: {e:#}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e.context("no connection to the proxy for 60 s")),
        }
    }
}

async fn create_accounts(primary: &Endpoint) -> Result<()> {
    let dba = primary.connect("postgres", "postgres", "app").await?;
    dba.batch_execute(&format!(
        "CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL); \
         INSERT INTO accounts SELECT g, {OPENING} FROM generate_series(1, {ACCOUNTS}) g; \
         CREATE TABLE transfers (id bigint PRIMARY KEY, src int NOT NULL, dst int NOT NULL, amount bigint NOT NULL); \
         GRANT ALL ON accounts, transfers TO app"
    ))
    .await?;
    Ok(())
}

/// Waits up to 15 s until SHOW PLUGINS shows plugin `name` running the component `hash`.
async fn wait_for_plugin(endpoint: &Endpoint, name: &str, hash: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let rows = admin_rows(endpoint, "SHOW PLUGINS").await?;
        if rows.iter().any(|r| r["name"] == name && r["hash"] == hash) {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "plugin {name} not at {hash} within 15 s: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Twelve clients transfer money between 100 accounts through the demo's setup for about
/// 15 s, reading the total after each transfer, while (3 s apart) Patroni switches over to
/// node1, the router plugin's file is replaced and RELOAD loads it, and the replica (node0)
/// restarts. Checks on the primary: the total is still 100,000; every transfer acknowledged
/// to a client is in `transfers` and none that failed before its COMMIT is; every balance
/// equals its opening balance plus the recorded transfers; every total a client read was
/// 100,000; every client committed transfers after the last event; and no client saw any
/// error (with the callbacks, none of these events may cost one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_stay_consistent_through_switchover_plugin_reload_and_replica_restart() -> Result<()> {
    skip_if_direct!();
    let dir = scratch::fresh_dir("integrity")?;
    let router = dir.join("router.wasm");
    let original = std::fs::read(plugin::component("router")?)?;
    plugin::install(&router, &original)?;
    let path = router.display().to_string();
    let (cluster, proxy) =
        block_in_place(|| shipped::start_on_free_ports(|cfg| cfg.set("plugins.router.path", path)))?;
    let endpoint = Endpoint::new(&proxy.host(), proxy.port());
    let (node0, node1) = (cluster.nodes()[0].endpoint(), cluster.nodes()[1].endpoint());
    create_accounts(&node0).await?;
    wait_for_primary(&endpoint, &node0.addr(), Duration::from_secs(15)).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let events_done = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|n| tokio::spawn(client(endpoint.clone(), n, stop.clone(), events_done.clone())))
        .collect();

    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let switchover = block_in_place(|| cluster.switchover(Some("node1")))?;
    wait_for_primary(&endpoint, &node1.addr(), Duration::from_secs(20)).await?;
    println!(
        "{:?}: switchover to node1 done ({:?})",
        started.elapsed(),
        switchover.command
    );

    tokio::time::sleep(Duration::from_secs(3)).await;
    let v2 = plugin::rebuilt(&original, "v2");
    plugin::install(&router, &v2)?;
    admin_rows(&endpoint, "RELOAD").await?;
    wait_for_plugin(&endpoint, "router", &plugin::short_hash(&v2)).await?;
    println!("{:?}: router plugin reloaded", started.elapsed());

    tokio::time::sleep(Duration::from_secs(3)).await;
    let restart = block_in_place(|| cluster.restart("node0"))?;
    println!("{:?}: replica node0 restarted in {restart:?}", started.elapsed());
    events_done.store(true, Ordering::SeqCst);

    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::SeqCst);
    let mut ledgers = Vec::new();
    for (n, c) in clients.into_iter().enumerate() {
        ledgers.push(c.await?.with_context(|| format!("client {n}"))?);
    }

    let dba = node1.connect("postgres", "postgres", "app").await?;
    let total: i64 = dba
        .query_one("SELECT sum(balance)::bigint FROM accounts", &[])
        .await?
        .get(0);
    let recorded: HashSet<i64> = dba
        .query("SELECT id FROM transfers", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let off: i64 = dba
        .query_one(
            "SELECT count(*) FROM accounts a WHERE balance <> $1::bigint \
               - coalesce((SELECT sum(amount) FROM transfers WHERE src = a.id), 0)::bigint \
               + coalesce((SELECT sum(amount) FROM transfers WHERE dst = a.id), 0)::bigint",
            &[&OPENING],
        )
        .await?
        .get(0);

    let mut problems = Vec::new();
    for (n, l) in ledgers.iter().enumerate() {
        let lost: Vec<_> = l.committed.iter().filter(|id| !recorded.contains(id)).collect();
        let ghosts: Vec<_> = l.failed.iter().filter(|id| recorded.contains(id)).collect();
        let unknown_committed = l.unknown.iter().filter(|id| recorded.contains(id)).count();
        println!(
            "client {n}: {} committed ({} after the events), {} failed, {} unknown ({} of them committed), {} errors",
            l.committed.len(),
            l.committed_after_events,
            l.failed.len(),
            l.unknown.len(),
            unknown_committed,
            l.errors.len()
        );
        if !lost.is_empty() {
            problems.push(format!("client {n}: acknowledged transfers lost: {lost:?}"));
        }
        if !ghosts.is_empty() {
            problems.push(format!(
                "client {n}: transfers that failed before COMMIT are recorded: {ghosts:?}"
            ));
        }
        if !l.wrong_totals.is_empty() {
            problems.push(format!("client {n}: read totals {:?}", l.wrong_totals));
        }
        if !l.errors.is_empty() {
            problems.push(format!("client {n}: errors {:?}", l.errors));
        }
        if l.committed_after_events == 0 {
            problems.push(format!("client {n}: no transfer committed after the events"));
        }
    }
    let committed: usize = ledgers.iter().map(|l| l.committed.len()).sum();
    println!(
        "{committed} transfers acknowledged, {} recorded; total {total}; {off} balances off",
        recorded.len()
    );
    ensure!(total == ACCOUNTS as i64 * OPENING, "the total is {total}");
    ensure!(off == 0, "{off} balances do not match the recorded transfers");
    ensure!(
        problems.is_empty(),
        "{}\nproxy log:\n{}",
        problems.join("\n"),
        proxy.log_tail(60)
    );
    Ok(())
}
