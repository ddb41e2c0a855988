//! `sockwrap trace --kernel`: the programs of `src/bpf/trace.bpf.c` attached to the
//! command's cgroup, and their ring buffer read back as the trace's JSON lines
//! (docs/trace-schema.md, lines with `"src":"kernel"`).
//!
//! Called by the CLI (`crates/cli/src/cmd/trace.rs`) after the policy's programs are
//! attached, so the setsockopt hook here runs after the locks' and sees what they did.
//! A separate object: `run --kernel` without tracing loads none of it.
//!
//! Where the kernel knows less than the library, a field is left out, never guessed: no
//! descriptor (`fd`; the socket's cookie, `sock`, names it instead), no return value of a
//! call the programs see before it runs (`ret`, `errno`), no host name.

pub use crate::abi::trace::Event;
use crate::abi::trace::*;
use crate::programs::{self, Failed, LoadFailure};
use crate::Error;
use aya::maps::{Array, MapData, RingBuf};
use aya::programs::{CgroupAttachMode, Program};
use aya::{Ebpf, EbpfLoader};
use std::fmt::Write as _;
use std::os::fd::AsRawFd;

/// The object clang built from `src/bpf/trace.bpf.c` (see build.rs).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/trace.bpf.o"));

/// The tracing programs, in the order they are attached.
pub const PROGRAMS: [&str; 5] = [
    "st_sock_create",
    "st_connect4",
    "st_connect6",
    "st_sockops",
    "st_setsockopt",
];

/// The policy program each tracing program uses the same hook and helpers as: the probes
/// of [`crate::probe`] name what this kernel lacks for it.
pub fn like(program: &str) -> &'static str {
    match program {
        "st_sock_create" => "sw_sock_create",
        "st_connect4" => "sw_connect4",
        "st_connect6" => "sw_connect6",
        "st_sockops" => "sw_sockops",
        _ => "sw_setsockopt",
    }
}

/// The ring buffer's default size: 256 KiB holds about 1400 events.
pub const DEFAULT_RING_BYTES: u32 = 256 * 1024;

impl Event {
    /// The event in a ring buffer record, if it is one.
    pub fn from_bytes(b: &[u8]) -> Option<Event> {
        crate::abi::from_bytes(b)
    }

    /// Whether this event ends a TCP connection.
    pub fn is_close(&self) -> bool {
        self.kind == EV_CLOSE || self.kind == EV_CONNECT_FAILED
    }

    /// Whether this event begins a TCP connection that will end with [`Event::is_close`].
    pub fn is_open(&self) -> bool {
        self.kind == EV_CONNECTED || self.kind == EV_ACCEPT
    }

    fn ip(&self, a: &[u32; 4]) -> std::net::IpAddr {
        let mut b = [0u8; 16];
        for (i, w) in a.iter().enumerate() {
            b[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes()); // network order already
        }
        if self.family == libc::AF_INET as u8 {
            std::net::IpAddr::from([b[0], b[1], b[2], b[3]])
        } else {
            std::net::IpAddr::from(b)
        }
    }

    fn addr(&self, a: &[u32; 4], port: u16) -> String {
        std::net::SocketAddr::new(self.ip(a), port).to_string()
    }

