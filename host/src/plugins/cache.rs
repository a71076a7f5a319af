//! A cache of compiled plugins, so a restart (or a reload of an unchanged file) skips
//! Cranelift: seconds for a large Python or JavaScript component.
//!
//! Loading a compiled artifact runs its machine code unchecked, so the cache only ever
//! loads files this proxy wrote: the directory must belong to the proxy's user and be
//! closed to everyone else (created 0700; otherwise the cache is not used), and each
//! artifact must belong to the same user and not be writable by others. Artifacts are
//! named by the SHA-256 of the component and a hash of the engine's compatibility
//! settings (wasmtime version, target, configuration), so a changed component or a
//! different build of the proxy never matches a stale artifact.

use std::hash::{Hash, Hasher};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use wasmtime::component::Component;
use wasmtime::Engine;

/// Where a component's compiled code came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Loaded from the cache.
    Cached,
    /// Compiled now (and cached when the cache is usable).
    Compiled,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Cached => "cached",
            Origin::Compiled => "compiled",
        }
    }
}

pub struct ArtifactCache {
    dir: PathBuf,
    engine_key: u64,
    uid: u32,
}

impl ArtifactCache {
    /// The configured directory (an empty path disables the cache), or the user's cache
    /// directory. `None`, with a warning, when the directory cannot be made safe.
    pub fn open(engine: &Engine, configured: Option<&Path>) -> Option<ArtifactCache> {
        let dir = match configured {
            Some(p) if p.as_os_str().is_empty() => return None,
            Some(p) => p.to_path_buf(),
            None => default_dir()?,
        };
        // SAFETY: geteuid has no preconditions and cannot fail.
        let uid = unsafe { libc::geteuid() };
        if let Err(e) = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
        {
            tracing::warn!(dir = %dir.display(), error = %e, "plugin cache disabled: cannot create its directory");
            return None;
        }
        match std::fs::metadata(&dir) {
            Ok(m) if m.uid() == uid && m.mode() & 0o022 == 0 => {}
            Ok(m) => {
                tracing::warn!(dir = %dir.display(), owner = m.uid(), mode = format!("{:o}", m.mode() & 0o777), "plugin cache disabled: the directory must belong to the proxy's user and not be writable by others");
                return None;
            }
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "plugin cache disabled");
                return None;
            }
        }
        let mut hasher = std::hash::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Some(ArtifactCache {
            dir,
            engine_key: hasher.finish(),
            uid,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path_for(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{sha256}-{:016x}.cwasm", self.engine_key))
    }

    /// The compiled component for `bytes` (whose SHA-256 is `sha256`, in hex): from the
    /// cache when present and sound, else compiled and written to the cache.
    pub fn load(&self, engine: &Engine, bytes: &[u8], sha256: &str) -> wasmtime::Result<(Component, Origin)> {
        let path = self.path_for(sha256);
        if let Some(component) = self.read(engine, &path) {
            return Ok((component, Origin::Cached));
        }
        let artifact = engine.precompile_component(bytes)?;
        // SAFETY: the artifact was produced just now by this engine from `bytes`.
        let component = unsafe { Component::deserialize(engine, &artifact)? };
        if let Err(e) = self.write(&path, &artifact) {
            tracing::warn!(path = %path.display(), error = %e, "cannot write the plugin cache");
        }
        Ok((component, Origin::Compiled))
    }

    fn read(&self, engine: &Engine, path: &Path) -> Option<Component> {
        let meta = std::fs::symlink_metadata(path).ok()?;
        if !meta.is_file() || meta.uid() != self.uid || meta.mode() & 0o022 != 0 {
            tracing::warn!(path = %path.display(), "ignoring a plugin cache entry this proxy did not write");
            return None;
        }
        // SAFETY: the file is a regular file in a directory only this user can write, owned
        // by this user and not writable by others: the proxy wrote it (see module docs).
        // wasmtime checks its header and engine compatibility before using it.
        match unsafe { Component::deserialize_file(engine, path) } {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "discarding an unusable plugin cache entry");
                let _ = std::fs::remove_file(path);
                None
            }
        }
    }

    fn write(&self, path: &Path, artifact: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(artifact)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    }
}

fn default_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("switchyard"))
}
