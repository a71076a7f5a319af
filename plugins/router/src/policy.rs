//! The routing decision and the settings contract, as plain Rust: nothing here depends on
//! the generated bindings, so `cargo test` exercises it on the host target. The clock and
//! the session's application name come in as closures, called only when a decision needs
//! them (both are host calls in the component).

use std::collections::HashMap;
use std::sync::Mutex;

use switchyard_plugin_kit::{Plugin, Settings};

/// Settings keys this plugin understands.
pub const KNOWN_SETTINGS: [&str; 4] = [
    "read_your_writes_wait_ms",
    "primary_applications",
    "replica_applications",
    "version_tag",
];

/// The longest single `wait`: a replica that catches up is used within this long.
pub const MAX_STEP_MS: u32 = 20;

/// A session that asks again within this long after a `wait` is still in the same wait
/// (the host asks again after at most [`MAX_STEP_MS`]); a later ask starts a new one, so an
/// entry left behind (the host gave up, the session ended, its id was reused) costs
/// nothing but its room in the table.
pub const RESUME_GAP_NS: u64 = 1_000_000_000;

/// Sessions waiting at once that one instance tracks; past this, entries idle for
/// [`RESUME_GAP_NS`] are dropped, and if none is, a new wait is not started (the read goes
/// to the primary).
pub const MAX_TRACKED: usize = 10_000;

/// What the work is (mirrors WIT `query-kind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Read,
    Write,
    Ddl,
    TransactionControl,
    SessionControl,
    Unknown,
}

/// A node's role (mirrors WIT `role`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Primary,
    Replica,
    Unknown,
}

/// The fields of a WIT `node-info` the decision reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Node {
    pub role: Role,
    pub reachable: bool,
    pub fenced: bool,
    /// 0 when unknown.
    pub timeline: u32,
    /// Last replayed WAL position on a replica (0 when unknown).
    pub lsn: u64,
}

/// The fields of the WIT `session-info` and `query-info` the decision reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    pub session: u32,
    pub kind: Kind,
    /// The session's `default_transaction_read_only` at login.
    pub read_only: bool,
    /// 0: no commit to see; `u64::MAX`: a commit whose position is not known yet.
    pub last_commit_lsn: u64,
}

/// The answer (mirrors the WIT `route-decision` cases this plugin uses).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    Primary,
    AnyReplica,
    Wait(u32),
}

/// A read-your-writes event worth a counter in `SHOW PLUGINS` (one per wait, not per call).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A session began waiting for a replica to replay its last commit.
    WaitStarted,
    /// A waiting session's commit was replayed: the read goes to a replica.
    CaughtUp,
    /// A session waited its whole budget: the read goes to the primary.
    WaitSpent,
    /// The table was full of live waits: this read goes to the primary without waiting.
    Untracked,
}

impl Event {
    /// The counter's name.
    pub fn counter(self) -> &'static str {
        match self {
            Event::WaitStarted => "read_your_writes.waits",
            Event::CaughtUp => "read_your_writes.caught_up",
            Event::WaitSpent => "read_your_writes.primary_after_wait",
            Event::Untracked => "read_your_writes.untracked",
        }
    }
}

/// A decision, and the event it makes, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answer {
    pub route: Route,
    pub event: Option<Event>,
}

impl Answer {
    fn new(route: Route) -> Answer {
        Answer { route, event: None }
    }

    fn with(route: Route, event: Event) -> Answer {
        Answer {
            route,
            event: Some(event),
        }
    }
}

/// One entry of an application list: an exact `application_name`, or a prefix (written
/// with a trailing `*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pattern {
    Exact(String),
    Prefix(String),
}

impl Pattern {
    fn matches(&self, name: &str) -> bool {
        match self {
            Pattern::Exact(exact) => name == exact,
            Pattern::Prefix(prefix) => name.starts_with(prefix.as_str()),
        }
    }
}

/// A comma-separated list of application names (`a, b, batch-*`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applications(Vec<Pattern>);

