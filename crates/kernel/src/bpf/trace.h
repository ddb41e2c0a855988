// SPDX-License-Identifier: MIT OR GPL-2.0
//
// What crosses from trace.bpf.c to the loader (crates/kernel/src/trace.rs): one event per
// record of the BPF ring buffer. The Rust mirror, `Event`, is checked against this size
// and these offsets by a test there.

#ifndef SOCKWRAP_TRACE_H
#define SOCKWRAP_TRACE_H

// event.kind
#define EV_SOCKET 1         // cgroup/sock_create: a TCP or UDP socket was made
#define EV_CONNECT 2        // cgroup/connect4/6: connect() to raddr (before the call)
#define EV_CONNECTED 3      // sock_ops ACTIVE_ESTABLISHED: the TCP connect succeeded
#define EV_CONNECT_FAILED 4 // sock_ops STATE_CB SYN_SENT -> CLOSE: it did not
#define EV_ACCEPT 5         // sock_ops PASSIVE_ESTABLISHED: a connection was accepted
#define EV_SETSOCKOPT 6     // cgroup/setsockopt: the program's setsockopt (before the call)
#define EV_OVERRIDE 7       // cgroup/setsockopt: the same, skipped by a sockwrap lock
#define EV_CLOSE 8          // sock_ops STATE_CB -> CLOSE: the TCP connection ended
#define EV_LISTEN 9         // sock_ops TCP_LISTEN_CB: listen() on a TCP socket

// event.flags
#define EVF_OWNER 1 // pid, tid and comm are known (the socket's storage had them)

#define EVENT_VAL_LEN 16

struct event {
	__u64 t_ns; // bpf_ktime_get_ns (CLOCK_MONOTONIC)
	__u64 cookie; // the socket's cookie
	__u32 pid, tid; // taken at sock_create or connect (EVF_OWNER)
	char comm[16];
	__u8 kind;
	__u8 flags;
	__u8 family; // AF_INET, AF_INET6
	__u8 type; // SOCK_STREAM, SOCK_DGRAM
	__u16 protocol;
	__u8 state; // EV_CLOSE: the state the connection left for CLOSE
	__u8 pad0;
	__u16 lport, rport; // host order
	__u32 pad1;
	__u32 laddr[4], raddr[4]; // network order; IPv4 in [0]
	__s32 level, optname, optlen;
	__u8 val[EVENT_VAL_LEN]; // the first bytes of the option's value
	// EV_CLOSE: data bytes (the SYN and FINs taken out), and the counters then
	__u64 duration_ns;
	__u64 bytes_acked, bytes_received;
	__u32 segs_in, segs_out, total_retrans, srtt_us;
	__u32 min_rtt_us, cwnd, rate_delivered, rate_interval_us;
	__u32 mss;
	__u32 pad2;
};

#endif
