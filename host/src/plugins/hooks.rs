//! Which hooks a component serves: the hook interfaces it exports decide. Export lookups are
//! resolved once per component (`HookIndices`, from its `InstancePre`) and bound once per
//! instance (`Hooks`), so a call is a direct typed call.

use wasmtime::component::{Instance, InstancePre};
use wasmtime::AsContextMut;

use super::bindings::exports::switchyard::policy::{
    health, lifecycle, pipelining, pool_mode, retry, router, switchover,
};
use super::instance::StoreState;
use crate::config::HookKind;

/// The WIT interface name a hook kind is exported under.
pub fn interface_name(kind: HookKind) -> String {
    format!("switchyard:policy/{}@0.1.0", kind.as_str())
}

/// The interface a pool-mode component exports when it decides pipelining too.
const PIPELINING: &str = "switchyard:policy/pipelining@0.1.0";

/// Export indices of one component: `lifecycle` (required) and each hook it exports.
#[derive(Clone)]
pub struct HookIndices {
    lifecycle: lifecycle::GuestIndices,
    pool_mode: Option<pool_mode::GuestIndices>,
    /// The optional pool-mode companion (pipelined transaction pooling).
    pipelining: Option<pipelining::GuestIndices>,
    router: Option<router::GuestIndices>,
    retry: Option<retry::GuestIndices>,
    switchover: Option<switchover::GuestIndices>,
    health: Option<health::GuestIndices>,
}

/// One instance's hook functions.
pub struct Hooks {
    pub lifecycle: lifecycle::Guest,
    pub pool_mode: Option<pool_mode::Guest>,
    pub pipelining: Option<pipelining::Guest>,
    pub router: Option<router::Guest>,
    pub retry: Option<retry::Guest>,
    pub switchover: Option<switchover::Guest>,
    pub health: Option<health::Guest>,
}

impl HookIndices {
    /// Looks up the exports; an error when `lifecycle` is missing or a hook interface is
    /// exported without the functions this version of the WIT package defines.
    pub fn new(pre: &InstancePre<StoreState>) -> wasmtime::Result<HookIndices> {
        let exports = |kind: HookKind| {
            pre.component()
                .get_export_index(None, interface_name(kind))
                .is_some()
        };
        let lifecycle = lifecycle::GuestIndices::new(pre).map_err(|e| {
            e.context("a plugin must export switchyard:policy/lifecycle@0.1.0 (init, version)")
        })?;
        Ok(HookIndices {
            lifecycle,
            pool_mode: exports(HookKind::PoolMode)
                .then(|| pool_mode::GuestIndices::new(pre))
                .transpose()?,
            pipelining: pre
                .component()
                .get_export_index(None, PIPELINING)
                .is_some()
                .then(|| pipelining::GuestIndices::new(pre))
                .transpose()?,
            router: exports(HookKind::Router)
                .then(|| router::GuestIndices::new(pre))
                .transpose()?,
            retry: exports(HookKind::Retry)
                .then(|| retry::GuestIndices::new(pre))
                .transpose()?,
            switchover: exports(HookKind::Switchover)
                .then(|| switchover::GuestIndices::new(pre))
                .transpose()?,
            health: exports(HookKind::Health)
                .then(|| health::GuestIndices::new(pre))
                .transpose()?,
        })
    }

    /// The component exports `pipelining` (with pool-mode).
    pub fn pipelines(&self) -> bool {
        self.pipelining.is_some()
    }

    /// The hook kinds the component exports.
    pub fn exported(&self) -> Vec<HookKind> {
        let present = [
            self.pool_mode.is_some(),
            self.router.is_some(),
            self.retry.is_some(),
            self.switchover.is_some(),
            self.health.is_some(),
        ];
        HookKind::ALL
            .into_iter()
            .zip(present)
            .filter_map(|(kind, present)| present.then_some(kind))
            .collect()
    }

    /// Binds the exports of a fresh instance.
    pub fn load(
        &self,
        mut store: impl AsContextMut<Data = StoreState>,
        instance: &Instance,
    ) -> wasmtime::Result<Hooks> {
        let mut store = store.as_context_mut();
        Ok(Hooks {
            lifecycle: self.lifecycle.load(&mut store, instance)?,
            pool_mode: self
                .pool_mode
                .as_ref()
                .map(|i| i.load(&mut store, instance))
                .transpose()?,
            pipelining: self
                .pipelining
                .as_ref()
                .map(|i| i.load(&mut store, instance))
                .transpose()?,
            router: self
                .router
                .as_ref()
                .map(|i| i.load(&mut store, instance))
                .transpose()?,
            retry: self
                .retry
                .as_ref()
                .map(|i| i.load(&mut store, instance))
                .transpose()?,
            switchover: self
                .switchover
                .as_ref()
                .map(|i| i.load(&mut store, instance))
                .transpose()?,
            health: self
                .health
                .as_ref()
                .map(|i| i.load(&mut store, instance))
                .transpose()?,
        })
    }

    /// Type-checks every exported hook against this version of the WIT package (a
    /// component built against another version fails here, at load, not at its first call).
    pub fn check(
        &self,
        mut store: impl AsContextMut<Data = StoreState>,
        instance: &Instance,
    ) -> wasmtime::Result<()> {
        self.load(store.as_context_mut(), instance).map(drop)
    }
}
