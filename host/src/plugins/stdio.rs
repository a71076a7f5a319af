//! The only WASI a plugin gets besides trapping stubs: `stdout` and `stderr` as output
//! streams that write into a capped per-instance buffer, flushed to the proxy's log after
//! each call; an empty environment and argument list and no working directory; the wall and
//! monotonic clocks (`now`, `resolution`); random bytes and seeds (secure and insecure, from
//! the host's thread-local CSPRNG); and an empty list of preopened directories. Rust's std
//! reads the insecure seed for every `HashMap`, the monotonic clock for `Instant`, and the
//! environment when it formats a panic; language runtimes (CPython under componentize-py,
//! for one) read the clocks, random and preopens when they start. All must get answers
//! rather than traps. wasmtime-wasi's synchronous streams block on the current tokio
//! runtime, which panics inside a tokio worker; nothing here blocks or touches tokio.
//!
//! These interfaces are defined at every WASI 0.2.x version the component imports (see
//! [`imported_versions`]): one guest often imports several (Rust's std links 0.2.0, 0.2.4
//! and 0.2.6 side by side), and the loader's trapping stubs are defined at the exact
//! version imported, which shadows a semver-compatible definition at another version.
//!
//! Every other import of a component (files, sockets, environment values, clock
//! subscriptions, ...) is defined as a trap by the loader, so a plugin that tries to reach
//! out or wait is stopped and its instance discarded.

use std::collections::BTreeSet;
use std::sync::LazyLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use rand::RngCore;
use wasmtime::component::{Component, ComponentType, Lift, Linker, Lower, Resource, ResourceType};
use wasmtime::{Engine, StoreContextMut};

use super::instance::StoreState;
use super::output::{capped_line, LogBudget};

/// The WASI minor version served: nothing used here changed within 0.2.
const WASI_MINOR: &str = "0.2.";
/// Largest `get-random-bytes` request served; a bigger one traps (policies need a few bytes).
const MAX_RANDOM_BYTES: u64 = 1 << 20;
/// Bytes of guest output kept per call; the rest is counted and dropped.
pub const OUTPUT_CAP: usize = 16 * 1024;

/// Every WASI resource is the host type `()`: the loader's trapping stubs give unknown
/// resources that type, and an interface that `use`s `output-stream` (files, sockets)
/// re-exports it, so one type everywhere keeps them all compatible. Reps tell streams apart:
/// 1 is stdout, 2 is stderr.
type OutputStream = ();

#[derive(ComponentType, Lift, Lower)]
#[component(variant)]
enum StreamError {
    #[component(name = "last-operation-failed")]
    LastOperationFailed(Resource<()>),
    #[component(name = "closed")]
    Closed,
}

/// `wasi:clocks/wall-clock.datetime`.
#[derive(ComponentType, Lower)]
#[component(record)]
struct Datetime {
    seconds: u64,
    nanoseconds: u32,
}

/// Origin of the monotonic clock: the first reading in this process.
static MONOTONIC_ORIGIN: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Guest output of one instance, captured between flushes.
#[derive(Default)]
pub struct Captured {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub dropped: usize,
}

impl Captured {
    fn write(&mut self, rep: u32, bytes: &[u8]) {
        let buf = if rep == 2 {
            &mut self.stderr
        } else {
            &mut self.stdout
        };
        let room = OUTPUT_CAP.saturating_sub(buf.len());
        buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
        self.dropped += bytes.len().saturating_sub(room);
    }

    /// Sends what the guest wrote to the log, line by line, within the plugin's log
    /// `budget` (long lines cut); returns the stderr lines joined by `" "` (a failed call's
    /// reason, such as a panic message), empty if there were none.
    pub fn flush(&mut self, plugin: &str, budget: &LogBudget) -> String {
        for line in String::from_utf8_lossy(&self.stdout)
            .lines()
            .filter(|l| !l.is_empty())
        {
            if budget.admit(plugin) {
                tracing::info!(plugin, "stdout: {}", capped_line(line));
            }
        }
        let said = {
            let stderr = String::from_utf8_lossy(&self.stderr);
            let mut lines = Vec::new();
            for line in stderr.lines().map(str::trim_end).filter(|l| !l.is_empty()) {
                if budget.admit(plugin) {
                    tracing::warn!(plugin, "stderr: {}", capped_line(line));
                }
                lines.push(line);
            }
            capped_line(&lines.join(" ")).into_owned()
        };
        if self.dropped > 0 {
            tracing::warn!(
                plugin,
                dropped = self.dropped,
                "plugin output over the cap was dropped"
            );
        }
        self.stdout.clear();
        self.stderr.clear();
        self.dropped = 0;
        said
    }
}

