//! The facade every decision point asks (sessions for pool mode, routing and retries, the
//! topology for health and switchover): the one path from a
//! decision to a plugin. It holds, per hook and per database or cluster, what answers now
//! (a plugin or [`BuiltIn`]) and does in one place what every decision needs:
//!
//! - the fallback: a failed call is answered by the built-in decision;
//! - the log of a failure run, once when it starts and once when the hook answers again
//!   (the plugin host also counts each failure for `SHOW PLUGINS`);
//! - the refresh after a reload: the wiring [`Policies::install`]s a new [`Assignment`];
//!   topology decisions see it at once, a session at its next transaction (a transaction
//!   in flight finishes with the hook it began with), checked with one generation compare;
//! - the safety clamps, whatever a hook answers: a server holding the client's state stays
//!   with it, only what provably did not take effect is retried ([`retry::allowed`]), work
//!   not classified as fit for a replica runs on the primary ([`router::clamp`]), and
//!   traffic moves only to the primary the probes confirm;
//! - the policy trace ([`Tracer`]): when on, each call's inputs and the hook's answer
//!   (before the clamps) are recorded; when off, that costs one relaxed atomic load.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use switchyard_protocol::TransactionStatus;

use super::hooks::{
    BuiltIn, Decider, HealthHook, HookError, PoolModeHook, RetryHook, RouterHook, SwitchoverHook,
};
use super::pool_mode::{self, ReadyAction, ReadyFacts};
use super::retry::{self, FailedRequest, RetryDecision};
use super::router::{self, Route, RouteRequest};
use super::session::SessionFacts;
use super::switchover::{self, Action, NodeInfo, TopologyEvent};
use super::topology::{self, ProbeInput, Verdict};
use super::trace::{By, Call, Tracer};
use crate::config::{HookKind, PoolMode};

/// What a hook's decisions are about: a database (session hooks) or a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Scope {
    Database(String),
    Cluster(String),
    /// The built-in answering wherever no plugin is assigned; it never fails.
    Everywhere,
}

/// One hook's implementation for one database or cluster, and whether its calls are
/// failing now (the failure run the log reports).
pub struct Slot<H: ?Sized> {
    kind: HookKind,
    scope: Scope,
    failing: AtomicBool,
    hook: Arc<H>,
}

impl<H: ?Sized + Decider> Slot<H> {
    fn new(kind: HookKind, scope: Scope, hook: Arc<H>) -> Arc<Slot<H>> {
        Arc::new(Slot {
            kind,
            scope,
            failing: AtomicBool::new(false),
            hook,
        })
    }

    fn builtin(&self) -> bool {
        matches!(self.scope, Scope::Everywhere)
    }

    /// Who gave `answer` (from [`Slot::ask`]), and the plugin's name if one serves here.
    fn by<T>(&self, answer: &Result<T, T>) -> (By, Option<&str>) {
        match answer {
            _ if self.builtin() => (By::BuiltIn, None),
            Ok(_) => (By::Plugin, Some(self.hook.name())),
            Err(_) => (By::Fallback, Some(self.hook.name())),
        }
    }

    /// The hook's answer, or `fallback`'s when the call fails (`Err` carries it). A
    /// success costs one relaxed load beyond the call.
    fn ask<T>(
        &self,
        call: impl FnOnce(&H) -> Result<T, HookError>,
        fallback: impl FnOnce() -> T,
    ) -> Result<T, T> {
        match call(&*self.hook) {
            Ok(answer) => {
                if self.failing.load(Ordering::Relaxed) && self.failing.swap(false, Ordering::Relaxed) {
                    self.log_recovery();
                }
                Ok(answer)
            }
            Err(e) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    self.log_failure(&e);
                }
                Err(fallback())
            }
        }
    }

    fn log_failure(&self, error: &HookError) {
        let (hook, plugin) = (self.kind.as_str(), self.hook.name());
        match &self.scope {
            Scope::Cluster(cluster) => {
                tracing::warn!(%cluster, plugin, %error, "{hook} plugin failed; the built-in {hook} policy answers until it succeeds again")
            }
            Scope::Database(database) => {
                tracing::warn!(%database, plugin, %error, "{hook} plugin failed; the built-in {hook} policy answers until it succeeds again")
            }
            Scope::Everywhere => tracing::warn!(plugin, %error, "{hook} policy failed"),
        }
    }

    fn log_recovery(&self) {
        let (hook, plugin) = (self.kind.as_str(), self.hook.name());
        match &self.scope {
            Scope::Cluster(cluster) => tracing::info!(%cluster, plugin, "{hook} plugin answers again"),
            Scope::Database(database) => tracing::info!(%database, plugin, "{hook} plugin answers again"),
            Scope::Everywhere => tracing::info!(plugin, "{hook} policy answers again"),
        }
    }
}

