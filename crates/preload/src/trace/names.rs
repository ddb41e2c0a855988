//! The names of the kernel's constants as the trace writes them (`AF_INET`, `IP_TOS`,
//! `ECONNREFUSED`, `EAI_NONAME`...).

use crate::sys;

pub fn family_name(f: i32) -> Option<&'static str> {
    Some(match f {
        libc::AF_UNSPEC => "AF_UNSPEC",
        libc::AF_UNIX => "AF_UNIX",
        libc::AF_INET => "AF_INET",
        libc::AF_INET6 => "AF_INET6",
        libc::AF_NETLINK => "AF_NETLINK",
        libc::AF_PACKET => "AF_PACKET",
        _ => return None,
    })
}

pub(super) fn type_name(t: i32) -> Option<&'static str> {
    Some(match t {
        libc::SOCK_STREAM => "SOCK_STREAM",
        libc::SOCK_DGRAM => "SOCK_DGRAM",
        libc::SOCK_RAW => "SOCK_RAW",
        libc::SOCK_SEQPACKET => "SOCK_SEQPACKET",
        _ => return None,
    })
}

pub(super) fn proto_name(p: i32) -> Option<&'static str> {
    Some(match p {
        0 => "0",
        libc::IPPROTO_TCP => "IPPROTO_TCP",
        libc::IPPROTO_UDP => "IPPROTO_UDP",
        libc::IPPROTO_ICMP => "IPPROTO_ICMP",
        libc::IPPROTO_ICMPV6 => "IPPROTO_ICMPV6",
        sys::IPPROTO_MPTCP => "IPPROTO_MPTCP",
        _ => return None,
    })
}

pub fn errno_short(e: i32) -> &'static str {
    match e {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EINTR => "EINTR",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EINVAL => "EINVAL",
        libc::ENFILE => "ENFILE",
        libc::EMFILE => "EMFILE",
        libc::ENODEV => "ENODEV",
        libc::EPIPE => "EPIPE",
        libc::ENOSYS => "ENOSYS",
        libc::ENOTSOCK => "ENOTSOCK",
        libc::EDESTADDRREQ => "EDESTADDRREQ",
        libc::EMSGSIZE => "EMSGSIZE",
        libc::EPROTOTYPE => "EPROTOTYPE",
        libc::ENOPROTOOPT => "ENOPROTOOPT",
        libc::EPROTONOSUPPORT => "EPROTONOSUPPORT",
        libc::ESOCKTNOSUPPORT => "ESOCKTNOSUPPORT",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EPFNOSUPPORT => "EPFNOSUPPORT",
        libc::EAFNOSUPPORT => "EAFNOSUPPORT",
        libc::EADDRINUSE => "EADDRINUSE",
        libc::EADDRNOTAVAIL => "EADDRNOTAVAIL",
        libc::ENETDOWN => "ENETDOWN",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::ENETRESET => "ENETRESET",
        libc::ECONNABORTED => "ECONNABORTED",
        libc::ECONNRESET => "ECONNRESET",
        libc::ENOBUFS => "ENOBUFS",
        libc::EISCONN => "EISCONN",
        libc::ENOTCONN => "ENOTCONN",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::EHOSTDOWN => "EHOSTDOWN",
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        libc::EALREADY => "EALREADY",
        libc::EINPROGRESS => "EINPROGRESS",
        0 => "0",
        _ => "EOTHER",
    }
}

pub(super) use sockwrap_policy::names::{level_name, option_name as opt_name};

/// getaddrinfo's error codes by name.
pub fn eai_name(code: i32) -> &'static str {
    match code {
        0 => "ok",
        -1 => "EAI_BADFLAGS",
        -2 => "EAI_NONAME",
        -3 => "EAI_AGAIN",
        -4 => "EAI_FAIL",
        -5 => "EAI_NODATA",
        -6 => "EAI_FAMILY",
        -7 => "EAI_SOCKTYPE",
        -8 => "EAI_SERVICE",
        -9 => "EAI_ADDRFAMILY",
        -10 => "EAI_MEMORY",
        -11 => "EAI_SYSTEM",
        -12 => "EAI_OVERFLOW",
        _ => "EAI_OTHER",
    }
}

/// h_errno's values by name (gethostbyname*).
pub fn h_errno_name(code: i32) -> &'static str {
    match code {
        0 => "ok",
        1 => "HOST_NOT_FOUND",
        2 => "TRY_AGAIN",
        3 => "NO_RECOVERY",
        4 => "NO_DATA",
        _ => "H_OTHER",
    }
}
