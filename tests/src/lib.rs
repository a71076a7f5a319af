//! Test bed for Switchyard's integration tests.
//!
//! Switchyard is tested as a black box: real PostgreSQL servers
//! ([`cluster`]), the real proxy binary ([`proxy`]), and real clients
//! (tokio-postgres via [`client`], hand-written wire messages via [`raw`],
//! and `psql`, `pgbench`, psycopg, node-postgres and pgjdbc via [`tools`]).
//! Tests live in `tests/tests/*.rs`; most start from a [`TestBed`].
//!
//! For failover work there is also a real Patroni cluster
//! ([`patroni::PatroniCluster`]: Patroni 4.1.5 nodes on loopback with a
//! private [`etcd::Etcd`]) and a load tool ([`load`]: clients alternating
//! INSERT and SELECT, counting errors by SQLSTATE, stalls and lost or
//! duplicated writes, in tokio-postgres and psycopg 3);
//! `tests/tests/patroni_bed.rs` proves them without the proxy.
//!
//! The crate deliberately does not depend on the `switchyard` crate, so the
//! tests build and the harness can be checked against plain PostgreSQL
//! (`SWITCHYARD_TARGET=direct`) whatever state the proxy is in.
//!
//! Environment knobs: `SWITCHYARD_BIN`, `SWITCHYARD_PROFILE`,
//! `SWITCHYARD_TARGET=direct`, `PG_BIN`, `SWITCHYARD_TEST_TMP`,
//! `SWITCHYARD_TEST_DEADLINE` (seconds a test may hold a cluster or proxy; see [`deadline`]),
//! `SWITCHYARD_KEEP_TMP=1`, `SWITCHYARD_PYTHON`, `SWITCHYARD_JDBC_JAR`,
//! `SWITCHYARD_PATRONI_VENV` (default `/opt/switchyard/patroni-4.1.5`),
//! `SWITCHYARD_ETCD` (default `/usr/bin/etcd`), `RUST_LOG` (passed to the
//! proxy; default `info`).

pub mod admin;
pub mod bed;
pub mod client;
pub mod cluster;
pub mod deadline;
pub mod env;
pub mod etcd;
pub mod http;
pub mod interrupt;
pub mod load;
pub mod patroni;
pub mod peak;
pub mod pki;
pub mod plugin;
pub mod ports;
pub mod promotion;
pub mod proxy;
pub mod raw;
pub mod relay;
pub mod scratch;
pub mod shipped;
pub mod tls;
pub mod tolerance;
pub mod tools;
pub mod watchdog;

pub use bed::TestBed;
pub use client::{describe_error, expect_sqlstate, sqlstate, Endpoint, PgResultExt};
pub use cluster::{roles, ClusterOptions, PgCluster, PgNode};
pub use proxy::{Proxy, ProxyConfig};
pub use tools::{Driver, Length, Pgbench, PgbenchResult, Psql, QueryMode};
