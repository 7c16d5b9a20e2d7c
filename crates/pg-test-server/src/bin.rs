//! [`PgBin`]: where the PostgreSQL programs are, and which user runs them.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The environment variable naming the directory of the PostgreSQL programs
/// (`initdb`, `postgres`, `psql`), overriding the search.
pub const PG_BIN_ENV: &str = "PG_BIN";

/// Where Debian installs the PostgreSQL programs, one directory per major
/// version: `/usr/lib/postgresql/<major>/bin`.
const DEBIAN_ROOT: &str = "/usr/lib/postgresql";

/// The directory holding the PostgreSQL server programs, as found by
/// [`PgBin::locate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgBin {
    dir: Option<PathBuf>,
}

impl PgBin {
    /// Finds the PostgreSQL programs: the directory in `$PG_BIN` if set, else
    /// the highest version under `/usr/lib/postgresql/*/bin` that has
    /// `initdb`, else `initdb` on `PATH`.
    ///
    /// # Errors
    ///
    /// [`Error::NotInstalled`] when none of these has `initdb`.
    pub fn locate() -> Result<Self> {
        if let Some(dir) = env::var_os(PG_BIN_ENV).filter(|d| !d.is_empty()) {
            let dir = PathBuf::from(dir);
            return if dir.join("initdb").is_file() {
                Ok(Self { dir: Some(dir) })
            } else {
                Err(Error::NotInstalled {
                    program: format!("{}/initdb (from ${PG_BIN_ENV})", dir.display()),
                })
            };
        }
        if let Some(dir) = highest_version(Path::new(DEBIAN_ROOT)) {
            return Ok(Self { dir: Some(dir) });
        }
        if on_path("initdb") {
            return Ok(Self { dir: None });
        }
        Err(Error::NotInstalled {
            program: "initdb".to_owned(),
        })
    }

    /// The directory of the programs, or `None` when they are run from `PATH`.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// The path (or, from `PATH`, the bare name) of the program `name`.
    pub fn program(&self, name: &str) -> PathBuf {
        match &self.dir {
            Some(dir) => dir.join(name),
            None => PathBuf::from(name),
        }
    }
}

/// `<root>/<major>/bin` with `initdb` for the numerically highest `<major>`.
fn highest_version(root: &Path) -> Option<PathBuf> {
    let entries = fs::read_dir(root).ok()?;
    entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let name = entry.file_name().into_string().ok()?;
            let version = name
                .split('.')
                .map(str::parse::<u32>)
                .collect::<Result<Vec<_>, _>>()
                .ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, bin)| bin)
}

fn on_path(program: &str) -> bool {
    env::var_os("PATH")
        .is_some_and(|path| env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_highest_numeric_version_with_initdb_wins() {
        let root = env::temp_dir().join(format!("pg-bin-test-{}", std::process::id()));
        for (version, with_initdb) in [("9.6", true), ("15", true), ("16", false), ("13", true)] {
            let bin = root.join(version).join("bin");
            fs::create_dir_all(&bin).expect("mkdir");
            if with_initdb {
                fs::write(bin.join("initdb"), "").expect("write");
            }
        }
        fs::create_dir_all(root.join("notaversion/bin")).expect("mkdir");
        fs::write(root.join("notaversion/bin/initdb"), "").expect("write");
        let found = highest_version(&root);
        let _ = fs::remove_dir_all(&root);
        assert_eq!(found, Some(root.join("15").join("bin")));
    }

    #[test]
    fn programs_are_joined_to_the_directory() {
        let bin = PgBin {
            dir: Some(PathBuf::from("/opt/pg/bin")),
        };
        assert_eq!(bin.program("psql"), PathBuf::from("/opt/pg/bin/psql"));
        let path = PgBin { dir: None };
        assert_eq!(path.program("psql"), PathBuf::from("psql"));
    }
}
