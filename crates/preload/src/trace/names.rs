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

pub(super) fn level_name(level: i32) -> Option<&'static str> {
    Some(match level {
        libc::SOL_SOCKET => "SOL_SOCKET",
        libc::IPPROTO_IP => "IPPROTO_IP",
        libc::IPPROTO_IPV6 => "IPPROTO_IPV6",
        libc::IPPROTO_TCP => "IPPROTO_TCP",
        libc::IPPROTO_UDP => "IPPROTO_UDP",
        284 => "SOL_MPTCP",
        _ => return None,
    })
}

/// The C name of an option: the catalog's for those it knows (managed, or carried over a
/// protocol change), else from the trace's own list of common options.
pub(super) fn opt_name(level: i32, name: i32) -> Option<&'static str> {
    sockwrap_policy::catalog::kernel_name(level, name).or_else(|| other_opt_name(level, name))
}

pub(super) fn other_opt_name(level: i32, name: i32) -> Option<&'static str> {
    Some(match (level, name) {
        (libc::SOL_SOCKET, n) => match n {
            1 => "SO_DEBUG",
            3 => "SO_TYPE",
            4 => "SO_ERROR",
            5 => "SO_DONTROUTE",
            6 => "SO_BROADCAST",
            16 => "SO_PASSCRED",
            17 => "SO_PEERCRED",
            19 => "SO_SNDLOWAT",
            20 => "SO_RCVTIMEO_OLD",
            21 => "SO_SNDTIMEO_OLD",
            29 => "SO_TIMESTAMP_OLD",
            30 => "SO_ACCEPTCONN",
            38 => "SO_PROTOCOL",
            39 => "SO_DOMAIN",
            46 => "SO_BUSY_POLL",
            49 => "SO_INCOMING_CPU",
            60 => "SO_ZEROCOPY",
            66 => "SO_RCVTIMEO_NEW",
            67 => "SO_SNDTIMEO_NEW",
            _ => return None,
        },
        (libc::IPPROTO_IP, n) => match n {
            3 => "IP_HDRINCL",
            4 => "IP_OPTIONS",
            8 => "IP_PKTINFO",
            10 => "IP_MTU_DISCOVER",
            11 => "IP_RECVERR",
            12 => "IP_RECVTTL",
            13 => "IP_RECVTOS",
            14 => "IP_MTU",
            32 => "IP_MULTICAST_IF",
            33 => "IP_MULTICAST_TTL",
            34 => "IP_MULTICAST_LOOP",
            35 => "IP_ADD_MEMBERSHIP",
            36 => "IP_DROP_MEMBERSHIP",
            _ => return None,
        },
        (libc::IPPROTO_IPV6, n) => match n {
            17 => "IPV6_MULTICAST_IF",
            18 => "IPV6_MULTICAST_HOPS",
            19 => "IPV6_MULTICAST_LOOP",
            23 => "IPV6_MTU_DISCOVER",
            25 => "IPV6_RECVERR",
            49 => "IPV6_RECVPKTINFO",
            66 => "IPV6_RECVTCLASS",
            _ => return None,
        },
        (libc::IPPROTO_TCP, n) => match n {
            7 => "TCP_SYNCNT",
            8 => "TCP_LINGER2",
            10 => "TCP_WINDOW_CLAMP",
            11 => "TCP_INFO",
            12 => "TCP_QUICKACK",
            14 => "TCP_MD5SIG",
            23 => "TCP_FASTOPEN",
            31 => "TCP_ULP",
            _ => return None,
        },
        (libc::IPPROTO_UDP, n) => match n {
            1 => "UDP_CORK",
            103 => "UDP_SEGMENT",
            104 => "UDP_GRO",
            _ => return None,
        },
        _ => return None,
    })
}

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
