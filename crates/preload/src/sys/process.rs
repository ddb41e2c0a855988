//! Files, clocks, randomness and the process itself, by system call or through [`super::lazy`].

use super::{check, close, lazy, Errno};
#[allow(unused_imports)]
use crate::prelude::*;
use core::mem::MaybeUninit;

/// Sleeps `ms` milliseconds, the whole time even if signals interrupt the sleep.
pub fn sleep_ms(ms: u32) {
    let mut ts = libc::timespec {
        tv_sec: (ms / 1000) as libc::time_t,
        tv_nsec: ((ms % 1000) * 1_000_000) as libc::c_long,
    };
    loop {
        let mut rem = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: both timespecs are valid for the call.
        let r = unsafe {
            syscall!(
                libc::SYS_nanosleep,
                &ts as *const libc::timespec,
                &mut rem as *mut libc::timespec,
            )
        };
        if r != -(libc::EINTR as libc::c_long) {
            return;
        }
        ts = rem;
    }
}

/// 64 random bits from the kernel (`getrandom`), or from the clock if that fails.
pub fn random_u64() -> u64 {
    let mut v = 0u64;
    // SAFETY: v is valid for writing 8 bytes.
    let r = unsafe {
        syscall!(
            libc::SYS_getrandom,
            &mut v as *mut u64,
            8 as libc::c_long,
            libc::GRND_NONBLOCK as libc::c_long,
        )
    };
    if r == 8 {
        v
    } else {
        clock_ns(libc::CLOCK_REALTIME) ^ ((getpid() as u64) << 32)
    }
}

/// `fd`'s file type bits (`st_mode & S_IFMT`), device and inode, from one fstat.
pub fn stat_of(fd: i32) -> Option<(u32, u64, u64)> {
    let mut st = MaybeUninit::<libc::stat>::zeroed();
    // SAFETY: st is valid for writing a struct stat.
    let r = unsafe { syscall!(libc::SYS_fstat, fd as libc::c_long, st.as_mut_ptr()) };
    if r < 0 {
        return None;
    }
    // SAFETY: zero-initialised and filled by the kernel.
    let st = unsafe { st.assume_init() };
    Some((st.st_mode & libc::S_IFMT, st.st_dev, st.st_ino))
}

/// The device and inode of what `fd` refers to, to tell one file from a later one on the
/// same number.
pub fn inode(fd: i32) -> Option<(u64, u64)> {
    stat_of(fd).map(|(_, dev, ino)| (dev, ino))
}

pub fn write_all(fd: i32, buf: &[u8]) {
    // One write(2) for the whole line: lines from several threads and processes never
    // interleave on an O_APPEND file or a pipe (up to PIPE_BUF).
    // SAFETY: buf is valid for buf.len() bytes.
    let _ = unsafe { syscall!(libc::SYS_write, fd as libc::c_long, buf.as_ptr(), buf.len()) };
}

pub fn getpid() -> i32 {
    // SAFETY: getpid has no arguments and cannot fail.
    unsafe { syscall!(libc::SYS_getpid) as i32 }
}

pub fn gettid() -> i32 {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { syscall!(libc::SYS_gettid) as i32 }
}

/// Nanoseconds of `clock` (the vDSO answers: no system call).
pub fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is valid for writing; clock_gettime is async-signal-safe.
    unsafe { lazy::sockwrap_clock_gettime(clock, &mut ts) };
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

/// A word on a page of its own that the kernel gives a forked child zeroed
/// (`MADV_WIPEONFORK`, Linux 4.14): for caches that must not survive a fork, whichever way
/// the child was made (fork, `_Fork`, a raw clone without CLONE_VM). One mmap and one
/// madvise, once; the page lives as long as the process.
pub fn wiped_on_fork_word() -> Option<&'static core::sync::atomic::AtomicI32> {
    const PAGE: usize = 4096;
    // SAFETY: a fresh private anonymous mapping; nothing else refers to it.
    let p = unsafe {
        syscall!(
            libc::SYS_mmap,
            core::ptr::null_mut::<libc::c_void>(),
            PAGE,
            (libc::PROT_READ | libc::PROT_WRITE) as libc::c_long,
            (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as libc::c_long,
            -1 as libc::c_long,
            0 as libc::c_long,
        )
    };
    if p < 0 && p > -4096 {
        return None;
    }
    let p = p as *mut libc::c_void;
    // SAFETY: p is the page just mapped.
    if unsafe {
        syscall!(
            libc::SYS_madvise,
            p,
            PAGE,
            libc::MADV_WIPEONFORK as libc::c_long,
        )
    } != 0
    {
        // SAFETY: unmapping our own page, which nothing refers to.
        unsafe { syscall!(libc::SYS_munmap, p, PAGE) };
        return None;
    }
    // SAFETY: the page is zeroed, aligned, never unmapped, and only ever used as this one
    // atomic (zero is a valid AtomicI32).
    Some(unsafe { &*(p as *const core::sync::atomic::AtomicI32) })
}

/// Opens `path` (shorter than 4 KiB, no NUL) with `flags`, mode 0600 when created.
/// Allocation-free and async-signal-safe.
///
/// The C string is made in a small buffer when the path fits: every exec opens the
/// host-wide policy file, and a zeroed 4 KiB buffer on the constructor's stack cost ~4,000
/// instructions and a page fault of its own there.
pub fn open(path: &str, flags: i32) -> Result<i32, Errno> {
    if path.len() < 256 {
        open_in(&mut [0u8; 256], path, flags)
    } else {
        open_long(path, flags)
    }
}

