//! A ready-made test setup: a PostgreSQL cluster with the proxy in front.
//!
//! Most tests need exactly this, so they start with
//! `TestBed::start_with(|cfg| cfg.pool_size(4))?` and talk to
//! [`TestBed::endpoint`].
//!
//! Setting `SWITCHYARD_TARGET=direct` runs the same tests with no proxy, the
//! endpoint being the primary itself. That validates the tests (and this
//! crate) against real PostgreSQL behaviour; tests of proxy-only features
//! (pool limits, for example) skip themselves in that mode with
//! [`skip_if_direct!`](crate::skip_if_direct).

use anyhow::Result;

use crate::client::Endpoint;
use crate::cluster::{ClusterOptions, PgCluster};
use crate::proxy::{Launch, Proxy, ProxyConfig};

/// Cluster plus proxy. Fields drop in order: the proxy stops first.
pub struct TestBed {
    proxy: Option<Proxy>,
    pg: PgCluster,
}

impl TestBed {
    /// Whether tests target PostgreSQL directly (`SWITCHYARD_TARGET=direct`).
    pub fn direct_mode() -> bool {
        std::env::var("SWITCHYARD_TARGET").is_ok_and(|v| v == "direct")
    }

    /// A primary and the proxy with the default configuration.
    pub fn start() -> Result<Self> {
        Self::start_with(|cfg| cfg)
    }

    /// A primary and the proxy, configuration adjusted by `configure`.
    pub fn start_with(configure: impl FnOnce(ProxyConfig) -> ProxyConfig) -> Result<Self> {
        Self::start_full(ClusterOptions::default(), |cfg, _| Ok(configure(cfg)))
    }

    /// Full control over the cluster and the proxy configuration; the
    /// configuration closure can look at the running cluster (for example,
    /// to copy a password verifier from `pg_authid`).
    pub fn start_full(
        opts: ClusterOptions,
        configure: impl FnOnce(ProxyConfig, &PgCluster) -> Result<ProxyConfig>,
    ) -> Result<Self> {
        Self::start_launched(opts, Launch::default(), configure)
    }

    /// [`TestBed::start_full`] with the proxy run as `launch` says (extra arguments, say).
    pub fn start_launched(
        opts: ClusterOptions,
        launch: Launch,
        configure: impl FnOnce(ProxyConfig, &PgCluster) -> Result<ProxyConfig>,
    ) -> Result<Self> {
        let pg = PgCluster::start_with(opts)?;
        let proxy = if Self::direct_mode() {
            None
        } else {
            Some(Proxy::start_with(
                configure(ProxyConfig::for_cluster(&pg), &pg)?,
                launch,
            )?)
        };
        Ok(Self { proxy, pg })
    }

    /// Where clients connect: the proxy, or the primary in direct mode.
    pub fn endpoint(&self) -> Endpoint {
        match &self.proxy {
            Some(p) => Endpoint::new(&p.host(), p.port()),
            None => self.direct(),
        }
    }

    /// The primary, bypassing the proxy (for setup and verification).
    pub fn direct(&self) -> Endpoint {
        Endpoint::new(self.pg.primary().host(), self.pg.primary().port())
    }

    /// The cluster.
    pub fn pg(&self) -> &PgCluster {
        &self.pg
    }

    /// The cluster, mutably (to stop or promote nodes).
    pub fn pg_mut(&mut self) -> &mut PgCluster {
        &mut self.pg
    }

    /// The proxy; `None` in direct mode.
    pub fn proxy(&mut self) -> Option<&mut Proxy> {
        self.proxy.as_mut()
    }

    /// Fail (with its log tail) if the proxy crashed. No-op in direct mode.
    pub fn ensure_proxy_alive(&mut self) -> Result<()> {
        match self.proxy.as_mut() {
            Some(p) => p.ensure_running(),
            None => Ok(()),
        }
    }
}

/// Return early from a test that needs the proxy when running in direct
/// mode (`SWITCHYARD_TARGET=direct`), through [`env::skip`](crate::env::skip)
/// (which makes it a failure when `SWITCHYARD_NO_SKIP` is set).
#[macro_export]
macro_rules! skip_if_direct {
    () => {
        if $crate::TestBed::direct_mode() {
            return $crate::env::skip("this test needs the proxy (SWITCHYARD_TARGET=direct)");
        }
    };
}
