//! What `run --kernel` does in the child between fork and exec (join the cgroup, drop to
//! `--user`), and the user database lookup `--user` needs. `unsafe` is allowed here:
//! `Command::pre_exec` is unsafe by contract, and neither std nor rustix wraps getpwnam,
//! getgrouplist or setgroups/setgid/setuid.

use crate::error::{Error, Result};
use std::ffi::CString;
use std::os::fd::RawFd;
use std::os::unix::process::CommandExt as _;
use std::process::Command;

/// The user `--user` names: (uid, gid, supplementary groups, name, home).
pub struct User {
    uid: libc::uid_t,
    gid: libc::gid_t,
    groups: Vec<libc::gid_t>,
    name: String,
    home: String,
}

pub fn lookup_user(spec: &str) -> Result<User> {
    let c = CString::new(spec).map_err(|_| Error::usage("--user: the name holds a NUL byte"))?;
    // SAFETY: getpwnam/getpwuid return a pointer to static storage or null; it is read
    // at once, before any other call that could overwrite it (one thread runs here).
    let pw = unsafe {
        let p = libc::getpwnam(c.as_ptr());
        if p.is_null() {
            match spec.parse::<libc::uid_t>() {
                Ok(uid) => libc::getpwuid(uid),
                Err(_) => p,
            }
        } else {
            p
        }
    };
    if pw.is_null() {
        return Err(Error::usage(format_args!("--user: no user `{spec}`")));
    }
    // SAFETY: pw is a valid passwd record (checked non-null above).
    let (uid, gid, name, home) = unsafe {
        let p = &*pw;
        (
            p.pw_uid,
            p.pw_gid,
            std::ffi::CStr::from_ptr(p.pw_name)
                .to_string_lossy()
                .into_owned(),
            std::ffi::CStr::from_ptr(p.pw_dir)
                .to_string_lossy()
                .into_owned(),
        )
    };
    let cname = CString::new(name.clone()).unwrap_or_default();
    let mut n: libc::c_int = 64;
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    for _ in 0..4 {
        groups.resize(n as usize, 0);
        // SAFETY: groups has room for n entries; getgrouplist writes at most n and sets n.
        let r = unsafe { libc::getgrouplist(cname.as_ptr(), gid, groups.as_mut_ptr(), &mut n) };
        if r >= 0 {
            groups.truncate(n as usize);
            break;
        }
    }
    Ok(User {
        uid,
        gid,
        groups,
        name,
        home,
    })
}

/// Sets up `cmd`'s child between fork and exec: it writes itself into the cgroup whose
/// `cgroup.procs` is open as `join` (if any), then becomes `user` (if any), and the
/// environment says who it is.
pub fn set_up(cmd: &mut Command, join: Option<RawFd>, user: Option<&User>) {
    let ids = user.map(|u| (u.uid, u.gid, u.groups.clone()));
    if let Some(u) = user {
        cmd.env("HOME", &u.home)
            .env("USER", &u.name)
            .env("LOGNAME", &u.name);
    }
    if join.is_none() && ids.is_none() {
        return;
    }
    // SAFETY: the closure runs in the child between fork and exec and makes only
    // async-signal-safe system calls (write, setgroups, setgid, setuid) on data prepared
    // before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(fd) = join {
                sockwrap_kernel::cgroup::join_raw(fd)?;
            }
            match &ids {
                Some(ids) => become_user(ids),
                None => Ok(()),
            }
        });
    }
}

/// In the child, between fork and exec: the user's groups, group and user, in that order
/// (setuid last: after it, the others are no longer allowed). Only async-signal-safe calls.
fn become_user(
    (uid, gid, groups): &(libc::uid_t, libc::gid_t, Vec<libc::gid_t>),
) -> std::io::Result<()> {
    // SAFETY: groups is valid for groups.len() entries; the three calls take plain values.
    let failed = unsafe {
        libc::setgroups(groups.len(), groups.as_ptr()) != 0
            || libc::setgid(*gid) != 0
            || libc::setuid(*uid) != 0
    };
    if failed {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
