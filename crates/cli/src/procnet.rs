//! What `sockwrap attach` learns about a running process from `/proc`, without touching
//! it: its socket descriptors (`/proc/PID/fd` → `socket:[INODE]`), the TCP and UDP sockets
//! of its network namespace (`/proc/PID/net/{tcp,tcp6,udp,udp6}`: family, state,
//! endpoints, by inode), its children (`--tree`) and the names rules match it by.

use sockwrap_policy::catalog::Family;
use sockwrap_policy::Transport;
use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// One socket of a network namespace's table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub transport: Transport,
    pub family: Family,
    pub local: SocketAddr,
    /// `None` when the table shows no peer (listening, unconnected UDP).
    pub remote: Option<SocketAddr>,
    /// The kernel's state number (TCP_ESTABLISHED = 1 ... TCP_LISTEN = 10).
    pub state: u8,
}

pub const TCP_ESTABLISHED: u8 = 1;
pub const TCP_CLOSE: u8 = 7;
pub const TCP_LISTEN: u8 = 10;

impl Entry {
    /// The state as `ss` names it.
    pub fn state_name(&self) -> &'static str {
        state_name(self.transport, self.state)
    }
}

pub fn state_name(transport: Transport, state: u8) -> &'static str {
    match (transport, state) {
        (Transport::Udp, TCP_ESTABLISHED) => "ESTAB",
        (Transport::Udp, TCP_CLOSE) => "UNCONN",
        (_, 1) => "ESTAB",
        (_, 2) => "SYN-SENT",
        (_, 3) => "SYN-RECV",
        (_, 4) => "FIN-WAIT-1",
        (_, 5) => "FIN-WAIT-2",
        (_, 6) => "TIME-WAIT",
        (_, 7) => "CLOSE",
        (_, 8) => "CLOSE-WAIT",
        (_, 9) => "LAST-ACK",
        (_, 10) => "LISTEN",
        (_, 11) => "CLOSING",
        _ => "UNKNOWN",
    }
}

/// `0100007F:1F90` (IPv4) or 32 hex digits `:PORT` (IPv6): each 32-bit group is printed
/// by the kernel as a host-order number of network-order bytes.
fn parse_addr(s: &str, v6: bool) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        let h = ip.get(i * 8..i * 8 + 8)?;
        Some(u32::from_str_radix(h, 16).ok()?.to_ne_bytes())
    };
    let ip = if v6 {
        if ip.len() != 32 {
            return None;
        }
        let mut b = [0u8; 16];
        for i in 0..4 {
            b[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
        }
        IpAddr::V6(Ipv6Addr::from(b))
    } else {
        if ip.len() != 8 {
            return None;
        }
        IpAddr::V4(Ipv4Addr::from(word(0)?))
    };
    Some(SocketAddr::new(ip, port))
}

/// The entries of one table's text (`/proc/net/tcp` format), by inode. Lines that do not
/// parse are left out.
pub fn parse_table(text: &str, transport: Transport, v6: bool) -> Vec<(u64, Entry)> {
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 {
            continue;
        }
        let (Some(local), Some(remote), Ok(state), Ok(inode)) = (
            parse_addr(f[1], v6),
            parse_addr(f[2], v6),
            u8::from_str_radix(f[3], 16),
            f[9].parse::<u64>(),
        ) else {
            continue;
        };
        if inode == 0 {
            continue; // TIME-WAIT and request sockets: no descriptor
        }
        let remote = (remote.port() != 0 || !remote.ip().is_unspecified()).then_some(remote);
        out.push((
            inode,
            Entry {
                transport,
                family: if v6 { Family::V6 } else { Family::V4 },
                local,
                remote,
                state,
            },
        ));
    }
    out
}

/// The TCP and UDP sockets of `pid`'s network namespace, by inode, and the ports its TCP
/// listeners use (with their addresses): an accepted socket has a listener's local port.
#[derive(Default)]
pub struct Tables {
    pub by_inode: HashMap<u64, Entry>,
    listeners: HashSet<(IpAddr, u16)>,
}

impl Tables {
    pub fn read(pid: i32) -> io::Result<Tables> {
        let mut t = Tables::default();
        for (file, transport, v6) in [
            ("tcp", Transport::Tcp, false),
            ("tcp6", Transport::Tcp, true),
            ("udp", Transport::Udp, false),
            ("udp6", Transport::Udp, true),
        ] {
            let text = match std::fs::read_to_string(format!("/proc/{pid}/net/{file}")) {
                Ok(t) => t,
                // No IPv6 in this kernel or namespace.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for (ino, e) in parse_table(&text, transport, v6) {
                if e.transport == Transport::Tcp && e.state == TCP_LISTEN {
                    t.listeners.insert((e.local.ip(), e.local.port()));
                }
                t.by_inode.insert(ino, e);
            }
        }
        Ok(t)
    }

