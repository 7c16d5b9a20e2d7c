//! Where `export` writes: stdout, or a private file that appears under
//! its name only once complete.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::CliError;

/// Where an export writes: stdout, or a new private file (mode 0600, under
/// an unpredictable temporary name in the destination's directory)
/// renamed over the destination once complete, so an interrupted export
/// never leaves a truncated file under the name asked for, and no other
/// user can open what it writes.
pub(crate) enum Sink {
    Stdout(BufWriter<std::io::StdoutLock<'static>>),
    File {
        out: BufWriter<std::fs::File>,
        tmp: PathBuf,
        dest: PathBuf,
    },
}

/// A temporary name beside `dest`: `.NAME.` and 16 hex digits of a hash
/// keyed by the standard library's per-process random keys.
fn temp_name(dest: &Path) -> PathBuf {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "export".into());
    dest.with_file_name(format!(".{name}.{:016x}.tmp", hasher.finish()))
}

impl Sink {
    pub(crate) fn open(output: Option<&Path>) -> Result<Self, CliError> {
        let Some(dest) = output else {
            return Ok(Self::Stdout(BufWriter::new(std::io::stdout().lock())));
        };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let mut attempts = 0;
        loop {
            let tmp = temp_name(dest);
            match options.open(&tmp) {
                Ok(file) => {
                    return Ok(Self::File {
                        out: BufWriter::new(file),
                        tmp,
                        dest: dest.to_path_buf(),
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempts < 8 => {
                    attempts += 1;
                }
                Err(e) => {
                    return Err(CliError::io(format!(
                        "cannot create {} (a new file in its directory, renamed to it once \
                         complete); nothing was written",
                        dest.display()
                    ))(e));
                }
            }
        }
    }

    fn what(&self) -> String {
        match self {
            Self::Stdout(_) => "writing to stdout".into(),
            Self::File { dest, .. } => {
                format!("writing {} (it is left as it was)", dest.display())
            }
        }
    }

    pub(crate) fn write(&mut self, text: &str) -> Result<(), CliError> {
        let what = self.what();
        let result = match self {
            Self::Stdout(out) => out.write_all(text.as_bytes()),
            Self::File { out, .. } => out.write_all(text.as_bytes()),
        };
        result.map_err(CliError::io(what))
    }

    /// Flushes, and for a file syncs it and renames it into place. On
    /// failure the temporary file is removed and the destination is left
    /// as it was.
    pub(crate) fn finish(self) -> Result<(), CliError> {
        match self {
            Self::Stdout(mut out) => out.flush().map_err(CliError::io("writing to stdout")),
            Self::File { out, tmp, dest } => {
                let failed = |e: std::io::Error| {
                    let _ = std::fs::remove_file(&tmp);
                    CliError::io(format!("writing {} (it is left as it was)", dest.display()))(e)
                };
                let file = out.into_inner().map_err(|e| failed(e.into_error()))?;
                file.sync_all().map_err(failed)?;
                std::fs::rename(&tmp, &dest).map_err(failed)
            }
        }
    }

    /// Removes the temporary file of a failed export.
    pub(crate) fn abandon(self) {
        if let Self::File { tmp, .. } = self {
            let _ = std::fs::remove_file(tmp);
        }
    }
}
