//! What sockwrap reads of a program before it starts it: where exec finds it (`PATH`), its
//! ELF program headers, and the dynamic loader it names. Used by `run` (the musl refusal,
//! [`crate::reach`]) and `doctor`.
//!
//! Hand-written rather than a crate (goblin, object): three fields of the ELF64 header and
//! one of each program header are all that is read.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

/// One program header of an ELF file: `p_type`, and where its bytes are in the file.
#[derive(Clone, Copy, Debug)]
pub struct ProgramHeader {
    pub kind: u32,
    pub offset: usize,
    pub size: usize,
}

pub const PT_INTERP: u32 = 3;
pub const PT_NOTE: u32 = 4;

/// The program headers of an ELF64 LE file from its first bytes (those that `bytes` holds);
/// None for anything else (a script, another format).
pub fn program_headers(bytes: &[u8]) -> Option<Vec<ProgramHeader>> {
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 || bytes[5] != 1 {
        return None;
    }
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let u64_at = |o: usize| -> Option<usize> {
        Some(u64::from_le_bytes(bytes.get(o..o + 8)?.try_into().ok()?) as usize)
    };
    let phoff = u64_at(32)?;
    let (phentsize, phnum) = (u16_at(54), u16_at(56));
    let mut out = Vec::with_capacity(phnum);
    for i in 0..phnum {
        let off = phoff.checked_add(i.checked_mul(phentsize)?)?;
        let kind = u32::from_le_bytes(bytes.get(off..off.checked_add(4)?)?.try_into().ok()?);
        out.push(ProgramHeader {
            kind,
            offset: u64_at(off.checked_add(8)?)?,
            size: u64_at(off.checked_add(32)?)?,
        });
    }
    Some(out)
}

/// Whether an ELF64 LE program is dynamically linked (names a loader, PT_INTERP); None
/// for anything that is not one.
pub fn is_dynamic(bytes: &[u8]) -> Option<bool> {
    Some(program_headers(bytes)?.iter().any(|p| p.kind == PT_INTERP))
}

/// The dynamic loader a program names (PT_INTERP), if it is an ELF64 LE with one.
pub fn interpreter(bytes: &[u8]) -> Option<String> {
    let ph = program_headers(bytes)?
        .into_iter()
        .find(|p| p.kind == PT_INTERP)?;
    let raw = bytes.get(ph.offset..ph.offset.checked_add(ph.size)?)?;
    Some(
        String::from_utf8_lossy(raw)
            .trim_end_matches('\0')
            .to_string(),
    )
}

/// The first 64 KiB of a file: enough for the headers and the loader's name.
pub fn head(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut head = Vec::with_capacity(64 * 1024);
    std::fs::File::open(path)?
        .take(64 * 1024)
        .read_to_end(&mut head)?;
    Ok(head)
}

/// `prog` as `execvp` would find it: a name with a `/` as it is; a bare name in each
/// `PATH` directory in turn, the first regular file there that is executable. As POSIX
/// says (and execvp does), an empty entry (`::`, or a leading or trailing `:`) is the
/// current directory.
pub fn resolve_program(prog: &OsStr) -> Option<PathBuf> {
    let p = Path::new(prog);
    if prog.as_bytes().contains(&b'/') {
        return Some(p.to_path_buf());
    }
    candidates(std::env::var_os("PATH")?.as_bytes(), p).find(|c| is_executable_file(c))
}

/// Where a bare name is looked for, in order, in a `PATH` value.
fn candidates<'a>(path: &'a [u8], prog: &'a Path) -> impl Iterator<Item = PathBuf> + 'a {
    path.split(|&b| b == b':').map(move |d| match d {
        b"" => Path::new(".").join(prog),
        d => Path::new(OsStr::from_bytes(d)).join(prog),
    })
}

fn is_executable_file(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_path_entry_is_the_current_directory() {
        let all = |path: &str| -> Vec<PathBuf> {
            candidates(path.as_bytes(), Path::new("prog")).collect()
        };
        let p = |s: &str| PathBuf::from(s);
        assert_eq!(
            all("/bin::/usr/bin"),
            [p("/bin/prog"), p("./prog"), p("/usr/bin/prog")]
        );
        assert_eq!(all(":/bin"), [p("./prog"), p("/bin/prog")]);
        assert_eq!(all("/bin:"), [p("/bin/prog"), p("./prog")]);
    }

    #[test]
    fn a_file_without_execute_permission_is_passed_over() {
        let dir = std::env::temp_dir().join(format!("sockwrap-elf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let prog = dir.join("prog");
        std::fs::write(&prog, "#!/bin/sh\n").unwrap();
        let plain = is_executable_file(&prog);
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
        let exec = is_executable_file(&prog);
        let _ = std::fs::remove_dir_all(&dir);
        assert!(!plain && exec);
        assert!(!is_executable_file(Path::new("/")));
    }

    #[test]
    fn headers_of_something_else_are_none() {
        assert!(program_headers(b"#!/bin/sh\n").is_none());
        assert_eq!(is_dynamic(&[0u8; 64]), None);
    }
}