    /// The event as one JSON line of the trace schema (no newline). `wall_offset_ns`:
    /// CLOCK_REALTIME less CLOCK_MONOTONIC, for `t_wall_ns`.
    pub fn json_line(&self, wall_offset_ns: i64) -> String {
        let mut s = String::with_capacity(256);
        let t = self.t_ns as i64;
        let _ = write!(
            s,
            "{{\"v\":1,\"t_mono_ns\":{t},\"t_wall_ns\":{}",
            t.saturating_add(wall_offset_ns)
        );
        if self.flags & EVF_OWNER != 0 {
            let _ = write!(s, ",\"pid\":{},\"tid\":{},\"prog\":", self.pid, self.tid);
            let end = self.comm.iter().position(|&c| c == 0).unwrap_or(16);
            quote(&mut s, &self.comm[..end]);
        }
        let (ev, call) = match self.kind {
            EV_SOCKET => ("call", "socket"),
            EV_CONNECT => ("call", "connect"),
            EV_CONNECTED | EV_CONNECT_FAILED => ("connected", "connect"),
            EV_ACCEPT => ("call", "accept"),
            EV_SETSOCKOPT => ("call", "setsockopt"),
            EV_OVERRIDE => ("override", "setsockopt"),
            EV_CLOSE => ("closed", "tcp_close"),
            EV_LISTEN => ("call", "listen"),
            _ => ("unknown", "unknown"),
        };
        let _ = write!(
            s,
            ",\"ev\":\"{ev}\",\"call\":\"{call}\",\"src\":\"kernel\",\"sock\":{}",
            self.cookie
        );
        let transport = match (self.ty, self.protocol) {
            (1, 262) => "mptcp",
            (1, _) => "tcp",
            (2, _) => "udp",
            _ => "other",
        };
        let tail = |s: &mut String| {
            let _ = write!(
                s,
                ",\"transport\":\"{transport}\",\"mptcp\":{}",
                self.protocol == 262
            );
        };
        match self.kind {
            EV_SOCKET => {
                let family = if self.family == libc::AF_INET as u8 {
                    "AF_INET"
                } else {
                    "AF_INET6"
                };
                let ty = if self.ty == 1 {
                    "SOCK_STREAM"
                } else {
                    "SOCK_DGRAM"
                };
                let proto = match self.protocol {
                    6 => "IPPROTO_TCP",
                    17 => "IPPROTO_UDP",
                    262 => "IPPROTO_MPTCP",
                    _ => "0",
                };
                let _ = write!(
                    s,
                    ",\"args\":{{\"family\":\"{family}\",\"type\":\"{ty}\",\"protocol\":\"{proto}\"}}"
                );
                tail(&mut s);
            }
            EV_CONNECT => {
                let _ = write!(
                    s,
                    ",\"args\":{{\"addr\":\"{}\"}}",
                    self.addr(&self.raddr, self.rport)
                );
                tail(&mut s);
            }
            EV_CONNECTED | EV_CONNECT_FAILED | EV_ACCEPT => {
                if self.kind == EV_CONNECTED {
                    s.push_str(",\"result\":\"ok\"");
                } else if self.kind == EV_CONNECT_FAILED {
                    s.push_str(",\"result\":\"failed\"");
                }
                tail(&mut s);
                if self.lport != 0 {
                    let _ = write!(s, ",\"local\":\"{}\"", self.addr(&self.laddr, self.lport));
                }
                let _ = write!(s, ",\"peer\":\"{}\"", self.addr(&self.raddr, self.rport));
            }
            EV_LISTEN => {
                tail(&mut s);
                let _ = write!(s, ",\"local\":\"{}\"", self.addr(&self.laddr, self.lport));
            }
            EV_SETSOCKOPT => {
                s.push_str(",\"args\":{");
                self.opt_args(&mut s);
                s.push('}');
            }
            EV_OVERRIDE => {
                s.push_str(",\"kernel\":");
                match opt_name(self.level, self.optname) {
                    Some(n) => quote(&mut s, n.as_bytes()),
                    None => {
                        let _ = write!(s, "{}", self.optname);
                    }
                }
                s.push_str(",\"program\":{");
                self.opt_args(&mut s);
                s.push_str("},\"result\":\"kept sockwrap's value (locked)\"");
            }
            EV_CLOSE => {
                tail(&mut s);
                let _ = write!(
                    s,
                    ",\"local\":\"{}\",\"peer\":\"{}\"",
                    self.addr(&self.laddr, self.lport),
                    self.addr(&self.raddr, self.rport)
                );
                let _ = write!(
                    s,
                    ",\"stats\":{{\"state\":\"CLOSE\",\"prev_state\":\"{}\"",
                    state_name(self.state)
                );
                if self.duration_ns != 0 {
                    let _ = write!(s, ",\"duration_ns\":{}", self.duration_ns);
                }
                let _ = write!(
                    s,
                    ",\"bytes_acked\":{},\"bytes_received\":{},\"segs_out\":{},\"segs_in\":{},\"total_retrans\":{},\"srtt_us\":{},\"min_rtt_us\":{},\"cwnd\":{}",
                    self.bytes_acked,
                    self.bytes_received,
                    self.segs_out,
                    self.segs_in,
                    self.total_retrans,
                    self.srtt_us,
                    self.min_rtt_us,
                    self.cwnd
                );
                // As tcp_compute_delivery_rate: segments delivered over the interval.
                if self.rate_interval_us != 0 {
                    let bytes_per_s = self.rate_delivered as u64 * self.mss as u64 * 1_000_000
                        / self.rate_interval_us as u64;
                    let _ = write!(s, ",\"delivery_rate_bps\":{}", bytes_per_s * 8);
                }
                s.push('}');
            }
            _ => {}
        }
        s.push('}');
        s
    }

