//! The names of the kernel's socket constants as logs and traces write them (`SOL_SOCKET`,
//! `IP_TOS`, `ESTAB`): one table for the library's trace and the kernel backend's, so that
//! both name the same options the same way. Numbers, not libc's constants: this crate has
//! no libc (they are the same on every Linux architecture sockwrap builds for).

use crate::catalog::{self, k};

const IPPROTO_UDP: i32 = 17;
const SOL_MPTCP: i32 = 284;

/// A socket option level's C name.
pub fn level_name(level: i32) -> Option<&'static str> {
    Some(match level {
        k::SOL_SOCKET => "SOL_SOCKET",
        k::IPPROTO_IP => "IPPROTO_IP",
        k::IPPROTO_IPV6 => "IPPROTO_IPV6",
        k::IPPROTO_TCP => "IPPROTO_TCP",
        IPPROTO_UDP => "IPPROTO_UDP",
        SOL_MPTCP => "SOL_MPTCP",
        _ => return None,
    })
}

/// The C name of an option: the catalog's for those it knows (managed, or carried over a
/// protocol change), else from a list of other common options.
pub fn option_name(level: i32, name: i32) -> Option<&'static str> {
    catalog::kernel_name(level, name).or_else(|| other_option_name(level, name))
}

fn other_option_name(level: i32, name: i32) -> Option<&'static str> {
    Some(match (level, name) {
        (k::SOL_SOCKET, n) => match n {
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
        (k::IPPROTO_IP, n) => match n {
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
        (k::IPPROTO_IPV6, n) => match n {
            17 => "IPV6_MULTICAST_IF",
            18 => "IPV6_MULTICAST_HOPS",
            19 => "IPV6_MULTICAST_LOOP",
            23 => "IPV6_MTU_DISCOVER",
            25 => "IPV6_RECVERR",
            49 => "IPV6_RECVPKTINFO",
            66 => "IPV6_RECVTCLASS",
            _ => return None,
        },
        (k::IPPROTO_TCP, n) => match n {
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
        (IPPROTO_UDP, n) => match n {
            1 => "UDP_CORK",
            103 => "UDP_SEGMENT",
            104 => "UDP_GRO",
            _ => return None,
        },
        _ => return None,
    })
}

/// A TCP state (`tcpi_state`, `sk_state`) as `ss` names it.
pub fn tcp_state_name(state: u8) -> &'static str {
    match state {
        1 => "ESTAB",
        2 => "SYN-SENT",
        3 => "SYN-RECV",
        4 => "FIN-WAIT-1",
        5 => "FIN-WAIT-2",
        6 => "TIME-WAIT",
        7 => "CLOSE",
        8 => "CLOSE-WAIT",
        9 => "LAST-ACK",
        10 => "LISTEN",
        11 => "CLOSING",
        _ => "UNKNOWN",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_the_catalog_and_of_other_options() {
        assert_eq!(level_name(6), Some("IPPROTO_TCP"));
        assert_eq!(level_name(284), Some("SOL_MPTCP"));
        assert_eq!(level_name(99), None);
        // The catalog's own (IP_TOS), one it does not manage (SO_PROTOCOL), none.
        assert_eq!(option_name(0, 1), Some("IP_TOS"));
        assert_eq!(option_name(1, 38), Some("SO_PROTOCOL"));
        assert_eq!(option_name(6, 9999), None);
        assert_eq!(tcp_state_name(1), "ESTAB");
        assert_eq!(tcp_state_name(7), "CLOSE");
        assert_eq!(tcp_state_name(42), "UNKNOWN");
    }
}
