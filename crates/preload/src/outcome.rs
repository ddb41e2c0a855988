//! What became of a TCP connection: read with one `getsockopt(TCP_INFO)` when a traced
//! descriptor of it closes, and written by [`crate::trace`] as the close event's `stats`
//! (docs/trace-schema.md).
//!
//! The kernel's byte counters count sequence numbers, not data: on the side that
//! connected, `tcpi_bytes_acked` counts the SYN as one byte, and on either side a FIN
//! counts as one byte in `tcpi_bytes_acked` (ours, once acknowledged) and in
//! `tcpi_bytes_received` (the peer's). [`Outcome::from_info`] gives data bytes:
//! * acknowledged: never more than the data sent once (`tcpi_bytes_sent` less
//!   `tcpi_bytes_retrans`), which leaves out the SYN and our FIN whatever the state;
//! * received: less the peer's FIN where the state says it came (CLOSE_WAIT, LAST_ACK,
//!   CLOSING, TIME_WAIT, and CLOSE after our own FIN was acknowledged: the way through
//!   TIME_WAIT). A socket reset after the peer's FIN (CLOSE, our FIN never sent) keeps it:
//!   the one case where `bytes_received` can be one too many.
//!
//! Measured on 6.18 (tests/test_outcomes.py shows the peer's own counts agree).

use crate::sys;

/// A TCP connection's counters when its descriptor closed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// `tcpi_state`: 1 ESTABLISHED ... 11 CLOSING (`<netinet/tcp.h>`).
    pub state: u8,
    /// Data bytes the peer acknowledged.
    pub bytes_acked: u64,
    /// Data bytes received from the peer.
    pub bytes_received: u64,
    /// Data bytes written and not yet acknowledged (sent or not): what the kernel still
    /// has to deliver after the close. None on kernels before 4.19.
    pub bytes_unacked: Option<u64>,
    pub segs_out: u32,
    pub segs_in: u32,
    pub total_retrans: u32,
    /// Smoothed RTT, µs.
    pub srtt_us: u32,
    /// None on kernels before 4.9 (and the same for the delivery rate).
    pub min_rtt_us: Option<u32>,
    /// Congestion window, segments.
    pub cwnd: u32,
    /// Bytes per second, as the kernel estimated it last.
    pub delivery_rate: Option<u64>,
}

/// Whether the kernel filled `field` (it fills a prefix of `tcp_info` `len` bytes long).
macro_rules! has {
    ($len:expr, $field:ident) => {
        $len >= core::mem::offset_of!(libc::tcp_info, $field)
            + size_of_field(|i: &libc::tcp_info| &i.$field)
    };
}

/// The size of the field `f` picks.
const fn size_of_field<T>(_: fn(&libc::tcp_info) -> &T) -> usize {
    core::mem::size_of::<T>()
}

#[cfg(test)]
const ESTABLISHED: u8 = 1;
const TIME_WAIT: u8 = 6;
const CLOSE: u8 = 7;
const CLOSE_WAIT: u8 = 8;
const LAST_ACK: u8 = 9;
const LISTEN: u8 = 10;
const CLOSING: u8 = 11;

impl Outcome {
    /// The counters of the TCP (or MPTCP: its first subflow's) socket `fd`, if the kernel
    /// gives them. `client`: this side connected (its SYN is in `tcpi_bytes_acked`).
    pub fn of(fd: i32, client: bool) -> Option<Outcome> {
        let (info, len) = sys::tcp_info(fd).ok()?;
        Outcome::from_info(&info, len, client)
    }