type Cx<'a> = StoreContextMut<'a, StoreState>;

fn write(
    mut cx: Cx<'_>,
    (stream, bytes): (Resource<OutputStream>, Vec<u8>),
) -> wasmtime::Result<(Result<(), StreamError>,)> {
    cx.data_mut().output.write(stream.rep(), &bytes);
    Ok((Ok(()),))
}

/// The WASI 0.2.x versions (`0.2.N`, no pre-release) among `component`'s imports.
pub fn imported_versions(component: &Component, engine: &Engine) -> BTreeSet<String> {
    component
        .component_type()
        .imports(engine)
        .filter_map(|(name, _)| wasi_version(name).map(str::to_string))
        .collect()
}

/// `0.2.N` of a `wasi:PACKAGE/INTERFACE@0.2.N` import name; `None` for another package or
/// version, or a pre-release (whose functions may differ).
fn wasi_version(name: &str) -> Option<&str> {
    let (_, version) = name.strip_prefix("wasi:")?.split_once('@')?;
    let patch = version.strip_prefix(WASI_MINOR)?;
    (!patch.is_empty() && patch.bytes().all(|b| b.is_ascii_digit())).then_some(version)
}

/// Defines the served interfaces at each of `versions` (see [`imported_versions`]).
pub fn add_to_linker(linker: &mut Linker<StoreState>, versions: &BTreeSet<String>) -> wasmtime::Result<()> {
    for version in versions {
        add_version(linker, version)?;
    }
    Ok(())
}

fn add_version(linker: &mut Linker<StoreState>, version: &str) -> wasmtime::Result<()> {
    let mut error = linker.instance(&format!("wasi:io/error@{version}"))?;
    error.resource("error", ResourceType::host::<()>(), |_, _| Ok(()))?;

    // An interface that `use`s a resource re-exports it: each instance names the same type.
    let mut streams = linker.instance(&format!("wasi:io/streams@{version}"))?;
    streams.resource("error", ResourceType::host::<()>(), |_, _| Ok(()))?;
    streams.resource("output-stream", ResourceType::host::<OutputStream>(), |_, _| {
        Ok(())
    })?;
    streams.func_wrap(
        "[method]output-stream.check-write",
        |_: Cx<'_>, (_s,): (Resource<OutputStream>,)| Ok((Ok::<u64, StreamError>(OUTPUT_CAP as u64),)),
    )?;
    streams.resource("pollable", ResourceType::host::<()>(), |_, _| Ok(()))?;
    // Writes never wait (`check-write` always has room), so a stream is always ready.
    streams.func_wrap(
        "[method]output-stream.subscribe",
        |_: Cx<'_>, (_s,): (Resource<OutputStream>,)| Ok((Resource::<()>::new_own(0),)),
    )?;
    streams.func_wrap("[method]output-stream.write", write)?;
    streams.func_wrap("[method]output-stream.blocking-write-and-flush", write)?;
    for name in [
        "[method]output-stream.flush",
        "[method]output-stream.blocking-flush",
    ] {
        streams.func_wrap(name, |_: Cx<'_>, (_s,): (Resource<OutputStream>,)| {
            Ok((Ok::<(), StreamError>(()),))
        })?;
    }

    // Pollables come only from output streams, which are always ready: nothing waits.
    let mut poll = linker.instance(&format!("wasi:io/poll@{version}"))?;
    poll.resource("pollable", ResourceType::host::<()>(), |_, _| Ok(()))?;
    poll.func_wrap("[method]pollable.ready", |_: Cx<'_>, (_p,): (Resource<()>,)| {
        Ok((true,))
    })?;
    poll.func_wrap("[method]pollable.block", |_: Cx<'_>, (_p,): (Resource<()>,)| {
        Ok(())
    })?;
    poll.func_wrap("poll", |_: Cx<'_>, (pollables,): (Vec<Resource<()>>,)| {
        Ok(((0..pollables.len() as u32).collect::<Vec<u32>>(),))
    })?;

    // An empty environment and argument list: language runtimes read them at start or to
    // format a panic, and must see nothing rather than trap.
    let mut environment = linker.instance(&format!("wasi:cli/environment@{version}"))?;
    environment.func_wrap("get-environment", |_: Cx<'_>, ()| {
        Ok((Vec::<(String, String)>::new(),))
    })?;
    environment.func_wrap("get-arguments", |_: Cx<'_>, ()| Ok((Vec::<String>::new(),)))?;
    environment.func_wrap("initial-cwd", |_: Cx<'_>, ()| Ok((None::<String>,)))?;

    add_clocks_and_random(linker, version)?;

    // No preopened directories: the guest's libc finds no file system to open paths in.
    let mut preopens = linker.instance(&format!("wasi:filesystem/preopens@{version}"))?;
    preopens.resource("descriptor", ResourceType::host::<()>(), |_, _| Ok(()))?;
    preopens.func_wrap("get-directories", |_: Cx<'_>, ()| {
        Ok((Vec::<(Resource<()>, String)>::new(),))
    })?;

    for (interface, getter, rep) in [("stdout", "get-stdout", 1), ("stderr", "get-stderr", 2)] {
        let mut cli = linker.instance(&format!("wasi:cli/{interface}@{version}"))?;
        cli.resource("output-stream", ResourceType::host::<OutputStream>(), |_, _| {
            Ok(())
        })?;
        cli.func_wrap(getter, move |_: Cx<'_>, ()| {
            Ok((Resource::<OutputStream>::new_own(rep),))
        })?;
    }
    Ok(())
}