    /// Whether a TCP socket with this local address was accepted by a listener of the
    /// namespace (its local port is a listening port on its address or a wildcard).
    pub fn is_accepted(&self, local: SocketAddr) -> bool {
        let p = local.port();
        let any4 = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        let any6 = IpAddr::V6(Ipv6Addr::UNSPECIFIED);
        let mut ips = vec![local.ip(), any4, any6];
        if let IpAddr::V4(v4) = local.ip() {
            ips.push(IpAddr::V6(v4.to_ipv6_mapped()));
        }
        if let IpAddr::V6(v6) = local.ip() {
            if let Some(v4) = v6.to_ipv4_mapped() {
                ips.push(IpAddr::V4(v4));
            }
        }
        ips.iter().any(|ip| self.listeners.contains(&(*ip, p)))
    }
}

/// The socket descriptors of `pid`: (fd, inode), in fd order.
pub fn socket_fds(pid: i32) -> io::Result<Vec<(i32, u64)>> {
    let mut out = Vec::new();
    for ent in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let ent = ent?;
        let Some(fd) = ent.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        // A descriptor closed since the directory was read: nothing to do with it.
        let Ok(link) = std::fs::read_link(ent.path()) else {
            continue;
        };
        let link = link.to_string_lossy();
        if let Some(ino) = link
            .strip_prefix("socket:[")
            .and_then(|s| s.strip_suffix(']'))
            .and_then(|s| s.parse::<u64>().ok())
        {
            out.push((fd, ino));
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// The thread group (process) a PID or thread ID belongs to, if it exists.
pub fn tgid(pid: i32) -> Option<i32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// `pid` and all its descendants, parents before children.
pub fn tree(pid: i32) -> Vec<i32> {
    let mut parent_of: Vec<(i32, i32)> = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for ent in dir.flatten() {
            let Some(p) = ent.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            if let Some(pp) = ppid(p) {
                parent_of.push((p, pp));
            }
        }
    }
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let cur = out[i];
        let mut kids: Vec<i32> = parent_of
            .iter()
            .filter(|(_, pp)| *pp == cur)
            .map(|(p, _)| *p)
            .filter(|p| !out.contains(p))
            .collect();
        kids.sort_unstable();
        out.extend(kids);
        i += 1;
    }
    out
}

fn ppid(pid: i32) -> Option<i32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: the fields follow the last `)`.
    let rest = s.rsplit_once(')')?.1;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// The names a `program` rule matches a process by, as the library computes them for
/// itself: the basename of argv[0] and of the executable.
pub fn program_names(pid: i32) -> Vec<String> {
    let mut names = Vec::new();
    if let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) {
        if let Some(argv0) = cmd.split(|&b| b == 0).next().filter(|a| !a.is_empty()) {
            let b = argv0.rsplit(|&c| c == b'/').next().unwrap_or(argv0);
            names.push(String::from_utf8_lossy(b).into_owned());
        }
    }
    if let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe")) {
        if let Some(b) = exe.file_name() {
            let b = b.to_string_lossy().into_owned();
            if !names.contains(&b) {
                names.push(b);
            }
        }
    }
    names
}

/// The network namespace of `pid` (`/proc/PID/ns/net`), to read each namespace's tables once.
pub fn netns(pid: i32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/ns/net"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0
   1: 0100007F:A4F2 0100007F:1F90 01 00000000:00000000 02:000A7F7B 00000000  1000        0 4243 2 0000000000000000 20 4 30 10 -1
   2: 0100007F:A4F3 0100007F:1F90 06 00000000:00000000 03:00001770 00000000     0        0 0 3 0000000000000000
";

    #[test]
    fn ipv4_table() {
        let t = parse_table(TCP, Transport::Tcp, false);
        assert_eq!(t.len(), 2, "the TIME-WAIT entry has no inode");
        assert_eq!(t[0].0, 4242);
        assert_eq!(t[0].1.local, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(t[0].1.remote, None);
        assert_eq!(t[0].1.state_name(), "LISTEN");
        assert_eq!(t[1].1.remote, Some("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(t[1].1.local.port(), 0xA4F2);
        assert_eq!(t[1].1.state_name(), "ESTAB");
    }

    #[test]
    fn ipv6_table() {
        let text = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 77 1 0000000000000000 100 0 0 10 0
   1: 0000000000000000FFFF00000100007F:0016 0000000000000000FFFF00000100007F:D431 01 00000000:00000000 02:000A7F7B 00000000     0        0 78 1 0000000000000000 100 0 0 10 0
";
        let t = parse_table(text, Transport::Tcp, true);
        assert_eq!(t[0].1.local, "[::1]:22".parse().unwrap());
        assert_eq!(t[1].1.local, "[::ffff:127.0.0.1]:22".parse().unwrap());
        let mut tables = Tables::default();
        tables.listeners.insert((t[0].1.local.ip(), 22));
        tables
            .listeners
            .insert((IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8080));
        assert!(tables.is_accepted("[::1]:22".parse().unwrap()));
        assert!(!tables.is_accepted("[::2]:22".parse().unwrap()));
        assert!(tables.is_accepted("[::ffff:10.0.0.1]:8080".parse().unwrap()));
        assert!(!tables.is_accepted("127.0.0.1:8081".parse().unwrap()));
    }

    #[test]
    fn udp_states() {
        assert_eq!(state_name(Transport::Udp, 7), "UNCONN");
        assert_eq!(state_name(Transport::Udp, 1), "ESTAB");
        assert_eq!(state_name(Transport::Tcp, 8), "CLOSE-WAIT");
    }
}