#[cold]
#[inline(never)]
fn open_long(path: &str, flags: i32) -> Result<i32, Errno> {
    open_in(&mut [0u8; 4096], path, flags)
}

/// [`open`] with `c` (zeroed) to make the C string in.
fn open_in(c: &mut [u8], path: &str, flags: i32) -> Result<i32, Errno> {
    if path.len() >= c.len() || path.as_bytes().contains(&0) {
        return Err(Errno(libc::ENAMETOOLONG));
    }
    c[..path.len()].copy_from_slice(path.as_bytes());
    // SAFETY: c is NUL-terminated. open() is not one of our hooks.
    let fd = unsafe { syscall!(libc::SYS_openat, libc::AT_FDCWD, c.as_ptr(), flags, 0o600) };
    check(fd).map(|fd| fd as i32)
}

/// `read(2)` as a raw system call: the bytes read, or -errno.
fn read(fd: i32, buf: &mut [u8]) -> isize {
    // SAFETY: buf is valid for writes of its length.
    unsafe {
        syscall!(
            libc::SYS_read,
            fd as libc::c_long,
            buf.as_mut_ptr(),
            buf.len(),
        ) as isize
    }
}

/// Reads into `buf` until it is full or the file ends (or fails): the bytes read.
pub fn read_full(fd: i32, buf: &mut [u8]) -> usize {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        let n = read(fd, rest);
        if n > 0 {
            done += n as usize;
        } else if n != -(libc::EINTR as isize) {
            break;
        }
    }
    done
}

/// Whether the loader runs this process in secure mode (setuid, setcap).
pub fn secure_mode() -> bool {
    // SAFETY: getauxval has no preconditions.
    unsafe { libc::getauxval(libc::AT_SECURE) != 0 }
}

/// The target of a symbolic link such as `/proc/self/exe`, into `buf`.
pub fn readlink<'a>(path: &core::ffi::CStr, buf: &'a mut [u8]) -> Option<&'a [u8]> {
    // SAFETY: path is NUL-terminated, buf is valid for its length.
    let n = unsafe {
        syscall!(
            libc::SYS_readlink,
            path.as_ptr(),
            buf.as_mut_ptr(),
            buf.len(),
        )
    };
    usize::try_from(n).ok().map(|n| &buf[..n])
}

/// The basename of the path this program was executed by (`AT_EXECFN`: the path given to
/// execve, symlinks not resolved). Free: the kernel put it on the stack; reading
/// `/proc/self/exe` costs a fresh process ~20 µs (procfs builds the process's entries).
pub fn exec_fn_basename() -> Option<&'static [u8]> {
    // SAFETY: getauxval has no preconditions; AT_EXECFN, when present, points to a
    // NUL-terminated string on the process's initial stack, alive for the whole process.
    let path = unsafe {
        let p = libc::getauxval(libc::AT_EXECFN) as *const libc::c_char;
        if p.is_null() {
            return None;
        }
        core::ffi::CStr::from_ptr(p).to_bytes()
    };
    Some(path.rsplit(|&c| c == b'/').next().unwrap_or(path))
}

/// The basename of this process's executable, into `out`. A short buffer first: a 4 KiB
/// one on the constructor's stack is a page fault of its own in every exec.
pub fn exe_basename(out: &mut [u8; 256]) -> Option<&[u8]> {
    let n = readlink(c"/proc/self/exe", out)?.len();
    if n < out.len() {
        let start = out[..n]
            .iter()
            .rposition(|&c| c == b'/')
            .map_or(0, |i| i + 1);
        return Some(&out[start..n]);
    }
    long_exe_basename(out)
}

#[cold]
#[inline(never)]
fn long_exe_basename(out: &mut [u8; 256]) -> Option<&[u8]> {
    let mut buf = [0u8; 4096];
    let path = readlink(c"/proc/self/exe", &mut buf)?;
    let base = path.rsplit(|&c| c == b'/').next()?;
    let n = base.len().min(out.len());
    out[..n].copy_from_slice(&base[..n]);
    Some(&out[..n])
}

/// Ends the process at once (a panic: there is no unwinding without std).
#[cfg_attr(test, allow(dead_code))]
pub fn abort() -> ! {
    // SAFETY: abort has no preconditions and does not return.
    unsafe { lazy::sockwrap_abort() }
}

/// The whole content of a small file (the policy file), read without std.
// Out of line: its 8 KiB buffer would otherwise sit in the constructor's frame and be
// probed (a page fault) in every exec, not only in those that read a policy file.
#[inline(never)]
pub fn read_file(path: &str) -> Result<alloc::vec::Vec<u8>, Errno> {
    let fd = open(path, libc::O_RDONLY | libc::O_CLOEXEC)?;
    let mut out = alloc::vec::Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = read(fd, &mut chunk);
        if n > 0 {
            out.extend_from_slice(&chunk[..n as usize]);
        } else if n == 0 {
            break;
        } else if n != -(libc::EINTR as isize) {
            close(fd);
            return Err(Errno(-n as i32));
        }
    }
    close(fd);
    Ok(out)
}
