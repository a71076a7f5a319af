//! The only WASI a plugin gets besides trapping stubs: `stdout` and `stderr` as output
//! streams that write into a capped per-instance buffer, flushed to the proxy's log after
//! each call; an empty environment and argument list; the wall and monotonic clocks (`now`,
//! `resolution`); random bytes (secure and insecure, from the host's thread-local CSPRNG);
//! and an empty list of preopened directories. Language runtimes (CPython under
//! componentize-py, for one) read the clocks, random and preopens when they start or
//! format output, and must get answers rather than traps. wasmtime-wasi's synchronous
//! streams block on the current tokio runtime, which panics inside a tokio worker; nothing
//! here blocks or touches tokio.
//!
//! Every other import of a component (files, sockets, environment values, clock
//! subscriptions, ...) is defined as a trap by the loader, so a plugin that tries to reach
//! out or wait is stopped and its instance discarded.

use std::sync::LazyLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use rand::RngCore;
use wasmtime::component::{ComponentType, Lift, Linker, Lower, Resource, ResourceType};
use wasmtime::StoreContextMut;

use super::instance::StoreState;

/// WASI version the interfaces here are defined at; guests importing any 0.2.x up to it match
/// by semver (a definition satisfies imports of its own or an older patch version only, and
/// componentize-py 0.25 imports 0.2.9). Nothing used here changed within 0.2.
const WASI: &str = "0.2.9";
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

    /// Sends what the guest wrote to the log, line by line.
    pub fn flush(&mut self, plugin: &str) {
        for line in String::from_utf8_lossy(&self.stdout)
            .lines()
            .filter(|l| !l.is_empty())
        {
            tracing::info!(plugin, "stdout: {line}");
        }
        for line in String::from_utf8_lossy(&self.stderr)
            .lines()
            .filter(|l| !l.is_empty())
        {
            tracing::warn!(plugin, "stderr: {line}");
        }
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

pub fn add_to_linker(linker: &mut Linker<StoreState>) -> wasmtime::Result<()> {
    let mut error = linker.instance(&format!("wasi:io/error@{WASI}"))?;
    error.resource("error", ResourceType::host::<()>(), |_, _| Ok(()))?;

    // An interface that `use`s a resource re-exports it: each instance names the same type.
    let mut streams = linker.instance(&format!("wasi:io/streams@{WASI}"))?;
    streams.resource("error", ResourceType::host::<()>(), |_, _| Ok(()))?;
    streams.resource("output-stream", ResourceType::host::<OutputStream>(), |_, _| {
        Ok(())
    })?;
    streams.func_wrap(
        "[method]output-stream.check-write",
        |_: Cx<'_>, (_s,): (Resource<OutputStream>,)| Ok((Ok::<u64, StreamError>(OUTPUT_CAP as u64),)),
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

    // An empty environment and argument list: language runtimes read them at start or to
    // format a panic, and must see nothing rather than trap.
    let mut environment = linker.instance(&format!("wasi:cli/environment@{WASI}"))?;
    environment.func_wrap("get-environment", |_: Cx<'_>, ()| {
        Ok((Vec::<(String, String)>::new(),))
    })?;
    environment.func_wrap("get-arguments", |_: Cx<'_>, ()| Ok((Vec::<String>::new(),)))?;

    add_clocks_and_random(linker)?;

    // No preopened directories: the guest's libc finds no file system to open paths in.
    let mut preopens = linker.instance(&format!("wasi:filesystem/preopens@{WASI}"))?;
    preopens.resource("descriptor", ResourceType::host::<()>(), |_, _| Ok(()))?;
    preopens.func_wrap("get-directories", |_: Cx<'_>, ()| {
        Ok((Vec::<(Resource<()>, String)>::new(),))
    })?;

    for (interface, getter, rep) in [("stdout", "get-stdout", 1), ("stderr", "get-stderr", 2)] {
        let mut cli = linker.instance(&format!("wasi:cli/{interface}@{WASI}"))?;
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
fn add_clocks_and_random(linker: &mut Linker<StoreState>) -> wasmtime::Result<()> {
    let mut wall = linker.instance(&format!("wasi:clocks/wall-clock@{WASI}"))?;
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

    let mut monotonic = linker.instance(&format!("wasi:clocks/monotonic-clock@{WASI}"))?;
    monotonic.func_wrap("now", |_: Cx<'_>, ()| {
        Ok((MONOTONIC_ORIGIN.elapsed().as_nanos() as u64,))
    })?;
    monotonic.func_wrap("resolution", |_: Cx<'_>, ()| Ok((1u64,)))?;

    for (interface, prefix) in [("random", "get-random"), ("insecure", "get-insecure-random")] {
        let mut random = linker.instance(&format!("wasi:random/{interface}@{WASI}"))?;
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
    Ok(())
}