/// Which implementation answers each hook for each database and cluster: one generation
/// of the plugin set, built by the wiring (the plugin registry) and installed whole.
pub struct Assignment {
    generation: u64,
    pool_mode: HashMap<String, Arc<Slot<dyn PoolModeHook>>>,
    retry: HashMap<String, Arc<Slot<dyn RetryHook>>>,
    router: HashMap<String, Arc<Slot<dyn RouterHook>>>,
    health: HashMap<String, Arc<Slot<dyn HealthHook>>>,
    switchover: HashMap<String, Arc<Slot<dyn SwitchoverHook>>>,
    builtin_pool_mode: Arc<Slot<dyn PoolModeHook>>,
    builtin_retry: Arc<Slot<dyn RetryHook>>,
    builtin_router: Arc<Slot<dyn RouterHook>>,
    builtin_health: Arc<Slot<dyn HealthHook>>,
    builtin_switchover: Arc<Slot<dyn SwitchoverHook>>,
}

impl Assignment {
    /// The built-in everywhere; `generation` must change with every installed assignment.
    pub fn new(generation: u64) -> Assignment {
        let builtin = Arc::new(BuiltIn);
        Assignment {
            generation,
            pool_mode: HashMap::new(),
            retry: HashMap::new(),
            router: HashMap::new(),
            health: HashMap::new(),
            switchover: HashMap::new(),
            builtin_pool_mode: Slot::new(
                HookKind::PoolMode,
                Scope::Everywhere,
                builtin.clone() as Arc<dyn PoolModeHook>,
            ),
            builtin_retry: Slot::new(
                HookKind::Retry,
                Scope::Everywhere,
                builtin.clone() as Arc<dyn RetryHook>,
            ),
            builtin_router: Slot::new(
                HookKind::Router,
                Scope::Everywhere,
                builtin.clone() as Arc<dyn RouterHook>,
            ),
            builtin_health: Slot::new(
                HookKind::Health,
                Scope::Everywhere,
                builtin.clone() as Arc<dyn HealthHook>,
            ),
            builtin_switchover: Slot::new(
                HookKind::Switchover,
                Scope::Everywhere,
                builtin as Arc<dyn SwitchoverHook>,
            ),
        }
    }

    /// `hook` decides pool mode for `database`.
    pub fn serve_pool_mode(&mut self, database: &str, hook: Arc<dyn PoolModeHook>) {
        let slot = Slot::new(HookKind::PoolMode, Scope::Database(database.to_string()), hook);
        self.pool_mode.insert(database.to_string(), slot);
    }

    /// `hook` decides retries of `database`'s failed requests.
    pub fn serve_retry(&mut self, database: &str, hook: Arc<dyn RetryHook>) {
        let slot = Slot::new(HookKind::Retry, Scope::Database(database.to_string()), hook);
        self.retry.insert(database.to_string(), slot);
    }

    /// `hook` routes `database`'s transactions.
    pub fn serve_router(&mut self, database: &str, hook: Arc<dyn RouterHook>) {
        let slot = Slot::new(HookKind::Router, Scope::Database(database.to_string()), hook);
        self.router.insert(database.to_string(), slot);
    }

    /// `hook` judges probes of `cluster`'s nodes.
    pub fn serve_health(&mut self, cluster: &str, hook: Arc<dyn HealthHook>) {
        let slot = Slot::new(HookKind::Health, Scope::Cluster(cluster.to_string()), hook);
        self.health.insert(cluster.to_string(), slot);
    }

