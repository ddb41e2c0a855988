//! Files sockwrap writes into a system (`enable` for units and for the whole host), and the
//! `--root DIR` those subcommands work under.

use crate::error::{Error, Result};
use clap::ArgMatches;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

pub fn io_err(p: &Path, e: std::io::Error) -> Error {
    Error::setup(format_args!("{}: {e}", p.display()))
}

/// `--root DIR` (default `/`), which must be a directory.
pub fn root_dir(m: &ArgMatches) -> Result<PathBuf> {
    let root = PathBuf::from(
        m.get_one::<String>("root")
            .map(String::as_str)
            .unwrap_or("/"),
    );
    if !root.is_dir() {
        return Err(Error::usage(format_args!(
            "--root: {} is not a directory",
            root.display()
        )));
    }
    Ok(root)
}

/// Writes `text` to `path` through a temporary file in the same directory, `fsync` and a
/// rename: a reader (systemd, the loader in a process that execs meanwhile) sees the old
/// file or the new one, never half. `mode`: the new file's permissions (else the umask's).
pub fn write_atomic(path: &Path, text: &[u8], mode: Option<u32>) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.sockwrap-tmp"));
    let mut f = std::fs::File::create(&tmp).map_err(|e| io_err(&tmp, e))?;
    match mode {
        Some(mode) => f.set_permissions(std::fs::Permissions::from_mode(mode)),
        None => Ok(()),
    }
    .and_then(|_| f.write_all(text))
    .and_then(|_| f.sync_all())
    .map_err(|e| io_err(&tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        if e.raw_os_error() == Some(libc::EBUSY) {
            Error::setup(format_args!(
                "{}: cannot be replaced atomically (it is a mount point): {e}",
                path.display()
            ))
        } else {
            io_err(path, e)
        }
    })
}