impl Applications {
    /// The list in setting `key`'s text; an empty entry, or a `*` anywhere but at the end
    /// of an entry, is refused.
    pub fn parse(key: &str, text: &str) -> Result<Applications, String> {
        if text.trim().is_empty() {
            return Ok(Applications::default());
        }
        text.split(',')
            .map(|entry| {
                let entry = entry.trim();
                if entry.is_empty() {
                    return Err(format!("setting {key:?}: empty entry in {text:?}"));
                }
                let (body, prefix) = match entry.strip_suffix('*') {
                    Some(body) => (body, true),
                    None => (entry, false),
                };
                if body.contains('*') {
                    return Err(format!(
                        "setting {key:?}: {entry:?}: '*' may only end an entry (a prefix)"
                    ));
                }
                Ok(if prefix {
                    Pattern::Prefix(body.to_string())
                } else {
                    Pattern::Exact(body.to_string())
                })
            })
            .collect::<Result<_, _>>()
            .map(Applications)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn matches(&self, name: &str) -> bool {
        self.0.iter().any(|p| p.matches(name))
    }
}

/// The plugin's configuration, from its `[plugins.NAME.settings]` table (`version_tag` is
/// the kit's).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// How long in total a read may wait for a replica to replay the session's last commit
    /// before it goes to the primary (0: at once).
    pub read_your_writes_wait_ms: u32,
    /// Sessions whose work always goes to the primary.
    pub primary_applications: Applications,
    /// Sessions whose work goes to a replica whenever the host allows it.
    pub replica_applications: Applications,
}

impl Config {
    fn from_settings(s: &Settings<'_>) -> Result<Config, String> {
        let list = |key: &str| Applications::parse(key, s.text(key).unwrap_or(""));
        Ok(Config {
            read_your_writes_wait_ms: s.number("read_your_writes_wait_ms", 0u32)?,
            primary_applications: list("primary_applications")?,
            replica_applications: list("replica_applications")?,
        })
    }
}

/// One session's wait for a replica, as this instance saw it.
#[derive(Clone, Copy, Debug)]
struct Waiting {
    first_ns: u64,
    last_ns: u64,
}

/// The plugin: its settings, and the sessions now waiting for a replica to replay their
/// last commit (per instance).
#[derive(Debug, Default)]
pub struct Router {
    pub config: Config,
    waiting: Mutex<HashMap<u32, Waiting>>,
}

/// Whether `kind` in a session with this `read_only` is a read this plugin sends to a
/// replica. A transaction-control statement is one: the host sends it to a replica only
/// when it begins a transaction declared read-only (`BEGIN READ ONLY` on its own), and
/// clamps a plain `BEGIN` to the primary.
pub fn is_read(kind: Kind, read_only: bool) -> bool {
    match kind {
        Kind::Read | Kind::TransactionControl => true,
        Kind::Write | Kind::Ddl => false,
        Kind::SessionControl | Kind::Unknown => read_only,
    }
}

/// Whether a replica that may serve reads has replayed `lsn`: reachable, not fenced, a
/// replica, on the newest timeline among `nodes` (one on an older timeline follows a
/// history the primary left), with a replay position at or past `lsn`. `u64::MAX` (a commit
/// whose position is not known yet) is replayed by none.
pub fn replayed(nodes: impl Iterator<Item = Node> + Clone, lsn: u64) -> Option<bool> {
    let newest = nodes.clone().map(|n| n.timeline).max()?;
    let mut candidates = nodes
        .filter(|n| n.role == Role::Replica && n.reachable && !n.fenced && n.timeline == newest)
        .peekable();
    candidates.peek()?;
    Some(candidates.any(|n| n.lsn >= lsn))
}

impl Router {
    /// The route for `request`. `application` gives the session's `application_name`
    /// (called only when an application list is set); `nodes` the cluster; `now_ns` the
    /// monotonic clock (called only when the session's last commit is not replayed and a
    /// wait is allowed).
    pub fn route(
        &self,
        request: &Request,
        application: impl FnOnce() -> Option<String>,
        nodes: impl Iterator<Item = Node> + Clone,
        now_ns: impl FnOnce() -> u64,
    ) -> Answer {
        let config = &self.config;
        let mut replica_application = false;
        if !(config.primary_applications.is_empty() && config.replica_applications.is_empty()) {
            if let Some(name) = application() {
                if config.primary_applications.matches(&name) {
                    return Answer::new(Route::Primary);
                }
                replica_application = config.replica_applications.matches(&name);
            }
        }
        if !is_read(request.kind, request.read_only) {
            // A replica application's other work: the host decides (it keeps what it did
            // not classify as fit for a replica on the primary); no wait for it.
            let route = if replica_application {
                Route::AnyReplica
            } else {
                Route::Primary
            };
            return Answer::new(route);
        }
        self.read(request, nodes, now_ns)
    }