    /// `hook` decides what `cluster`'s topology events do to traffic.
    pub fn serve_switchover(&mut self, cluster: &str, hook: Arc<dyn SwitchoverHook>) {
        let slot = Slot::new(HookKind::Switchover, Scope::Cluster(cluster.to_string()), hook);
        self.switchover.insert(cluster.to_string(), slot);
    }

    fn pool_mode(&self, database: &str) -> &Arc<Slot<dyn PoolModeHook>> {
        self.pool_mode.get(database).unwrap_or(&self.builtin_pool_mode)
    }

    fn retry(&self, database: &str) -> &Arc<Slot<dyn RetryHook>> {
        self.retry.get(database).unwrap_or(&self.builtin_retry)
    }

    fn router(&self, database: &str) -> &Arc<Slot<dyn RouterHook>> {
        self.router.get(database).unwrap_or(&self.builtin_router)
    }

    fn health(&self, cluster: &str) -> &Arc<Slot<dyn HealthHook>> {
        self.health.get(cluster).unwrap_or(&self.builtin_health)
    }

    fn switchover(&self, cluster: &str) -> &Arc<Slot<dyn SwitchoverHook>> {
        self.switchover.get(cluster).unwrap_or(&self.builtin_switchover)
    }
}

/// A session's side of the facade: its pool-mode and router hooks as of the assignment
/// `generation` (refreshed when a transaction starts).
pub struct SessionPolicies {
    pool_mode: Arc<Slot<dyn PoolModeHook>>,
    router: Arc<Slot<dyn RouterHook>>,
    generation: u64,
}

impl SessionPolicies {
    /// Whether the built-in router answers this session (as of its last refresh).
    pub fn builtin_router(&self) -> bool {
        self.router.builtin()
    }
}

/// A switchover decision and who made it, for the decision log.
pub struct SwitchoverDecision {
    pub actions: Vec<Action>,
    /// `built-in`, `plugin NAME`, or `built-in (plugin NAME failed)`.
    pub by: String,
    /// Nodes the answer moved traffic to that the probes do not confirm as primary: those
    /// `move-to`s were dropped (the caller, which knows the nodes' addresses, logs them).
    pub ignored: Vec<usize>,
}

/// The facade: see the module docs.
pub struct Policies {
    current: ArcSwap<Assignment>,
    /// `current`'s generation, stored after it: what a session's refresh compares first,
    /// one atomic load where loading `current` costs about 75 instructions per transaction.
    generation: AtomicU64,
    trace: Tracer,
}

impl Default for Policies {
    /// The built-in policies everywhere, until an assignment is installed.
    fn default() -> Policies {
        Policies {
            current: ArcSwap::from_pointee(Assignment::new(0)),
            generation: AtomicU64::new(0),
            trace: Tracer::default(),
        }
    }
}

impl Policies {
    /// The policy trace: what `[trace]`, `TRACE ON` and the writer task act on.
    pub fn trace(&self) -> &Tracer {
        &self.trace
    }

    /// Makes `assignment` the one every later decision uses (a session's at its next
    /// transaction).
    pub fn install(&self, assignment: Assignment) {
        let generation = assignment.generation;
        self.current.store(Arc::new(assignment));
        self.generation.store(generation, Ordering::Release);
    }

    /// The policies of a new session of `database`.
    pub fn session(&self, database: &str) -> SessionPolicies {
        let current = self.current.load();
        SessionPolicies {
            pool_mode: current.pool_mode(database).clone(),
            router: current.router(database).clone(),
            generation: current.generation,
        }
    }