    /// From the `len` bytes of `tcp_info` the kernel filled. None for a listener, or a
    /// kernel older than 4.2 (no byte or segment counters).
    pub fn from_info(i: &libc::tcp_info, len: usize, client: bool) -> Option<Outcome> {
        if !has!(len, tcpi_segs_in) || i.tcpi_state == LISTEN {
            return None;
        }
        let state = i.tcpi_state;
        let (acked, unacked, our_fin_acked) = if has!(len, tcpi_bytes_retrans) {
            let sent_once = i.tcpi_bytes_sent.saturating_sub(i.tcpi_bytes_retrans);
            // Without the SYN, what is acknowledged beyond the data is our FIN.
            let after_syn = i.tcpi_bytes_acked.saturating_sub(u64::from(client));
            let acked = after_syn.min(sent_once);
            let notsent = if has!(len, tcpi_notsent_bytes) {
                i.tcpi_notsent_bytes as u64
            } else {
                0
            };
            (acked, Some(sent_once - acked + notsent), after_syn > acked)
        } else {
            // Older kernels: the states alone say which control bytes were counted.
            let fin = matches!(state, 5 | TIME_WAIT);
            let less = u64::from(client) + u64::from(fin);
            (i.tcpi_bytes_acked.saturating_sub(less), None, fin)
        };
        let peer_fin = matches!(state, CLOSE_WAIT | LAST_ACK | CLOSING | TIME_WAIT)
            || (state == CLOSE && our_fin_acked);
        let received = i.tcpi_bytes_received - u64::from(peer_fin && i.tcpi_bytes_received > 0);
        Some(Outcome {
            state,
            bytes_acked: acked,
            bytes_received: received,
            bytes_unacked: unacked,
            segs_out: i.tcpi_segs_out,
            segs_in: i.tcpi_segs_in,
            total_retrans: i.tcpi_total_retrans,
            srtt_us: i.tcpi_rtt,
            min_rtt_us: has!(len, tcpi_min_rtt).then_some(i.tcpi_min_rtt),
            cwnd: i.tcpi_snd_cwnd,
            delivery_rate: has!(len, tcpi_delivery_rate).then_some(i.tcpi_delivery_rate),
        })
    }

    /// The state's name as `ss` prints it.
    pub fn state_name(&self) -> &'static str {
        sockwrap_policy::names::tcp_state_name(self.state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(state: u8, acked: u64, received: u64, sent: u64) -> libc::tcp_info {
        let mut i = crate::sys::zeroed_tcp_info();
        i.tcpi_state = state;
        i.tcpi_bytes_acked = acked;
        i.tcpi_bytes_received = received;
        i.tcpi_bytes_sent = sent;
        i
    }

    const FULL: usize = core::mem::size_of::<libc::tcp_info>();

    // The counters below are what 6.18 reported for a client that sent 1000 bytes and got
    // 300 (tests/test_outcomes.py checks the same against the peer).
    #[test]
    fn syn_and_fins_are_not_data() {
        let o = |st, a, r, s, client| {
            Outcome::from_info(&info(st, a, r, s), FULL, client)
                .map(|o| (o.bytes_acked, o.bytes_received, o.bytes_unacked))
        };
        // Established: the client's SYN is in bytes_acked.
        assert_eq!(
            o(ESTABLISHED, 1001, 300, 1000, true),
            Some((1000, 300, Some(0)))
        );
        assert_eq!(
            o(ESTABLISHED, 300, 1000, 300, false),
            Some((300, 1000, Some(0)))
        );
        // The peer closed first: its FIN is in bytes_received.
        assert_eq!(
            o(CLOSE_WAIT, 1001, 301, 1000, true),
            Some((1000, 300, Some(0)))
        );
        // Our FIN acknowledged (FIN-WAIT-2), then both (CLOSE after TIME-WAIT).
        assert_eq!(o(5, 301, 1000, 300, false), Some((300, 1000, Some(0))));
        assert_eq!(o(CLOSE, 1002, 301, 1000, true), Some((1000, 300, Some(0))));
        assert_eq!(o(CLOSE, 301, 1001, 300, false), Some((300, 1000, Some(0))));
        // Half acknowledged: the rest is unacked.
        assert_eq!(
            o(ESTABLISHED, 501, 0, 1000, true),
            Some((500, 0, Some(500)))
        );
        // A refused connect: nothing was acknowledged.
        assert_eq!(o(CLOSE, 0, 0, 0, true), Some((0, 0, Some(0))));
        assert_eq!(o(LISTEN, 0, 0, 0, false), None);
    }

    #[test]
    fn short_structs_leave_fields_out() {
        let i = info(ESTABLISHED, 1001, 300, 1000);
        let end = core::mem::offset_of!(libc::tcp_info, tcpi_notsent_bytes);
        let o = Outcome::from_info(&i, end, true).map(|o| (o.bytes_acked, o.bytes_unacked));
        assert_eq!(o, Some((1000, None)));
        assert_eq!(Outcome::from_info(&i, 100, true), None);
    }
}
