use super::*;

/// A primary (port 1) and a replica (port 2), not probed: tests feed samples themselves.
fn cluster(hold_timeout: &str) -> Cluster {
    let text = format!(
        "[clusters.main]\nhold_timeout = \"{hold_timeout}\"\nnodes = [{{ host = \"127.0.0.1\", port = 1, role = \"primary\" }}, {{ host = \"127.0.0.1\", port = 2, role = \"replica\" }}]\n"
    );
    let config = crate::config::Config::parse(&text, "test").expect("config");
    Cluster::new("main", &config.clusters["main"], None)
}

fn answered(in_recovery: bool, timeline: u32) -> ProbeSample {
    ProbeSample {
        reachable: true,
        in_recovery,
        timeline,
        lsn: 0x100,
        consecutive_failures: 0,
    }
}

fn failed() -> ProbeSample {
    ProbeSample {
        consecutive_failures: 1,
        ..Default::default()
    }
}

#[test]
fn a_planned_stop_of_the_primary_holds_and_drains_it() {
    let c = cluster("30s");
    assert!(
        c.planned_stop(1, "test").is_none(),
        "a replica's stop holds nothing"
    );
    assert_eq!(c.incidents.open_id(), None, "nor opens a failover event");
    let hold = c.planned_stop(0, "test").expect("the primary's stop holds");
    assert_eq!(
        c.incidents.open_id(),
        Some(1),
        "the decision that holds opens failover event 1"
    );
    let view = c.view();
    assert!(view.nodes[0].drained_at.is_some() && view.nodes[1].drained_at.is_none());
    assert!(
        !c.keeps_server(&c.nodes[0], hold.since - Duration::from_millis(1)),
        "servers on a stopping primary are closed"
    );
    assert!(
        c.keeps_server(&c.nodes[0], Instant::now()),
        "a drain closes the servers open then, not later ones"
    );
    assert!(hold.until >= hold.since + Duration::from_secs(29));
    assert_eq!(c.hold_deadline(Instant::now()), hold.until);
    assert_eq!(
        c.primary().map(|(i, _)| i),
        Some(0),
        "traffic stays until the node goes"
    );
}

/// The keep epoch (what lets a pool skip `keeps_server` for a server it kept before)
/// stays while probes confirm the same primary, and moves when a node is drained or the
/// primary changes; `primary()` follows every published view.
#[test]
fn the_keep_epoch_moves_on_a_drain_and_a_new_primary_only() {
    let c = cluster("30s");
    c.record(0, 0, answered(false, 1), None, None);
    c.record(1, 0, answered(true, 1), None, None);
    let first = c.keep_epoch();
    c.record(0, 0, answered(false, 1), None, None);
    c.record(1, 0, answered(true, 1), None, None);
    assert_eq!(c.keep_epoch(), first, "probes that change nothing keep it");
    c.planned_stop(0, "test").expect("the primary's stop holds");
    let drained = c.keep_epoch();
    assert_ne!(drained, first, "a drain moves it");
    assert_eq!(c.primary().map(|(i, _)| i), Some(0));
    c.record(0, 0, failed(), None, Some("connection refused".into()));
    assert!(c.primary().is_none());
    let lost = c.keep_epoch();
    assert_ne!(lost, drained, "losing the primary moves it");
    c.record(1, 0, answered(false, 2), None, None);
    assert_eq!(c.primary().map(|(i, _)| i), Some(1));
    assert_ne!(c.keep_epoch(), lost, "a new primary moves it");
}

#[tokio::test]
async fn probes_hold_on_a_lost_primary_and_move_to_the_promoted_replica() {
    let c = Arc::new(cluster("30s"));
    c.record(0, 0, answered(false, 1), None, None);
    c.record(1, 0, answered(true, 1), None, None);
    let generation = c.view().generation;
    assert_eq!(c.primary().map(|(i, _)| i), Some(0));
    assert!(c.hold().is_none());

    c.record(0, 0, failed(), None, Some("connection refused".into()));
    assert!(c.primary().is_none());
    assert!(c.hold().is_some(), "the built-in holds while there is no primary");
    assert_eq!(
        c.incidents.open_id(),
        Some(1),
        "the primary-lost decision opens failover event 1"
    );
    assert!(c.view().nodes[0].drained_at.is_some());
    let waiter = tokio::spawn({
        let c = c.clone();
        async move { c.wait_while_held().await }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!waiter.is_finished(), "held");

    c.record(1, 0, answered(false, 2), None, None);
    let resumed = tokio::time::timeout(Duration::from_secs(5), waiter).await;
    assert!(
        resumed.expect("released").unwrap(),
        "resumed by the confirmed primary"
    );
    assert_eq!(c.primary().map(|(i, _)| i), Some(1));
    assert!(c.hold().is_none(), "resumed on the confirmed primary");
    assert!(c.view().generation > generation);
    let now = Instant::now();
    assert!(c.keeps_server(&c.nodes[1], now) && !c.keeps_server(&c.nodes[0], now));
    let started = Instant::now();
    assert_eq!(c.hold_deadline(started), started + c.hold_timeout);
}

#[test]
fn an_old_primary_still_up_on_an_older_timeline_is_fenced() {
    let c = cluster("30s");
    c.record(0, 0, answered(false, 1), None, None);
    c.record(1, 0, answered(false, 2), None, None);
    let view = c.view();
    assert_eq!(view.primary, Some(1));
    assert!(view.nodes[0].fenced && !view.nodes[1].fenced);
    assert!(view.nodes[0].drained_at.is_some());
    assert_eq!(
        c.incidents.open_id(),
        Some(1),
        "the primary's demotion opens failover event 1, before its decision is logged"
    );
}

#[tokio::test]
async fn a_hold_that_runs_out_releases_waiters_and_is_reported_once() {
    let c = cluster("50ms");
    c.record(0, 0, answered(false, 1), None, None);
    c.record(0, 0, failed(), None, None);
    assert!(c.hold().is_some());
    let started = Instant::now();
    let resumed = tokio::time::timeout(Duration::from_secs(5), c.wait_while_held())
        .await
        .expect("released by the hold's budget");
    assert!(!resumed, "the budget ran out, nothing resumed");
    assert!(started.elapsed() >= Duration::from_millis(40));
    c.record(1, 0, answered(true, 1), None, None);
    assert!(
        c.take_expired_hold().is_none(),
        "reported by the probe above, once"
    );
}