    /// The pool-mode decision at a ReadyForQuery boundary of a database in pool mode
    /// `mode`. The first boundary of a transaction (`facts.statements == 1`) picks up an
    /// installed assignment. Whatever the hook answers, a server inside a transaction (open
    /// or failed) or holding the client's state stays with it.
    pub fn on_ready(
        &self,
        session: &mut SessionPolicies,
        about: &mut SessionFacts,
        mode: PoolMode,
        facts: ReadyFacts,
    ) -> ReadyAction {
        if facts.statements == 1 {
            self.refresh(session, about);
        }
        // The built-in answers directly: no plugin, no indirect call on the hot path.
        let answer = if session.pool_mode.builtin() {
            Ok(pool_mode::decide(mode, facts))
        } else {
            session.pool_mode.ask(
                |hook| hook.on_ready(about, mode, facts),
                || pool_mode::decide(mode, facts),
            )
        };
        if self.trace.on() {
            let (by, plugin) = session.pool_mode.by(&answer);
            let call = Call::PoolMode {
                session: about.snapshot(),
                mode,
                facts,
                decision: answer.clone().unwrap_or_else(|fallback| fallback),
            };
            self.trace.record(call, by, plugin);
        }
        let action = answer.unwrap_or_else(|fallback| fallback);
        if action == ReadyAction::Release
            && (facts.holds_server_state || facts.status != TransactionStatus::Idle)
        {
            return ReadyAction::Keep;
        }
        action
    }

    /// Whether a session may pipeline its standalone statements, asked once at its start:
    /// the built-in answers with the pool's `pipeline` setting; a plugin that fails is
    /// taken as no.
    pub fn may_pipeline(&self, session: &SessionPolicies, about: &mut SessionFacts, setting: bool) -> bool {
        let answer = if session.pool_mode.builtin() {
            Ok(setting)
        } else {
            session
                .pool_mode
                .ask(|hook| hook.may_pipeline(about, setting), || false)
        };
        if self.trace.on() {
            let (by, plugin) = session.pool_mode.by(&answer);
            let decision = answer.unwrap_or_else(|fallback| fallback);
            let call = Call::MayPipeline {
                session: about.snapshot(),
                setting,
                decision,
            };
            self.trace.record(call, by, plugin);
        }
        answer.unwrap_or_else(|fallback| fallback)
    }

    /// What to do with a request its server failed (`budget`: the longest it may take in
    /// all). Whatever the hook answers, only what provably did not take effect runs again.
    pub fn on_error(
        &self,
        session: &mut SessionFacts,
        status: TransactionStatus,
        failed: &FailedRequest,
        budget: Duration,
    ) -> RetryDecision {
        let slot = self.current.load().retry(session.database()).clone();
        let answer = slot.ask(
            |hook| hook.on_error(session, status, failed, budget),
            || retry::decide(failed, budget),
        );
        if self.trace.on() {
            let (by, plugin) = slot.by(&answer);
            let call = Call::Retry {
                session: session.snapshot(),
                status,
                failed: failed.clone(),
                budget,
                decision: answer.unwrap_or_else(|fallback| fallback),
            };
            self.trace.record(call, by, plugin);
        }
        let decision = answer.unwrap_or_else(|fallback| fallback);
        if retry::allowed(failed) {
            decision
        } else {
            RetryDecision::Surface
        }
    }

    /// A session's hooks, brought to the installed assignment (one generation compare).
    fn refresh(&self, session: &mut SessionPolicies, about: &SessionFacts) {
        if self.generation.load(Ordering::Acquire) == session.generation {
            return;
        }
        let current = self.current.load();
        if current.generation != session.generation {
            session.pool_mode = current.pool_mode(about.database()).clone();
            session.router = current.router(about.database()).clone();
            session.generation = current.generation;
        }
    }

    /// Where the session's next transaction (or autocommit statement) runs; `nodes` gives
    /// the cluster's nodes to a router plugin (the built-in needs none, and is answered
    /// without building them). Whatever the router answers, work the host did not
    /// classify as fit for a replica runs on the primary.
    pub fn route(
        &self,
        session: &mut SessionPolicies,
        about: &mut SessionFacts,
        request: &RouteRequest,
        nodes: impl FnOnce() -> Vec<NodeInfo>,
    ) -> Route {
        self.refresh(session, about);
        let tracing = self.trace.on();
        if session.router.builtin() && !tracing {
            return router::route(request);
        }
        let nodes = nodes();
        let answer = if session.router.builtin() {
            Ok(router::route(request))
        } else {
            session.router.ask(
                |hook| hook.route(about, request, &nodes),
                || router::route(request),
            )
        };
        if tracing {
            let (by, plugin) = session.router.by(&answer);
            let call = Call::Router {
                session: about.snapshot(),
                request: *request,
                nodes,
                decision: answer.clone().unwrap_or_else(|fallback| fallback),
            };
            self.trace.record(call, by, plugin);
        }
        router::clamp(request, answer.unwrap_or_else(|fallback| fallback))
    }

