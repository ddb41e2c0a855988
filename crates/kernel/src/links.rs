//! Attachments that outlive the command: BPF links from pinned programs to a cgroup the
//! command did not make (a container's, a pod's), themselves pinned in a BPF filesystem.
//!
//! A link is "multi" by nature (it keeps the programs others attached with
//! `BPF_F_ALLOW_MULTI`: systemd's device and firewall programs, a CNI's), it stays while its
//! pin does, and the kernel detaches it by itself when its cgroup is removed: the pin then
//! holds a defunct link, whose cgroup id reads 0 ([`cgroup_of`]). Removing the pin releases
//! the link, which detaches it.
//!
//! Written by hand over bpf(2) because aya 0.14 offers no way to pin the link of a
//! `cgroup/setsockopt` program (its `CgroupSockoptLink` has no conversion to `FdLink`), and
//! none to read a pinned link's cgroup; the four commands used here are stable kernel ABI
//! (linux/bpf.h) since 5.7.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

// enum bpf_cmd
const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_CREATE: libc::c_long = 28;

/// enum bpf_attach_type for each program kind, by the name systemd and bpftool give it
/// ([`crate::programs::attach_type`]).
pub fn attach_type_number(kind: &str) -> Option<u32> {
    Some(match kind {
        "sock_create" => 2,
        "sock_ops" => 3,
        "bind4" => 8,
        "bind6" => 9,
        "connect4" => 10,
        "connect6" => 11,
        "sendmsg4" => 14,
        "sendmsg6" => 15,
        "recvmsg4" => 19,
        "recvmsg6" => 20,
        "setsockopt" => 22,
        "getpeername4" => 29,
        "getpeername6" => 30,
        _ => return None,
    })
}

/// union bpf_attr, as large as any command here uses; zeroed, so unused fields are 0 as the
/// kernel requires.
#[repr(C, align(8))]
struct Attr([u8; 128]);

impl Attr {
    fn new() -> Attr {
        Attr([0; 128])
    }
    fn u32(&mut self, off: usize, v: u32) -> &mut Attr {
        self.0[off..off + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn u64(&mut self, off: usize, v: u64) -> &mut Attr {
        self.0[off..off + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }
}

fn bpf(cmd: libc::c_long, attr: &mut Attr) -> io::Result<i64> {
    // SAFETY: Attr is the start of union bpf_attr, zeroed beyond what the caller set; the
    // addresses in it (path names, info buffers) are set by the callers below to buffers
    // that live across the call and are as long as the sizes given with them.
    unsafe { crate::sys::bpf(cmd, attr) }
}

fn owned(fd: i64) -> OwnedFd {
    // SAFETY: bpf(2) returned a new descriptor, which nothing else owns.
    unsafe { crate::sys::owned_fd(fd) }
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL in the path"))
}

/// A link from program `prog` to the cgroup directory `cgroup`, for attach type `kind`.
pub fn create(prog: BorrowedFd, cgroup: BorrowedFd, kind: &str) -> io::Result<OwnedFd> {
    let t = attach_type_number(kind).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("no attach type {kind}"),
        )
    })?;
    let mut a = Attr::new();
    a.u32(0, prog.as_raw_fd() as u32)
        .u32(4, cgroup.as_raw_fd() as u32)
        .u32(8, t);
    bpf(BPF_LINK_CREATE, &mut a).map(owned)
}

/// Pins the object `fd` (a program, map or link) at `path` on a BPF filesystem.
pub fn pin(fd: BorrowedFd, path: &Path) -> io::Result<()> {
    let p = c_path(path)?;
    let mut a = Attr::new();
    a.u64(0, p.as_ptr() as u64).u32(8, fd.as_raw_fd() as u32);
    bpf(BPF_OBJ_PIN, &mut a).map(|_| ())
}

/// Opens the object pinned at `path`.
pub fn get(path: &Path) -> io::Result<OwnedFd> {
    let p = c_path(path)?;
    let mut a = Attr::new();
    a.u64(0, p.as_ptr() as u64);
    bpf(BPF_OBJ_GET, &mut a).map(owned)
}

