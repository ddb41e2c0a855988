//! Programs `libsockwrap.so` cannot reach, said before they run (`run`, `trace`) rather
//! than found out from a trace with no line or a wire without the option: a statically
//! linked program (no loader reads LD_PRELOAD), a Go program (its own system calls, never
//! libc's socket functions), and a set-id or file-capability program (the loader runs it
//! in secure mode and ignores LD_PRELOAD). `sockwrap doctor PROGRAM` says more.
//!
//! The program's headers are read with [`crate::elf::program_headers`], the one ELF
//! reader of the CLI. Only the program named is checked, not what it runs.

use crate::elf::{program_headers, resolve_program, PT_INTERP, PT_NOTE};
use clap::ArgMatches;
use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    Static,
    Go,
    SetId,
    Capabilities,
}

/// A program out of the library's reach, and why.
#[derive(Clone, Debug)]
pub struct Unreachable {
    pub path: PathBuf,
    pub why: Why,
}

impl Unreachable {
    /// The one line `run` and `trace` print, and the first line of an empty trace summary.
    pub fn line(&self) -> String {
        let p = self.path.display();
        let (what, more) = match self.why {
            Why::Static => ("is statically linked: no loader reads LD_PRELOAD for it", ""),
            Why::Go => (
                "is a Go program: it makes its own system calls, never libc's socket functions",
                "; for MPTCP alone, Go 1.21+ takes GODEBUG=multipathtcp=1",
            ),
            Why::SetId => (
                "is set-user/group-id: the loader runs it in secure mode and ignores LD_PRELOAD",
                "",
            ),
            Why::Capabilities => (
                "has file capabilities (setcap): the loader runs it in secure mode and ignores LD_PRELOAD",
                "",
            ),
        };
        format!(
            "{p} {what}, so libsockwrap.so sets no option on its sockets and traces none of its calls; \
             the kernel backend reaches it (as root: --kernel){more} (--log off silences this)"
        )
    }
}

/// Whether the user asked for silence: `--log off` or `--log error` (or the same in
/// SOCKWRAP_LOG), as for the library's own warnings.
pub fn quiet(m: &ArgMatches) -> bool {
    let level = m
        .try_get_one::<String>("log")
        .ok()
        .flatten()
        .cloned()
        .or_else(|| std::env::var("SOCKWRAP_LOG").ok());
    matches!(level.as_deref().map(str::trim), Some("off" | "error"))
}

/// Why the library cannot reach `prog` (as exec would find it), or None if it can, or
/// if that cannot be told (not found, not readable, not ELF: a script's interpreter is
/// what runs).
pub fn unreachable(prog: &OsStr) -> Option<Unreachable> {
    let path = resolve_program(prog)?;
    let meta = std::fs::metadata(&path).ok()?;
    let head = crate::elf::head(&path).ok()?;
    let head = &head[..];
    let headers = program_headers(head)?;
    let why = if headers
        .iter()
        .any(|h| h.kind == PT_NOTE && has_go_note(head, h.offset, h.size))
    {
        Why::Go
    } else if !headers.iter().any(|h| h.kind == PT_INTERP) {
        Why::Static
    } else if secure_by_id(&meta) {
        Why::SetId
    } else if file_capabilities(&path) && real_uid() != 0 {
        Why::Capabilities
    } else {
        return None;
    };
    Some(Unreachable { path, why })
}

/// The Go toolchain's build-id note (name "Go", type 4) in the note segment at
/// `offset..offset+size`, if the head holds it.
fn has_go_note(head: &[u8], offset: usize, size: usize) -> bool {
    let Some(seg) = offset
        .checked_add(size)
        .and_then(|end| head.get(offset..end))
    else {
        return false;
    };
    let word = |o: usize| -> Option<usize> {
        Some(u32::from_le_bytes(seg.get(o..o + 4)?.try_into().ok()?) as usize)
    };
    let align4 = |n: usize| (n + 3) & !3;
    let mut at = 0;
    while let (Some(namesz), Some(descsz), Some(kind)) = (word(at), word(at + 4), word(at + 8)) {
        let name = seg.get(at + 12..at + 12 + namesz).unwrap_or(&[]);
        if kind == 4 && name.starts_with(b"Go\0") {
            return true;
        }
        at += 12 + align4(namesz) + align4(descsz);
    }
    false
}

/// Set-user-id to another user, or set-group-id to another group: secure mode.
fn secure_by_id(meta: &std::fs::Metadata) -> bool {
    let (euid, egid) = (
        rustix::process::geteuid().as_raw(),
        rustix::process::getegid().as_raw(),
    );
    (meta.mode() & libc::S_ISUID != 0 && meta.uid() != euid)
        || (meta.mode() & libc::S_ISGID != 0 && meta.gid() != egid)
}

fn real_uid() -> u32 {
    rustix::process::getuid().as_raw()
}

/// Whether `path` carries file capabilities (`security.capability`): for any user but root
/// the loader then runs it in secure mode.
pub fn file_capabilities(path: &Path) -> bool {
    // An empty buffer only asks the size.
    let empty: &mut [u8] = &mut [];
    rustix::fs::getxattr(path, "security.capability", empty).is_ok_and(|n| n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_note_is_found_and_others_are_not() {
        // A note segment: a GNU build-id note, then Go's.
        let mut seg = Vec::new();
        for (name, kind, desc) in [
            (&b"GNU\0"[..], 3u32, &[1u8; 20][..]),
            (b"Go\0\0", 4, b"abc"),
        ] {
            seg.extend((name.len() as u32).to_le_bytes());
            seg.extend((desc.len() as u32).to_le_bytes());
            seg.extend(kind.to_le_bytes());
            seg.extend(name);
            seg.extend(desc);
            while seg.len() % 4 != 0 {
                seg.push(0);
            }
        }
        assert!(has_go_note(&seg, 0, seg.len()));
        assert!(!has_go_note(&seg, 0, 36)); // the GNU note alone
        assert!(!has_go_note(&seg, 0, seg.len() + 1)); // past the head
    }
}