    /// The verdict on one probe of a node of `cluster`.
    pub fn judge(&self, cluster: &str, input: &ProbeInput<'_>) -> Verdict {
        let slot = self.current.load().health(cluster).clone();
        let answer = slot.ask(|hook| hook.evaluate(input), || topology::evaluate(&input.sample));
        if self.trace.on() {
            let (by, plugin) = slot.by(&answer);
            let call = Call::Health {
                cluster: cluster.to_string(),
                input: ProbeInput {
                    error: input.error.as_deref().map(|e| e.to_string().into()),
                    ..input.clone()
                },
                decision: answer.unwrap_or_else(|fallback| fallback),
            };
            self.trace.record(call, by, plugin);
        }
        answer.unwrap_or_else(|fallback| fallback)
    }

    /// The actions for `event` in `cluster`, whose nodes are `nodes` and whose primary as
    /// the probes confirm it is `confirmed`. A `move-to` any other node is dropped (and
    /// reported in `ignored`): traffic goes only to the confirmed primary.
    pub fn on_event(
        &self,
        cluster: &str,
        event: TopologyEvent,
        nodes: &[NodeInfo],
        confirmed: Option<usize>,
        hold_timeout: Duration,
    ) -> SwitchoverDecision {
        let slot = self.current.load().switchover(cluster).clone();
        let answer = slot.ask(
            |hook| hook.on_event(event, nodes, hold_timeout),
            || switchover::on_event(event, nodes, hold_timeout),
        );
        if self.trace.on() {
            let (by, plugin) = slot.by(&answer);
            let call = Call::Switchover {
                cluster: cluster.to_string(),
                event,
                nodes: nodes.to_vec(),
                hold_timeout,
                decision: answer.clone().unwrap_or_else(|fallback| fallback),
            };
            self.trace.record(call, by, plugin);
        }
        let (mut actions, by) = match answer {
            Ok(actions) if slot.builtin() => (actions, "built-in".to_string()),
            Ok(actions) => (actions, format!("plugin {}", slot.hook.name())),
            Err(actions) => (actions, format!("built-in (plugin {} failed)", slot.hook.name())),
        };
        let mut ignored = Vec::new();
        actions.retain(|action| match *action {
            Action::MoveTo(n) if confirmed != Some(n) => {
                ignored.push(n);
                false
            }
            _ => true,
        });
        SwitchoverDecision { actions, by, ignored }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ReadRouting;
    use crate::policy::retry::{Fate, Phase};
    use crate::policy::topology::{ProbeSample, Role};
    use crate::sql::route::Kind;

    /// A hook that fails every call, as a trapping plugin does.
    struct Failing;

    #[derive(Debug, thiserror::Error)]
    #[error("trapped")]
    struct Trapped;

    impl Decider for Failing {
        fn name(&self) -> &str {
            "failing"
        }
    }

    impl PoolModeHook for Failing {
        fn on_ready(
            &self,
            _: &mut SessionFacts,
            _: PoolMode,
            _: ReadyFacts,
        ) -> Result<ReadyAction, HookError> {
            Err(HookError::new(Trapped))
        }
    }

    /// A hook that answers what the built-in would not: release always, retry always,
    /// move traffic to node 1, route everything to node 1.
    struct Reckless;

    impl Decider for Reckless {
        fn name(&self) -> &str {
            "reckless"
        }
    }

    impl PoolModeHook for Reckless {
        fn on_ready(
            &self,
            _: &mut SessionFacts,
            _: PoolMode,
            _: ReadyFacts,
        ) -> Result<ReadyAction, HookError> {
            Ok(ReadyAction::Release)
        }
    }

    impl RetryHook for Reckless {
        fn on_error(
            &self,
            _: &mut SessionFacts,
            _: TransactionStatus,
            _: &FailedRequest,
            _: Duration,
        ) -> Result<RetryDecision, HookError> {
            Ok(RetryDecision::RetryAfter(Duration::ZERO))
        }
    }

    impl RouterHook for Reckless {
        fn route(&self, _: &mut SessionFacts, _: &RouteRequest, _: &[NodeInfo]) -> Result<Route, HookError> {
            Ok(Route::Node(1))
        }
    }

    impl SwitchoverHook for Reckless {
        fn on_event(&self, _: TopologyEvent, _: &[NodeInfo], _: Duration) -> Result<Vec<Action>, HookError> {
            Ok(vec![Action::MoveTo(1), Action::Resume])
        }
    }

    fn facts() -> SessionFacts {
        SessionFacts::new(1, "u", "db", "", "127.0.0.1:1".into(), false)
    }

    fn ready(status: TransactionStatus, statements: u32, holds_server_state: bool) -> ReadyFacts {
        ReadyFacts {
            status,
            statements,
            holds_server_state,
        }
    }

    fn installed(generation: u64, hook: impl FnOnce(&mut Assignment)) -> Policies {
        let policies = Policies::default();
        let mut assignment = Assignment::new(generation);
        hook(&mut assignment);
        policies.install(assignment);
        policies
    }

    #[test]
    fn without_plugins_the_built_ins_answer() {
        let policies = Policies::default();
        let (mut session, mut about) = (policies.session("db"), facts());
        let idle = ready(TransactionStatus::Idle, 1, false);
        assert_eq!(
            policies.on_ready(&mut session, &mut about, PoolMode::Transaction, idle),
            ReadyAction::Release
        );
        assert_eq!(
            policies.on_ready(&mut session, &mut about, PoolMode::Session, idle),
            ReadyAction::Keep
        );
        let read = RouteRequest {
            kind: Kind::Read,
            replica_ok: true,
            in_transaction: false,
            read_routing: ReadRouting::Off,
            last_commit_lsn: 0,
        };
        assert_eq!(
            policies.route(&mut session, &mut about, &read, Vec::new),
            Route::Primary
        );
        let sample = ProbeSample {
            reachable: true,
            ..Default::default()
        };
        let input = ProbeInput {
            node: 0,
            sample,
            primary_lsn: 0,
            latency: None,
            error: None,
        };
        assert_eq!(policies.judge("main", &input).role, Role::Primary);
    }

    #[test]
    fn a_failing_hook_is_answered_by_the_built_in() {
        let policies = installed(1, |a| a.serve_pool_mode("db", Arc::new(Failing)));
        let (mut session, mut about) = (policies.session("db"), facts());
        for _ in 0..3 {
            assert_eq!(
                policies.on_ready(
                    &mut session,
                    &mut about,
                    PoolMode::Transaction,
                    ready(TransactionStatus::Idle, 1, false)
                ),
                ReadyAction::Release
            );
        }
        assert!(session.pool_mode.failing.load(Ordering::Relaxed));
    }

    #[test]
    fn a_server_holding_client_state_stays_whatever_the_hook_says() {
        let policies = installed(1, |a| a.serve_pool_mode("db", Arc::new(Reckless)));
        let (mut session, mut about) = (policies.session("db"), facts());
        assert_eq!(
            policies.on_ready(
                &mut session,
                &mut about,
                PoolMode::Transaction,
                ready(TransactionStatus::Idle, 1, true)
            ),
            ReadyAction::Keep
        );
        assert_eq!(
            policies.on_ready(
                &mut session,
                &mut about,
                PoolMode::Transaction,
                ready(TransactionStatus::Idle, 1, false)
            ),
            ReadyAction::Release
        );
    }

    #[test]
    fn a_server_inside_a_transaction_stays_whatever_the_hook_says() {
        let policies = installed(1, |a| a.serve_pool_mode("db", Arc::new(Reckless)));
        let (mut session, mut about) = (policies.session("db"), facts());
        for status in [TransactionStatus::InTransaction, TransactionStatus::Failed] {
            assert_eq!(
                policies.on_ready(
                    &mut session,
                    &mut about,
                    PoolMode::Transaction,
                    ready(status, 1, false)
                ),
                ReadyAction::Keep,
                "{status:?}"
            );
        }
    }

    #[test]
    fn a_session_picks_up_a_new_assignment_at_its_next_transaction() {
        let policies = Policies::default();
        let (mut session, mut about) = (policies.session("db"), facts());
        let mut assignment = Assignment::new(1);
        assignment.serve_pool_mode("db", Arc::new(Reckless));
        policies.install(assignment);
        // Inside a transaction (second statement), the hook it began with answers.
        let later = ready(TransactionStatus::InTransaction, 2, false);
        assert_eq!(
            policies.on_ready(&mut session, &mut about, PoolMode::Session, later),
            ReadyAction::Keep
        );
        let first = ready(TransactionStatus::Idle, 1, false);
        assert_eq!(
            policies.on_ready(&mut session, &mut about, PoolMode::Session, first),
            ReadyAction::Release
        );
    }

    #[test]
    fn only_what_did_not_take_effect_is_retried_whatever_the_hook_says() {
        let policies = installed(1, |a| a.serve_retry("db", Arc::new(Reckless)));
        let mut about = facts();
        let mut failed = FailedRequest {
            sqlstate: "08006".into(),
            message: String::new(),
            phase: Phase::Commit,
            fate: Fate::Unknown,
            node: 0,
            attempt: 1,
            elapsed: Duration::ZERO,
        };
        let budget = Duration::from_secs(30);
        let status = TransactionStatus::Idle;
        assert_eq!(
            policies.on_error(&mut about, status, &failed, budget),
            RetryDecision::Surface
        );
        failed.phase = Phase::Connect;
        failed.fate = Fate::NotSent;
        assert_eq!(
            policies.on_error(&mut about, status, &failed, budget),
            RetryDecision::RetryAfter(Duration::ZERO)
        );
    }

    #[test]
    fn work_not_fit_for_a_replica_runs_on_the_primary_whatever_the_router_says() {
        let policies = installed(1, |a| a.serve_router("db", Arc::new(Reckless)));
        let (mut session, mut about) = (policies.session("db"), facts());
        let mut request = RouteRequest {
            kind: Kind::Write,
            replica_ok: false,
            in_transaction: false,
            read_routing: ReadRouting::Replicas,
            last_commit_lsn: 0,
        };
        assert_eq!(
            policies.route(&mut session, &mut about, &request, Vec::new),
            Route::Primary
        );
        request.replica_ok = true;
        request.kind = Kind::Read;
        assert_eq!(
            policies.route(&mut session, &mut about, &request, Vec::new),
            Route::Node(1)
        );
    }

    #[test]
    fn traffic_moves_only_to_the_confirmed_primary() {
        let policies = installed(1, |a| a.serve_switchover("main", Arc::new(Reckless)));
        let nodes = [NodeInfo {
            role: Role::Primary,
            reachable: true,
            fenced: false,
            timeline: 1,
            lsn: 0,
            lag_bytes: 0,
            primary: false,
        }; 2];
        let hold = Duration::from_secs(30);
        let event = TopologyEvent::PrimaryConfirmed(0);
        let unconfirmed = policies.on_event("main", event, &nodes, Some(0), hold);
        assert_eq!(unconfirmed.actions, vec![Action::Resume]);
        assert_eq!(unconfirmed.ignored, vec![1]);
        assert_eq!(unconfirmed.by, "plugin reckless");
        let confirmed = policies.on_event("main", event, &nodes, Some(1), hold);
        assert_eq!(confirmed.actions, vec![Action::MoveTo(1), Action::Resume]);
        let other = policies.on_event("other", event, &nodes, Some(0), hold);
        assert_eq!(other.actions, vec![Action::MoveTo(0), Action::Resume]);
        assert_eq!(other.by, "built-in");
    }
}
