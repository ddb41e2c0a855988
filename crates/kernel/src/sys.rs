//! The system calls the backend makes outside aya, each behind a safe function, so that the
//! modules that decide stay free of `unsafe` (the crate denies it everywhere else but in
//! [`crate::abi`]'s `Pod` marks and the `bpf()` attribute builders of [`crate::links`] and
//! [`crate::mptcp`]).
//!
//! rustix where it has the call (no hand-written FFI, no errno to read back); libc for what
//! rustix does not offer (`if_nametoindex`, the `bpf()` system call, `fork`) or where a raw
//! descriptor is all there is (`poll` of aya's ring buffer).

use std::io;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

/// The interface index of `name`, in sockwrap's network namespace.
pub fn ifindex(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: if_nametoindex reads a NUL-terminated string and nothing else.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

/// Whether this process runs as root (effective uid 0): loading BPF programs needs it.
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// The type of the filesystem `path` is on (`statfs` f_type), if it can be read.
pub fn fs_type(path: &Path) -> Option<i64> {
    // f_type is i64 on x86_64, a narrower integer elsewhere.
    #[allow(clippy::useless_conversion)]
    rustix::fs::statfs(path).ok().map(|s| i64::from(s.f_type))
}

/// The size of a memory page.
pub fn page_size() -> usize {
    rustix::param::page_size()
}

/// Waits until `fd` is readable, at most `ms` milliseconds (a signal ends the wait early).
/// (libc: aya's ring buffer gives a raw descriptor, and poll(2) on one that is not open
/// answers POLLNVAL, where rustix's would need the promise that it is.)
pub fn wait_readable(fd: RawFd, ms: i32) {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, on the stack for the call.
    unsafe { libc::poll(&mut p, 1, ms) };
}

/// Whether a socket of `protocol` (IPPROTO_MPTCP: 262) can be made here: `Err` with the
/// errno socket(AF_INET, SOCK_STREAM, protocol) gave.
pub fn tcp_socket_with(protocol: u32) -> Result<(), i32> {
    use rustix::net::{socket, AddressFamily, Protocol, SocketType};
    let p = std::num::NonZeroU32::new(protocol).map(Protocol::from_raw);
    socket(AddressFamily::INET, SocketType::STREAM, p)
        .map(drop)
        .map_err(|e| e.raw_os_error())
}

/// bpf(2) with `attr` (a `union bpf_attr` member for `cmd`, `size_of::<T>()` bytes):
/// the command's result (a new descriptor for some commands).
///
/// # Safety
/// `attr` must have the layout the kernel expects for `cmd`, and every address in it
/// (path names, buffers) must point at memory that is valid for what the command does with
/// it (read, or write for `info` buffers) for the duration of the call.
pub unsafe fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<i64> {
    // SAFETY: the caller vouches for the contents; `attr` itself is live for the call and
    // exactly size_of::<T>() bytes long.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// The descriptor a bpf(2) command returned, owned.
///
/// # Safety
/// `fd` must be a new descriptor that nothing else owns or closes.
pub unsafe fn owned_fd(fd: i64) -> OwnedFd {
    // SAFETY: the caller's promise.
    unsafe { OwnedFd::from_raw_fd(fd as RawFd) }
}

/// Runs `f` on the memory of a BPF_F_MMAPABLE map (`len` bytes from offset 0), mapped
/// shared and writable: what `f` writes, the programs read.
pub fn with_mapped_map(
    map: BorrowedFd<'_>,
    len: usize,
    f: impl FnOnce(&mut [u8]),
) -> io::Result<()> {
    use rustix::mm::{mmap, munmap, MapFlags, ProtFlags};
    let prot = ProtFlags::READ | ProtFlags::WRITE;
    // SAFETY: a new shared mapping of the map's own memory, at an address the kernel picks:
    // it aliases nothing of ours.
    let p = unsafe { mmap(std::ptr::null_mut(), len, prot, MapFlags::SHARED, map, 0) }?;
    // SAFETY: the mapping is `len` bytes, readable and writable, and nothing else refers to
    // it until munmap below.
    f(unsafe { std::slice::from_raw_parts_mut(p.cast::<u8>(), len) });
    // SAFETY: the mapping made above, no longer borrowed.
    unsafe { munmap(p, len) }?;
    Ok(())
}

/// Writes `bytes` to the raw descriptor `fd` with one write(2), as a process may between
/// fork and exec (async-signal-safe: no allocation, no lock).
pub fn write_raw(fd: RawFd, bytes: &[u8]) -> io::Result<()> {
    // SAFETY: write(2) reads `bytes.len()` bytes from a live slice; `fd` is only written to.
    let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// How a child of [`run_in_child`] ended.
pub enum ChildEnd {
    /// It exited with this code.
    Exited(i32),
    /// A signal ended it (raw wait status).
    Other(i32),
    /// It did not end within the time given; it was killed.
    TimedOut,
}

/// Forks; the child runs `child` and exits with what it returns, the parent waits for it
/// at most `timeout` (then kills it). `child` must make only async-signal-safe calls (raw
/// system calls on data made before: no allocation, no lock), as after any fork.
pub fn run_in_child(
    child: impl FnOnce() -> i32,
    timeout: std::time::Duration,
) -> io::Result<ChildEnd> {
    // SAFETY: the child runs only `child`, which the caller keeps to async-signal-safe
    // calls, and then _exit, which never returns.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        let code = child();
        // SAFETY: ends the child without running anything of the parent's (atexit, flush).
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    let step = std::time::Duration::from_millis(20);
    let mut waited = std::time::Duration::ZERO;
    loop {
        // SAFETY: waitpid on our own child with a valid out pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            break;
        }
        if waited >= timeout {
            // SAFETY: kill and reap our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return Ok(ChildEnd::TimedOut);
        }
        std::thread::sleep(step);
        waited += step;
    }
    Ok(if libc::WIFEXITED(status) {
        ChildEnd::Exited(libc::WEXITSTATUS(status))
    } else {
        ChildEnd::Other(status)
    })
}

/// For a child of [`run_in_child`]: one TCP socket bound to 127.0.0.1 (port 0), then one
/// connected to 127.0.0.1:`port`. 0 when both worked, 2 when the bind failed, 3 when the
/// connect did. Raw system calls only (rustix), nothing allocated.
pub fn bind_then_connect_loopback(port: u16) -> i32 {
    use rustix::net::{bind, connect, socket, AddressFamily, SocketType};
    use std::net::{Ipv4Addr, SocketAddrV4};
    let tcp = || socket(AddressFamily::INET, SocketType::STREAM, None);
    let bound = tcp().and_then(|s| bind(s.as_fd(), &SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)));
    if bound.is_err() {
        return 2;
    }
    let to = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
    if tcp().and_then(|s| connect(s.as_fd(), &to)).is_err() {
        return 3;
    }
    0
}

/// An errno as the kernel's name and its text: `EPERM: Operation not permitted`.
pub fn errno_text(e: i32) -> String {
    let name = match e {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::E2BIG => "E2BIG",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EINVAL => "EINVAL",
        libc::ENOSPC => "ENOSPC",
        libc::ENOSYS => "ENOSYS",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::ENOPROTOOPT => "ENOPROTOOPT",
        libc::EPROTONOSUPPORT => "EPROTONOSUPPORT",
        524 => return "ENOTSUPP (the kernel's own: not supported)".into(),
        _ => return std::io::Error::from_raw_os_error(e).to_string(),
    };
    let text = std::io::Error::from_raw_os_error(e).to_string();
    let text = text.split(" (os error").next().unwrap_or(&text).to_string();
    format!("{name}: {text}")
}

/// The running kernel's release (`uname -r`).
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}
