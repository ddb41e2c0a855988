//! The system calls the backend makes outside aya and its own `bpf()` wrappers, each in a
//! safe function, so that the modules that decide stay free of `unsafe`.

/// The interface index of `name`, in sockwrap's network namespace.
pub fn ifindex(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: if_nametoindex reads a NUL-terminated string and nothing else.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}
