//! Runs one fuzz property and reports how many cases it ran.
//!
//! proptest's macro says nothing about how much it tested; the fuzz suites (`fuzz.rs` here,
//! `host/tests/scram_fuzz.rs`, which includes this file) go through [`fuzz`] instead, which
//! prints `fuzz: <property>: <n> cases in <ms> ms` (seen with `--nocapture`; `scripts/fuzz`
//! adds the lines up). The number of cases is `PROPTEST_CASES` when set, else the
//! property's short-run default, so `cargo test` stays quick and the long run is one
//! variable away.

use std::cell::Cell;
use std::time::Instant;

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

/// Cases per property in `cargo test`, unless `PROPTEST_CASES` says otherwise.
pub const SHORT_RUN_CASES: u32 = 1000;

/// Runs `test` on `cases` values of `strategy` (see the module docs), shrinking and
/// panicking with the minimal failing input if one fails.
pub fn fuzz<S: Strategy>(name: &str, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>) {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(SHORT_RUN_CASES);
    let config = Config {
        cases,
        // Failure persistence would write files next to the sources; a failure prints
        // its minimal input instead.
        failure_persistence: None,
        ..Config::default()
    };
    let ran = Cell::new(0u64);
    let start = Instant::now();
    let result = TestRunner::new(config).run(&strategy, |value| {
        ran.set(ran.get() + 1);
        test(value)
    });
    println!(
        "fuzz: {name}: {} cases in {} ms",
        ran.get(),
        start.elapsed().as_millis()
    );
    if let Err(e) = result {
        panic!("fuzz property {name} failed: {e}");
    }
}