    /// A read: to a replica, unless the session's last commit is not replayed yet; then a
    /// wait within the budget, or the primary.
    fn read(
        &self,
        request: &Request,
        nodes: impl Iterator<Item = Node> + Clone,
        now_ns: impl FnOnce() -> u64,
    ) -> Answer {
        let lsn = request.last_commit_lsn;
        if lsn == 0 {
            return self.done_waiting(request.session, Route::AnyReplica);
        }
        match replayed(nodes, lsn) {
            Some(true) => return self.done_waiting(request.session, Route::AnyReplica),
            // No replica at all may serve reads: nothing to wait for.
            None => return self.done_waiting(request.session, Route::Primary),
            Some(false) => {}
        }
        let budget = self.config.read_your_writes_wait_ms;
        if budget == 0 {
            return Answer::new(Route::Primary);
        }
        let now = now_ns();
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = waiting.get_mut(&request.session) {
            if now.saturating_sub(w.last_ns) < RESUME_GAP_NS {
                let spent_ms = now.saturating_sub(w.first_ns) / 1_000_000;
                if spent_ms >= u64::from(budget) {
                    waiting.remove(&request.session);
                    return Answer::with(Route::Primary, Event::WaitSpent);
                }
                w.last_ns = now;
                let left = budget - spent_ms as u32;
                return Answer::new(Route::Wait(left.min(MAX_STEP_MS)));
            }
        } else if waiting.len() >= MAX_TRACKED {
            waiting.retain(|_, w| now.saturating_sub(w.last_ns) < RESUME_GAP_NS);
            if waiting.len() >= MAX_TRACKED {
                return Answer::with(Route::Primary, Event::Untracked);
            }
        }
        waiting.insert(
            request.session,
            Waiting {
                first_ns: now,
                last_ns: now,
            },
        );
        Answer::with(Route::Wait(budget.min(MAX_STEP_MS)), Event::WaitStarted)
    }

    /// `route` for a session that needs no (more) waiting; ends its wait if it had one.
    fn done_waiting(&self, session: u32, route: Route) -> Answer {
        if self.config.read_your_writes_wait_ms == 0 {
            return Answer::new(route);
        }
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        match (waiting.remove(&session), route) {
            (Some(_), Route::AnyReplica) => Answer::with(route, Event::CaughtUp),
            _ => Answer::new(route),
        }
    }