/// The cgroup id of the link pinned at `path`: `Some(id)` while it is attached, `None` once
/// its cgroup is gone (a defunct link).
pub fn cgroup_of(path: &Path) -> io::Result<Option<u64>> {
    let fd = get(path)?;
    // struct bpf_link_info: type, id, prog_id (u32 each), then the union at offset 16,
    // whose `cgroup` member starts with the u64 cgroup_id.
    let mut info = [0u64; 8];
    let mut a = Attr::new();
    a.u32(0, fd.as_raw_fd() as u32)
        .u32(4, std::mem::size_of_val(&info) as u32)
        .u64(8, info.as_mut_ptr() as u64);
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut a)?;
    Ok(Some(info[2]).filter(|&id| id != 0))
}

/// The cgroup id of a cgroup v2 directory (its inode number, as the kernel hands it to
/// BPF's bpf_get_current_cgroup_id and to link info).
pub fn cgroup_id(dir: &Path) -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(dir).map(|m| m.ino())
}

#[cfg(test)]
mod tests {
    use crate::abi::header::enum_names;

    #[test]
    fn attach_types_match_linux_bpf_h() {
        // Every kind the programs use has a number, and the numbers are distinct.
        let kinds = crate::programs::PROGRAMS
            .iter()
            .chain(&crate::programs::REDIRECT_PROGRAMS)
            .map(|n| crate::programs::attach_type(n).expect("kind"));
        let mut seen = std::collections::HashSet::new();
        for k in kinds {
            let n = super::attach_type_number(k).unwrap_or_else(|| panic!("{k}"));
            assert!(seen.insert(n), "{k}");
        }
        // Read the header where it is installed (the build needs linux-libc-dev anyway).
        let Ok(h) = std::fs::read_to_string("/usr/include/linux/bpf.h") else {
            return;
        };
        let names = enum_names(&h, "bpf_attach_type");
        let at = |n: &str| names.iter().position(|x| *x == n).expect(n) as u32;
        for (k, n) in [
            ("sock_create", "BPF_CGROUP_INET_SOCK_CREATE"),
            ("sock_ops", "BPF_CGROUP_SOCK_OPS"),
            ("bind4", "BPF_CGROUP_INET4_BIND"),
            ("bind6", "BPF_CGROUP_INET6_BIND"),
            ("connect4", "BPF_CGROUP_INET4_CONNECT"),
            ("connect6", "BPF_CGROUP_INET6_CONNECT"),
            ("sendmsg4", "BPF_CGROUP_UDP4_SENDMSG"),
            ("sendmsg6", "BPF_CGROUP_UDP6_SENDMSG"),
            ("recvmsg4", "BPF_CGROUP_UDP4_RECVMSG"),
            ("recvmsg6", "BPF_CGROUP_UDP6_RECVMSG"),
            ("setsockopt", "BPF_CGROUP_SETSOCKOPT"),
            ("getpeername4", "BPF_CGROUP_INET4_GETPEERNAME"),
            ("getpeername6", "BPF_CGROUP_INET6_GETPEERNAME"),
        ] {
            assert_eq!(super::attach_type_number(k), Some(at(n)), "{k}");
        }
        let cmds = enum_names(&h, "bpf_cmd");
        let cmd = |n: &str| cmds.iter().position(|x| *x == n).expect(n) as libc::c_long;
        assert_eq!(super::BPF_OBJ_PIN, cmd("BPF_OBJ_PIN"));
        assert_eq!(super::BPF_OBJ_GET, cmd("BPF_OBJ_GET"));
        assert_eq!(super::BPF_OBJ_GET_INFO_BY_FD, cmd("BPF_OBJ_GET_INFO_BY_FD"));
        assert_eq!(super::BPF_LINK_CREATE, cmd("BPF_LINK_CREATE"));
    }
}