/// Wall and monotonic clock readings (no subscriptions: waiting would block the caller), and
/// random numbers. Plugins that must be replayable read time from `host.monotonic-now-ns`.
fn add_clocks_and_random(linker: &mut Linker<StoreState>, version: &str) -> wasmtime::Result<()> {
    let mut wall = linker.instance(&format!("wasi:clocks/wall-clock@{version}"))?;
    wall.func_wrap("now", |_: Cx<'_>, ()| {
        let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        Ok((Datetime {
            seconds: since_epoch.as_secs(),
            nanoseconds: since_epoch.subsec_nanos(),
        },))
    })?;
    wall.func_wrap("resolution", |_: Cx<'_>, ()| {
        Ok((Datetime {
            seconds: 0,
            nanoseconds: 1,
        },))
    })?;

    let mut monotonic = linker.instance(&format!("wasi:clocks/monotonic-clock@{version}"))?;
    monotonic.func_wrap("now", |_: Cx<'_>, ()| {
        Ok((MONOTONIC_ORIGIN.elapsed().as_nanos() as u64,))
    })?;
    monotonic.func_wrap("resolution", |_: Cx<'_>, ()| Ok((1u64,)))?;

    for (interface, prefix) in [("random", "get-random"), ("insecure", "get-insecure-random")] {
        let mut random = linker.instance(&format!("wasi:random/{interface}@{version}"))?;
        random.func_wrap(&format!("{prefix}-bytes"), |_: Cx<'_>, (len,): (u64,)| {
            if len > MAX_RANDOM_BYTES {
                wasmtime::bail!("random bytes requested: {len}, at most {MAX_RANDOM_BYTES} are served");
            }
            let mut bytes = vec![0; len as usize];
            rand::thread_rng().fill_bytes(&mut bytes);
            Ok((bytes,))
        })?;
        random.func_wrap(&format!("{prefix}-u64"), |_: Cx<'_>, ()| {
            Ok((rand::random::<u64>(),))
        })?;
    }
    // Seeds hash maps (std's `RandomState`).
    let mut seed = linker.instance(&format!("wasi:random/insecure-seed@{version}"))?;
    seed.func_wrap("insecure-seed", |_: Cx<'_>, ()| {
        Ok(((rand::random::<u64>(), rand::random::<u64>()),))
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::wasi_version;

    #[test]
    fn served_versions_are_released_wasi_0_2() {
        assert_eq!(wasi_version("wasi:io/streams@0.2.0"), Some("0.2.0"));
        assert_eq!(wasi_version("wasi:random/insecure-seed@0.2.4"), Some("0.2.4"));
        assert_eq!(wasi_version("wasi:cli/stderr@0.2.10"), Some("0.2.10"));
        assert_eq!(wasi_version("wasi:cli/stderr@0.2.0-rc-2023-11-10"), None);
        assert_eq!(wasi_version("wasi:cli/stderr@0.3.0"), None);
        assert_eq!(wasi_version("wasi:cli/stderr@0.2."), None);
        assert_eq!(wasi_version("switchyard:policy/host@0.1.0"), None);
        assert_eq!(wasi_version("wasi:cli/stderr"), None);
    }
}