    /// `"level":..,"name":..,"value":..`: the value as the library decodes it, from the
    /// first 16 bytes the programs copied (`"<N bytes>"` beyond what they tell).
    fn opt_args(&self, s: &mut String) {
        s.push_str("\"level\":");
        match level_name(self.level) {
            Some(n) => quote(s, n.as_bytes()),
            None => {
                let _ = write!(s, "{}", self.level);
            }
        }
        s.push_str(",\"name\":");
        match opt_name(self.level, self.optname) {
            Some(n) => quote(s, n.as_bytes()),
            None => {
                let _ = write!(s, "{}", self.optname);
            }
        }
        s.push_str(",\"value\":");
        let b = &self.val;
        let int = i32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as i64;
        // An override's length is the lock's -1: the program's value is still in its buffer.
        let len = if self.optlen < 0 { 4 } else { self.optlen };
        let tos = (self.level == libc::IPPROTO_IP && self.optname == libc::IP_TOS)
            || (self.level == libc::IPPROTO_IPV6 && self.optname == libc::IPV6_TCLASS);
        let text = (self.level == libc::IPPROTO_TCP
            && (self.optname == libc::TCP_CONGESTION || self.optname == 31))
            || (self.level == libc::SOL_SOCKET && self.optname == libc::SO_BINDTODEVICE);
        if text {
            let n = (len.max(0) as usize).min(16);
            let end = b[..n].iter().position(|&c| c == 0).unwrap_or(n);
            quote(s, &b[..end]);
        } else if len == 4 && tos && int >= 0 {
            let dscp = ((int >> 2) & 0x3f) as u8;
            let name = sockwrap_policy::catalog::dscp_name(dscp)
                .map(str::to_string)
                .unwrap_or_else(|| dscp.to_string());
            let _ = write!(s, "\"0x{int:02x} (DSCP {name})\"");
        } else if len == 4 {
            let _ = write!(s, "{int}");
        } else if len == 1 {
            let _ = write!(s, "{}", b[0]);
        } else {
            let _ = write!(s, "\"<{len} bytes>\"");
        }
    }
}

use sockwrap_policy::names::{level_name, option_name as opt_name, tcp_state_name as state_name};

/// A JSON string of `b`: bytes outside printable ASCII as `\u00XX`, as the library writes.
fn quote(s: &mut String, b: &[u8]) {
    s.push('"');
    for &c in b {
        match c {
            b'"' => s.push_str("\\\""),
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(c as char),
            _ => {
                let _ = write!(s, "\\u{c:04x}");
            }
        }
    }
    s.push('"');
}

/// The tracing programs attached to one cgroup, and their ring buffer. Dropping it
/// detaches them (BPF links).
pub struct Tracer {
    ebpf: Ebpf,
    ring: RingBuf<MapData>,
}

impl Tracer {
    /// Loads the programs with a ring buffer of `ring_bytes` (a power of two, at least a
    /// page) and attaches them to the cgroup directory `cgroup`, after whatever is already
    /// attached there.
    pub fn attach(cgroup: &std::fs::File, ring_bytes: u32) -> Result<Tracer, Failed> {
        let mut ebpf = EbpfLoader::new()
            .map_max_entries("events", ring_bytes)
            .load(OBJECT)
            .map_err(|e| Error(format!("loading the tracing programs: {e}")))?;
        for name in PROGRAMS {
            let prog = ebpf
                .program_mut(name)
                .ok_or_else(|| Error(format!("the BPF object has no program `{name}`")))?;
            let mode = CgroupAttachMode::Single; // through a BPF link: always "multi"
            let fail = |e: &aya::programs::ProgramError| {
                let errno = match e {
                    aya::programs::ProgramError::LoadError { io_error, .. } => {
                        io_error.raw_os_error()
                    }
                    _ => None,
                };
                Failed::Load(LoadFailure {
                    program: name,
                    errno,
                    log: programs::error_text(e),
                })
            };
            let attach = |e: aya::programs::ProgramError| {
                Failed::Other(Error(format!(
                    "program {name}: attach: {}",
                    programs::with_sources(&e)
                )))
            };
            match prog {
                Program::CgroupSock(p) => {
                    p.load().map_err(|e| fail(&e))?;
                    p.attach(cgroup, mode).map_err(attach)?;
                }
                Program::CgroupSockAddr(p) => {
                    p.load().map_err(|e| fail(&e))?;
                    p.attach(cgroup, mode).map_err(attach)?;
                }
                Program::CgroupSockopt(p) => {
                    p.load().map_err(|e| fail(&e))?;
                    p.attach(cgroup, mode).map_err(attach)?;
                }
                Program::SockOps(p) => {
                    p.load().map_err(|e| fail(&e))?;
                    p.attach(cgroup, mode).map_err(attach)?;
                }
                _ => return Err(Error(format!("program {name}: unexpected type")).into()),
            }
        }
        let map = ebpf
            .take_map("events")
            .ok_or_else(|| Error("the BPF object has no map `events`".into()))?;
        let ring = RingBuf::try_from(map).map_err(|e| Error(format!("map events: {e}")))?;
        Ok(Tracer { ebpf, ring })
    }