    /// Sessions this instance tracks as waiting (for the tests).
    pub fn tracked(&self) -> usize {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl Plugin for Router {
    const NAME: &'static str = "router";
    const SETTINGS: &'static [&'static str] = &KNOWN_SETTINGS;

    fn new(s: &Settings<'_>) -> Result<Router, String> {
        Ok(Router {
            config: Config::from_settings(s)?,
            waiting: Mutex::default(),
        })
    }

    /// `init` logs `router VERSION: read_your_writes_wait_ms N, P primary applications,
    /// R replica applications`.
    fn describe(&self) -> String {
        let c = &self.config;
        format!(
            "read_your_writes_wait_ms {}, {} primary applications, {} replica applications",
            c.read_your_writes_wait_ms,
            c.primary_applications.0.len(),
            c.replica_applications.0.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_plugin_kit::{configure, init_line};

    const MS: u64 = 1_000_000;

    fn settings(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// What `init` makes of these settings.
    fn router(pairs: &[(&str, &str)]) -> Router {
        configure::<Router>("0.1.0", &settings(pairs)).unwrap().plugin
    }

    fn refused(pairs: &[(&str, &str)]) -> String {
        configure::<Router>("0.1.0", &settings(pairs)).unwrap_err()
    }

    fn node(role: Role, timeline: u32, lsn: u64) -> Node {
        Node {
            role,
            reachable: true,
            fenced: false,
            timeline,
            lsn,
        }
    }

    /// A primary at 1000 and two replicas at 500 and 800, all on timeline 2.
    fn cluster() -> Vec<Node> {
        vec![
            node(Role::Primary, 2, 1000),
            node(Role::Replica, 2, 500),
            node(Role::Replica, 2, 800),
        ]
    }

    fn read(session: u32, last_commit_lsn: u64) -> Request {
        Request {
            session,
            kind: Kind::Read,
            read_only: false,
            last_commit_lsn,
        }
    }

    fn no_app() -> Option<String> {
        panic!("application_name asked for without an application list")
    }

    fn no_clock() -> u64 {
        panic!("the clock read when no wait was possible")
    }

    /// `router.route` for `request` on `nodes` at `now` ms, for a session without an
    /// application list.
    fn at(r: &Router, request: &Request, nodes: &[Node], now_ms: u64) -> Answer {
        r.route(request, no_app, nodes.iter().copied(), || now_ms * MS)
    }

    fn app(name: &str) -> impl FnOnce() -> Option<String> + '_ {
        move || Some(name.to_string())
    }

    #[test]
    fn reads_go_to_replicas_and_everything_else_to_the_primary() {
        let r = router(&[]);
        let nodes = cluster();
        let route = |kind, read_only| {
            let request = Request {
                kind,
                read_only,
                ..read(1, 0)
            };
            r.route(&request, no_app, nodes.iter().copied(), no_clock).route
        };
        assert_eq!(route(Kind::Read, false), Route::AnyReplica);
        assert_eq!(
            route(Kind::TransactionControl, false),
            Route::AnyReplica,
            "BEGIN READ ONLY"
        );
        for kind in [Kind::Write, Kind::Ddl, Kind::SessionControl, Kind::Unknown] {
            assert_eq!(route(kind, false), Route::Primary, "{kind:?}");
        }
        assert_eq!(
            route(Kind::SessionControl, true),
            Route::AnyReplica,
            "read-only session"
        );
        assert_eq!(route(Kind::Unknown, true), Route::AnyReplica, "read-only session");
        assert_eq!(
            route(Kind::Write, true),
            Route::Primary,
            "a write refused by the server anyway"
        );
    }

    #[test]
    fn a_replayed_commit_lets_the_read_go_to_a_replica_without_the_clock() {
        let r = router(&[("read_your_writes_wait_ms", "100")]);
        let nodes = cluster();
        for lsn in [0, 1, 500, 800] {
            let a = r.route(&read(1, lsn), no_app, nodes.iter().copied(), no_clock);
            assert_eq!(a, Answer::new(Route::AnyReplica), "lsn {lsn}");
        }
    }

    #[test]
    fn without_a_wait_budget_an_unreplayed_commit_goes_to_the_primary_at_once() {
        let r = router(&[]);
        let a = r.route(&read(1, 900), no_app, cluster().into_iter(), no_clock);
        assert_eq!(a, Answer::new(Route::Primary));
        assert_eq!(r.tracked(), 0);
    }

    #[test]
    fn an_unreplayed_commit_waits_in_steps_then_goes_to_the_primary_when_the_budget_is_spent() {
        let r = router(&[("read_your_writes_wait_ms", "50")]);
        let nodes = cluster();
        let req = read(7, 900);
        assert_eq!(
            at(&r, &req, &nodes, 1000),
            Answer::with(Route::Wait(20), Event::WaitStarted)
        );
        assert_eq!(at(&r, &req, &nodes, 1020), Answer::new(Route::Wait(20)));
        assert_eq!(
            at(&r, &req, &nodes, 1040),
            Answer::new(Route::Wait(10)),
            "the last step is what is left"
        );
        assert_eq!(
            at(&r, &req, &nodes, 1050),
            Answer::with(Route::Primary, Event::WaitSpent)
        );
        assert_eq!(r.tracked(), 0);
        // Another session's wait is its own.
        assert_eq!(at(&r, &read(8, 900), &nodes, 1045).route, Route::Wait(20));
        // The next commit's wait starts a new budget.
        assert_eq!(
            at(&r, &req, &nodes, 1060),
            Answer::with(Route::Wait(20), Event::WaitStarted)
        );
    }

    #[test]
    fn a_wait_ends_on_a_replica_once_one_replays_the_commit() {
        let r = router(&[("read_your_writes_wait_ms", "1000")]);
        let mut nodes = cluster();
        let req = read(7, 900);
        assert_eq!(at(&r, &req, &nodes, 0).route, Route::Wait(20));
        assert_eq!(at(&r, &req, &nodes, 20).route, Route::Wait(20));
        nodes[1].lsn = 900;
        assert_eq!(
            at(&r, &req, &nodes, 40),
            Answer::with(Route::AnyReplica, Event::CaughtUp)
        );
        assert_eq!(r.tracked(), 0);
    }

    #[test]
    fn a_commit_whose_position_is_pending_waits_then_goes_to_the_primary() {
        let r = router(&[("read_your_writes_wait_ms", "30")]);
        let mut nodes = cluster();
        nodes[1].lsn = u64::MAX - 1;
        let req = read(3, u64::MAX);
        assert_eq!(at(&r, &req, &nodes, 0).route, Route::Wait(20));
        assert_eq!(at(&r, &req, &nodes, 20).route, Route::Wait(10));
        assert_eq!(at(&r, &req, &nodes, 30).route, Route::Primary);
        let r = router(&[]);
        assert_eq!(at(&r, &req, &nodes, 0).route, Route::Primary);
    }

    #[test]
    fn only_replicas_that_may_serve_reads_count_as_having_replayed() {
        let req = read(1, 900);
        let caught_up = |f: fn(&mut Node)| {
            let mut nodes = cluster();
            nodes[1].lsn = 950;
            f(&mut nodes[1]);
            replayed(nodes.into_iter(), req.last_commit_lsn)
        };
        assert_eq!(caught_up(|_| {}), Some(true));
        assert_eq!(caught_up(|n| n.reachable = false), Some(false));
        assert_eq!(caught_up(|n| n.fenced = true), Some(false));
        assert_eq!(caught_up(|n| n.role = Role::Unknown), Some(false));
        assert_eq!(caught_up(|n| n.timeline = 1), Some(false), "an older timeline");
        // The primary's own position does not count; no replica at all: nothing to wait for.
        let alone = [node(Role::Primary, 2, 1000), node(Role::Replica, 2, 0)];
        let mut alone_down = alone;
        alone_down[1].reachable = false;
        assert_eq!(replayed(alone.into_iter(), 900), Some(false));
        assert_eq!(replayed(alone_down.into_iter(), 900), None);
        let r = router(&[("read_your_writes_wait_ms", "100")]);
        assert_eq!(
            r.route(&req, no_app, alone_down.into_iter(), no_clock).route,
            Route::Primary
        );
        assert_eq!(replayed(std::iter::empty(), 900), None);
    }

    #[test]
    fn a_wait_left_behind_is_not_resumed_later() {
        let r = router(&[("read_your_writes_wait_ms", "100")]);
        let nodes = cluster();
        let req = read(9, 900);
        assert_eq!(at(&r, &req, &nodes, 0).route, Route::Wait(20));
        // The host stopped asking (its hold budget, or the session ended and its id came back).
        assert_eq!(
            at(&r, &req, &nodes, 5_000),
            Answer::with(Route::Wait(20), Event::WaitStarted)
        );
        assert_eq!(at(&r, &req, &nodes, 5_020).route, Route::Wait(20));
    }

    #[test]
    fn the_table_of_waiting_sessions_is_bounded() {
        let r = router(&[("read_your_writes_wait_ms", "10000")]);
        let nodes = cluster();
        for id in 0..MAX_TRACKED as u32 {
            assert_eq!(at(&r, &read(id, 900), &nodes, 0).route, Route::Wait(20));
        }
        assert_eq!(r.tracked(), MAX_TRACKED);
        // Full of live waits: a new one is not started.
        let late = read(MAX_TRACKED as u32, 900);
        assert_eq!(
            at(&r, &late, &nodes, 10),
            Answer::with(Route::Primary, Event::Untracked)
        );
        assert_eq!(r.tracked(), MAX_TRACKED);
        // A live one goes on.
        assert_eq!(at(&r, &read(0, 900), &nodes, 500), Answer::new(Route::Wait(20)));
        // Once the others have not asked for the resume gap, they make room; session 0,
        // which asked 550 ms ago, keeps its entry.
        assert_eq!(
            at(&r, &late, &nodes, 1_050),
            Answer::with(Route::Wait(20), Event::WaitStarted)
        );
        assert_eq!(r.tracked(), 2);
    }

    #[test]
    fn application_lists_take_exact_names_and_prefixes() {
        let r = router(&[
            ("primary_applications", "billing, batch-*"),
            ("replica_applications", "reports*,dash"),
        ]);
        let nodes = cluster();
        let route = |kind, name: &str| {
            let request = Request { kind, ..read(1, 0) };
            r.route(&request, app(name), nodes.iter().copied(), no_clock)
                .route
        };
        assert_eq!(route(Kind::Read, "billing"), Route::Primary);
        assert_eq!(route(Kind::Read, "batch-nightly"), Route::Primary);
        assert_eq!(
            route(Kind::Read, "batch"),
            Route::AnyReplica,
            "not the prefix 'batch-'"
        );
        assert_eq!(
            route(Kind::Read, "billing2"),
            Route::AnyReplica,
            "exact names are exact"
        );
        assert_eq!(route(Kind::SessionControl, "reports-eu"), Route::AnyReplica);
        assert_eq!(
            route(Kind::Write, "dash"),
            Route::AnyReplica,
            "the host clamps writes"
        );
        assert_eq!(route(Kind::SessionControl, "dashboard"), Route::Primary);
        assert_eq!(route(Kind::Read, ""), Route::AnyReplica);
        // No session details (outside a session): the default policy.
        let request = read(1, 0);
        assert_eq!(
            r.route(&request, || None, nodes.iter().copied(), no_clock).route,
            Route::AnyReplica
        );
    }

    #[test]
    fn a_primary_application_never_waits_and_a_replica_application_waits_only_for_reads() {
        let r = router(&[
            ("read_your_writes_wait_ms", "100"),
            ("primary_applications", "oltp"),
            ("replica_applications", "bi"),
        ]);
        let nodes = cluster();
        let req = read(1, 900);
        assert_eq!(
            r.route(&req, app("oltp"), nodes.iter().copied(), no_clock).route,
            Route::Primary
        );
        let write = Request {
            kind: Kind::Write,
            ..req
        };
        assert_eq!(
            r.route(&write, app("bi"), nodes.iter().copied(), no_clock).route,
            Route::AnyReplica
        );
        assert_eq!(
            r.route(&req, app("bi"), nodes.iter().copied(), || 0).route,
            Route::Wait(20)
        );
    }

    #[test]
    fn settings_are_checked() {
        let c = router(&[]).config;
        assert_eq!(c, Config::default());
        let r = router(&[
            ("read_your_writes_wait_ms", "250"),
            ("primary_applications", " a ,b* "),
            ("replica_applications", ""),
            ("version_tag", "blue"),
        ]);
        assert_eq!(r.config.read_your_writes_wait_ms, 250);
        assert_eq!(
            r.config.primary_applications,
            Applications(vec![Pattern::Exact("a".into()), Pattern::Prefix("b".into())])
        );
        assert!(r.config.replica_applications.is_empty());
        let c = configure::<Router>("0.1.0", &settings(&[("read_your_writes_wait_ms", "250")])).unwrap();
        assert_eq!(
            init_line(&c),
            "router 0.1.0: read_your_writes_wait_ms 250, 0 primary applications, 0 replica applications"
        );
        assert_eq!(
            refused(&[("read_your_writes_wait", "5")]),
            r#"unknown setting "read_your_writes_wait" (known settings: read_your_writes_wait_ms, primary_applications, replica_applications, version_tag)"#
        );
        assert_eq!(
            refused(&[("read_your_writes_wait_ms", "-1")]),
            r#"setting "read_your_writes_wait_ms": "-1" is not a whole number in range"#
        );
        assert_eq!(
            refused(&[("primary_applications", "a,,b")]),
            r#"setting "primary_applications": empty entry in "a,,b""#
        );
        assert_eq!(
            refused(&[("replica_applications", "a*b")]),
            r#"setting "replica_applications": "a*b": '*' may only end an entry (a prefix)"#
        );
    }
}
