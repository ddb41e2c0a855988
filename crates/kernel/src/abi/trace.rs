//! `trace.h`'s mirror: the events `trace.bpf.c` writes into the ring buffer, read back by
//! [`crate::trace`]. A test reads the header and compares every constant and the struct's
//! layout with these.

// struct event's kinds (trace.h).
pub const EV_SOCKET: u8 = 1;
pub const EV_CONNECT: u8 = 2;
pub const EV_CONNECTED: u8 = 3;
pub const EV_CONNECT_FAILED: u8 = 4;
pub const EV_ACCEPT: u8 = 5;
pub const EV_SETSOCKOPT: u8 = 6;
pub const EV_OVERRIDE: u8 = 7;
pub const EV_CLOSE: u8 = 8;
pub const EV_LISTEN: u8 = 9;
pub const EVF_OWNER: u8 = 1;
/// The first bytes of an option's value an event carries.
pub const EVENT_VAL_LEN: usize = 16;

/// `struct event` of trace.h, field for field (a test checks the size and offsets).
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct Event {
    pub t_ns: u64,
    pub cookie: u64,
    pub pid: u32,
    pub tid: u32,
    pub comm: [u8; 16],
    pub kind: u8,
    pub flags: u8,
    pub family: u8,
    pub ty: u8,
    pub protocol: u16,
    pub state: u8,
    pub pad0: u8,
    pub lport: u16,
    pub rport: u16,
    pub pad1: u32,
    pub laddr: [u32; 4],
    pub raddr: [u32; 4],
    pub level: i32,
    pub optname: i32,
    pub optlen: i32,
    pub val: [u8; EVENT_VAL_LEN],
    pub duration_ns: u64,
    pub bytes_acked: u64,
    pub bytes_received: u64,
    pub segs_in: u32,
    pub segs_out: u32,
    pub total_retrans: u32,
    pub srtt_us: u32,
    pub min_rtt_us: u32,
    pub cwnd: u32,
    pub rate_delivered: u32,
    pub rate_interval_us: u32,
    pub mss: u32,
    pub pad2: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_matches_trace_h() {
        use crate::abi::header::{self, layout};
        let h = header::parse(include_str!("../bpf/trace.h")).expect("trace.h");
        let event = layout!(Event {
            t_ns,
            cookie,
            pid,
            tid,
            comm,
            kind,
            flags,
            family,
            ty = "type",
            protocol,
            state,
            pad0,
            lport,
            rport,
            pad1,
            laddr,
            raddr,
            level,
            optname,
            optlen,
            val,
            duration_ns,
            bytes_acked,
            bytes_received,
            segs_in,
            segs_out,
            total_retrans,
            srtt_us,
            min_rtt_us,
            cwnd,
            rate_delivered,
            rate_interval_us,
            mss,
            pad2,
        });
        let constants = [
            ("EV_SOCKET", EV_SOCKET),
            ("EV_CONNECT", EV_CONNECT),
            ("EV_CONNECTED", EV_CONNECTED),
            ("EV_CONNECT_FAILED", EV_CONNECT_FAILED),
            ("EV_ACCEPT", EV_ACCEPT),
            ("EV_SETSOCKOPT", EV_SETSOCKOPT),
            ("EV_OVERRIDE", EV_OVERRIDE),
            ("EV_CLOSE", EV_CLOSE),
            ("EV_LISTEN", EV_LISTEN),
            ("EVF_OWNER", EVF_OWNER),
            ("EVENT_VAL_LEN", EVENT_VAL_LEN as u8),
        ]
        .map(|(n, v)| (n, v as i128));
        assert!(
            h.defines.len() == constants.len() && h.structs.len() == 1,
            "{h:?}"
        );
        let diff = header::differences(&h, &constants, &[("event", event)]);
        assert!(
            diff.is_empty(),
            "trace.h and abi/trace.rs differ:\n  {}",
            diff.join("\n  ")
        );
        // What gcc computes for struct event (kept from before the reader, as its witness).
        assert_eq!(std::mem::size_of::<Event>(), 184);
        assert_eq!(std::mem::offset_of!(Event, mss), 176);
    }
}
