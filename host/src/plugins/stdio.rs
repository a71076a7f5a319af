//! The only WASI a plugin gets besides trapping stubs: `stdout` and `stderr` as output
//! streams that write into a capped per-instance buffer, flushed to the proxy's log after
//! each call, and an empty environment and argument list. wasmtime-wasi's synchronous streams block on the current tokio runtime, which
//! panics inside a tokio worker; these never block and never touch tokio.
//!
//! Every other import of a component (files, sockets, environment, clocks, ...) is defined
//! as a trap by the loader, so a plugin that tries to reach out is stopped and its instance
//! discarded.

use wasmtime::component::{ComponentType, Lift, Linker, Lower, Resource, ResourceType};
use wasmtime::StoreContextMut;

use super::instance::StoreState;

/// WASI version the streams are defined at; guests importing an older 0.2.x match by semver.
const WASI: &str = "0.2.6";
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
