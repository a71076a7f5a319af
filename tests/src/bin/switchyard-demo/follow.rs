//! The proxy's log on stderr while the demo serves, as `tail -n 0 -F` would show it: what is
//! appended after [`Follow::from_end`], copied on each [`Follow::pump`].

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::{Context, Result};

/// A log file read from where it ended when following started.
pub struct Follow {
    file: File,
}

impl Follow {
    /// Follows `path` from its current end.
    pub fn from_end(path: &Path) -> Result<Self> {
        let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        file.seek(SeekFrom::End(0))?;
        Ok(Self { file })
    }

    /// Copies what was appended since the last call to stderr.
    pub fn pump(&mut self) {
        let mut new = Vec::new();
        if self.file.read_to_end(&mut new).is_ok() && !new.is_empty() {
            let _ = std::io::stderr().write_all(&new);
        }
    }
}