    /// Every event waiting in the ring buffer, in order, to `f`.
    pub fn drain(&mut self, f: &mut dyn FnMut(&Event)) {
        while let Some(item) = self.ring.next() {
            if let Some(e) = Event::from_bytes(&item) {
                f(&e);
            }
        }
    }

    /// Waits until the ring buffer has an event, at most `ms` milliseconds (a signal ends
    /// the wait early).
    pub fn wait(&self, ms: i32) {
        crate::sys::wait_readable(self.ring.as_raw_fd(), ms);
    }

    /// Events the programs could not put in the ring buffer (it was full).
    pub fn lost(&self) -> u64 {
        let Some(m) = self.ebpf.map("lost") else {
            return 0;
        };
        let Ok(a) = Array::<_, u64>::try_from(m) else {
            return 0;
        };
        a.get(&0, 0).unwrap_or(0)
    }
}

/// What this kernel lacks that the tracing programs need before any of them loads, as
/// words for a refusal (`None`: nothing found missing; a program the verifier refuses is
/// probed by [`crate::probe::refusal`] on the policy program [`like`] it).
pub fn missing() -> Option<&'static str> {
    use aya::maps::MapType;
    if !aya::sys::is_map_supported(MapType::RingBuf).unwrap_or(true) {
        return Some("the BPF ring buffer (Linux 5.8+)");
    }
    if !aya::sys::is_map_supported(MapType::SkStorage).unwrap_or(true) {
        return Some("BPF socket storage (Linux 5.2+)");
    }
    None
}

/// The ring buffer size for `kib` KiB, as the kernel takes it: a power of two of at least
/// one page.
pub fn ring_bytes(kib: u32) -> u32 {
    let page = crate::sys::page_size().max(4096) as u32;
    kib.saturating_mul(1024).max(page).next_power_of_two()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: u8) -> Event {
        Event {
            kind,
            t_ns: 1000,
            cookie: 77,
            family: libc::AF_INET as u8,
            ty: 1,
            protocol: 6,
            ..Event::default()
        }
    }

    #[test]
    fn lines_leave_out_what_the_kernel_does_not_know() {
        let mut e = event(EV_CONNECT);
        e.raddr[0] = u32::from_ne_bytes([127, 0, 0, 1]);
        e.rport = 8080;
        let l = e.json_line(5);
        assert_eq!(
            l,
            r#"{"v":1,"t_mono_ns":1000,"t_wall_ns":1005,"ev":"call","call":"connect","src":"kernel","sock":77,"args":{"addr":"127.0.0.1:8080"},"transport":"tcp","mptcp":false}"#
        );
        e.flags = EVF_OWNER;
        e.pid = 9;
        e.tid = 10;
        e.comm[..4].copy_from_slice(b"cu\"l");
        assert!(e
            .json_line(0)
            .contains(r#""pid":9,"tid":10,"prog":"cu\"l","ev""#));
        let mut o = event(EV_SETSOCKOPT);
        o.level = libc::IPPROTO_IP;
        o.optname = libc::IP_TOS;
        o.optlen = 4;
        o.val[0] = 0xb8;
        assert!(
            o.json_line(0).contains(
                r#""args":{"level":"IPPROTO_IP","name":"IP_TOS","value":"0xb8 (DSCP EF)"}"#
            ),
            "{}",
            o.json_line(0)
        );
        let mut c = event(EV_CLOSE);
        c.state = 5;
        c.bytes_acked = 10;
        c.rate_delivered = 2;
        c.mss = 1000;
        c.rate_interval_us = 1000;
        let l = c.json_line(0);
        assert!(
            l.contains(r#""prev_state":"FIN-WAIT-2","bytes_acked":10"#),
            "{l}"
        );
        assert!(l.contains(r#""delivery_rate_bps":16000000"#), "{l}");
        assert!(!l.contains("duration_ns") && !l.contains("\"fd\""), "{l}");
    }

    #[test]
    fn ring_sizes_are_powers_of_two() {
        assert_eq!(ring_bytes(0), 4096);
        assert_eq!(ring_bytes(256), 256 * 1024);
        assert_eq!(ring_bytes(5), 8192);
    }
}
