// SPDX-License-Identifier: MIT OR GPL-2.0
//
// `sockwrap trace --kernel`: every TCP and UDP socket of the cgroup, whatever made it,
// reported into a BPF ring buffer (one `struct event`, trace.h) that the loader
// (crates/kernel/src/trace.rs) writes as the trace's JSON lines. A separate object from
// sockwrap.bpf.c: `run --kernel` without tracing loads none of it. Attached after the
// policy's programs on the same cgroup (BPF links: multi), so the setsockopt hook sees
// what a lock did.
//
//   cgroup/sock_create   a socket was made: its owner (pid, tid, comm) and cookie go in
//                        its storage, because the close runs in softirq or another task
//   cgroup/connect4, 6   connect(): the address; the owner taken again (the connecting task)
//   sockops              TCP: listen(), the connect's result (ACTIVE_ESTABLISHED, or SYN_SENT ->
//                        CLOSE), accepted connections (PASSIVE_ESTABLISHED), and each
//                        connection's end (STATE_CB to CLOSE) with its counters
//   cgroup/setsockopt    the program's setsockopt: level, name, value; skipped by a lock
//
// An event the ring buffer has no room for is counted in `lost`, never dropped silently.

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "trace.h"

#define AF_INET 2
#define AF_INET6 10
#define SOCK_STREAM_ 1
#define SOCK_DGRAM_ 2
#define IPPROTO_MPTCP_ 262

// tstate.flags
#define TS_FIN_OUT 1  // our FIN went out (FIN_WAIT1 or LAST_ACK)
#define TS_PEER_FIN 2 // the peer's FIN came (CLOSE_WAIT or CLOSING)
#define TS_FW2 4      // FIN_WAIT2 reached: rcv_fw2 holds bytes_received then
#define TS_CLIENT 8   // this side connected: its SYN is in bytes_acked

// What a socket carries for the trace. Accepted sockets get their listener's (BPF_F_CLONE):
// the owner of the listening socket.
struct tstate {
	__u64 cookie;
	__u64 start_ns; // the first connect, or the accept
	__u64 rcv_fw2;
	__u32 pid, tid;
	char comm[16];
	__u32 flags;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024); // the loader may set another size
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC | BPF_F_CLONE);
	__type(key, int);
	__type(value, struct tstate);
} traced SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} lost SEC(".maps");

static __always_inline struct event *reserve(__u8 kind)
{
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(struct event), 0);

	if (!e) {
		__u32 zero = 0;
		__u64 *n = bpf_map_lookup_elem(&lost, &zero);

		if (n)
			__sync_fetch_and_add(n, 1);
		return 0;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->kind = kind;
	e->t_ns = bpf_ktime_get_ns();
	return e;
}

// The reader is woken only once the ring buffer is a quarter full; otherwise it reads on
// its own timer (every 100 ms, crates/cli/src/cmd/trace.rs). A wake-up per event cost the
// traced program more than the events themselves (a context switch for each).
static __always_inline void submit(struct event *e)
{
	__u64 avail = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);
	__u64 size = bpf_ringbuf_query(&events, BPF_RB_RING_SIZE);

	bpf_ringbuf_submit(e, avail >= size / 4 ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP);
}

static __always_inline void owner_to(struct event *e, struct tstate *st)
{
	if (!st)
		return;
	e->flags |= EVF_OWNER;
	e->pid = st->pid;
	e->tid = st->tid;
	__builtin_memcpy(e->comm, st->comm, sizeof(e->comm));
}

static __always_inline void take_owner(struct tstate *st)
{
	__u64 id = bpf_get_current_pid_tgid();

	st->pid = id >> 32;
	st->tid = (__u32)id;
	bpf_get_current_comm(st->comm, sizeof(st->comm));
}

static __always_inline int traced_kind(__u32 family, __u32 type, __u32 protocol)
{
	if (family != AF_INET && family != AF_INET6)
		return 0;
	if (type == SOCK_STREAM_ && (protocol == IPPROTO_TCP || protocol == IPPROTO_MPTCP_))
		return 1;
	return type == SOCK_DGRAM_ && protocol == IPPROTO_UDP;
}

SEC("cgroup/sock_create")
int st_sock_create(struct bpf_sock *sk)
{
	__u32 family = sk->family, type = sk->type, protocol = sk->protocol;
	struct tstate *st;
	struct event *e;

	if (!traced_kind(family, type, protocol))
		return 1;
	st = bpf_sk_storage_get(&traced, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!st)
		return 1;
	st->cookie = bpf_get_socket_cookie(sk);
	take_owner(st);
	e = reserve(EV_SOCKET);
	if (!e)
		return 1;
	e->cookie = st->cookie;
	owner_to(e, st);
	e->family = family;
	e->type = type;
	e->protocol = protocol;
	submit(e);
	return 1;
}

static __always_inline void on_connect(struct bpf_sock_addr *ctx, int v6)
{
	// Every field read straight from the context (6.1's verifier refuses a load through
	// a pointer the compiler computed from it).
	__u32 family = ctx->family, type = ctx->type, protocol = ctx->protocol;
	__u32 port = ctx->user_port;
	__u32 a0 = 0, a1 = 0, a2 = 0, a3 = 0;
	struct tstate *st;
	struct event *e;

	if (v6) {
		a0 = ctx->user_ip6[0];
		a1 = ctx->user_ip6[1];
		a2 = ctx->user_ip6[2];
		a3 = ctx->user_ip6[3];
	} else {
		a0 = ctx->user_ip4;
	}
	if (!traced_kind(family, type, protocol))
		return;
	st = bpf_sk_storage_get(&traced, ctx->sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!st)
		return;
	if (!st->cookie)
		st->cookie = bpf_get_socket_cookie(ctx);
	take_owner(st);
	if (!st->start_ns)
		st->start_ns = bpf_ktime_get_ns();
	if (type == SOCK_STREAM_)
		st->flags |= TS_CLIENT;
	e = reserve(EV_CONNECT);
	if (!e)
		return;
	e->cookie = st->cookie;
	owner_to(e, st);
	e->family = family;
	e->type = type;
	e->protocol = protocol;
	e->rport = bpf_ntohs(port);
	e->raddr[0] = a0;
	e->raddr[1] = a1;
	e->raddr[2] = a2;
	e->raddr[3] = a3;
	submit(e);
}

SEC("cgroup/connect4")
int st_connect4(struct bpf_sock_addr *ctx)
{
	on_connect(ctx, 0);
	return 1;
}

SEC("cgroup/connect6")
int st_connect6(struct bpf_sock_addr *ctx)
{
	on_connect(ctx, 1);
	return 1;
}

// The connection's addresses and owner, from the sock_ops context.
static __always_inline void addresses(struct event *e, struct bpf_sock_ops *skops)
{
	__u32 family = skops->family;
	__u32 lport = skops->local_port, rport = skops->remote_port;

	e->family = family;
	e->type = SOCK_STREAM_;
	e->protocol = IPPROTO_TCP;
	e->lport = lport;
	e->rport = bpf_ntohl(rport);
	if (family == AF_INET) {
		e->laddr[0] = skops->local_ip4;
		e->raddr[0] = skops->remote_ip4;
	} else {
		e->laddr[0] = skops->local_ip6[0];
		e->laddr[1] = skops->local_ip6[1];
		e->laddr[2] = skops->local_ip6[2];
		e->laddr[3] = skops->local_ip6[3];
		e->raddr[0] = skops->remote_ip6[0];
		e->raddr[1] = skops->remote_ip6[1];
		e->raddr[2] = skops->remote_ip6[2];
		e->raddr[3] = skops->remote_ip6[3];
	}
}

// An event about the connection in front of sock_ops: its cookie (the storage's, else the
// kernel's), the owner `owner` names if any, and its addresses.
static __always_inline void conn_event(struct bpf_sock_ops *skops, struct tstate *st,
				       struct tstate *owner, __u8 kind)
{
	struct event *e = reserve(kind);

	if (!e)
		return;
	e->cookie = st ? st->cookie : bpf_get_socket_cookie(skops);
	owner_to(e, owner);
	addresses(e, skops);
	submit(e);
}

static __always_inline void watch_states(struct bpf_sock_ops *skops)
{
	__u32 have = skops->bpf_sock_ops_cb_flags;

	bpf_sock_ops_cb_flags_set(skops, have | BPF_SOCK_OPS_STATE_CB_FLAG);
}

// The connection ended: its counters, less what are not data bytes. The client's SYN is one
// byte of bytes_acked, our FIN one once acknowledged (sent and nothing left unacknowledged),
// the peer's FIN one of bytes_received once it came: in CLOSE_WAIT or CLOSING, or in
// FIN_WAIT2 when bytes_received grew after we got there (an orphaned socket accepts no
// data then; a half-closed one that received data and then closed before the peer's FIN
// counts one byte too many).
static __always_inline void on_close(struct bpf_sock_ops *skops, struct tstate *st, __u32 old)
{
	__u64 acked = skops->bytes_acked, received = skops->bytes_received;
	__u32 snd_una = skops->snd_una, snd_nxt = skops->snd_nxt;
	__u32 flags = st ? st->flags : 0;
	struct event *e;

	if (flags & TS_CLIENT && acked > 0)
		acked--;
	if (flags & TS_FIN_OUT && snd_una == snd_nxt && acked > 0)
		acked--;
	if ((flags & TS_PEER_FIN ||
	     (old == BPF_TCP_FIN_WAIT2 && flags & TS_FW2 && st && received > st->rcv_fw2)) &&
	    received > 0)
		received--;
	e = reserve(EV_CLOSE);
	if (!e)
		return;
	e->cookie = st ? st->cookie : bpf_get_socket_cookie(skops);
	owner_to(e, st);
	addresses(e, skops);
	e->state = old;
	if (st && st->start_ns)
		e->duration_ns = e->t_ns - st->start_ns;
	e->bytes_acked = acked;
	e->bytes_received = received;
	e->segs_in = skops->segs_in;
	e->segs_out = skops->segs_out;
	e->total_retrans = skops->total_retrans;
	e->srtt_us = skops->srtt_us >> 3; // the kernel keeps it << 3
	e->min_rtt_us = skops->rtt_min;
	e->cwnd = skops->snd_cwnd;
	e->rate_delivered = skops->rate_delivered;
	e->rate_interval_us = skops->rate_interval_us;
	e->mss = skops->mss_cache;
	submit(e);
}

SEC("sockops")
int st_sockops(struct bpf_sock_ops *skops)
{
	__u32 op = skops->op, family = skops->family;
	struct bpf_sock *sk;
	struct tstate *st;

	if (family != AF_INET && family != AF_INET6)
		return 1;
	sk = skops->sk;
	if (!sk)
		return 1;
	switch (op) {
	case BPF_SOCK_OPS_TCP_CONNECT_CB:
		// Before the SYN: from here on the state changes come, failure included.
		watch_states(skops);
		return 1;
	case BPF_SOCK_OPS_TCP_LISTEN_CB:
		st = bpf_sk_storage_get(&traced, sk, 0, 0);
		conn_event(skops, st, st, EV_LISTEN);
		return 1;
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
		watch_states(skops);
		st = bpf_sk_storage_get(&traced, sk, 0, 0);
		conn_event(skops, st, st, EV_CONNECTED);
		return 1;
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		watch_states(skops);
		// The listener's storage, cloned (or none, if the listener was made elsewhere).
		st = bpf_sk_storage_get(&traced, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
		if (st) {
			st->cookie = bpf_get_socket_cookie(skops);
			st->start_ns = bpf_ktime_get_ns();
			st->flags = 0;
		}
		conn_event(skops, st, st && st->pid ? st : 0, EV_ACCEPT);
		return 1;
	case BPF_SOCK_OPS_STATE_CB: {
		__u32 old = skops->args[0], new = skops->args[1];

		st = bpf_sk_storage_get(&traced, sk, 0, 0);
		if (new == BPF_TCP_CLOSE) {
			if (old == BPF_TCP_SYN_SENT) {
				conn_event(skops, st, st, EV_CONNECT_FAILED);
				return 1;
			}
			on_close(skops, st, old);
			return 1;
		}
		if (!st)
			return 1;
		if (new == BPF_TCP_FIN_WAIT1 || new == BPF_TCP_LAST_ACK)
			st->flags |= TS_FIN_OUT;
		if (new == BPF_TCP_CLOSE_WAIT || new == BPF_TCP_CLOSING)
			st->flags |= TS_PEER_FIN;
		if (new == BPF_TCP_FIN_WAIT2) {
			st->flags |= TS_FW2;
			st->rcv_fw2 = skops->bytes_received;
		}
		return 1;
	}
	}
	return 1;
}

SEC("cgroup/setsockopt")
int st_setsockopt(struct bpf_sockopt *ctx)
{
	struct bpf_sock *sk = ctx->sk;
	__s32 optlen = ctx->optlen, level = ctx->level, optname = ctx->optname;
	__u8 *p = ctx->optval, *end = ctx->optval_end;
	struct tstate *st;
	struct event *e;

	if (!sk)
		goto out;
	// Only sockets the trace knows (made in the cgroup while it traced).
	st = bpf_sk_storage_get(&traced, sk, 0, 0);
	if (!st)
		goto out;
	e = reserve(optlen == -1 ? EV_OVERRIDE : EV_SETSOCKOPT);
	if (!e)
		goto out;
	e->cookie = st->cookie;
	owner_to(e, st);
	e->level = level;
	e->optname = optname;
	e->optlen = optlen;
	for (int i = 0; i < EVENT_VAL_LEN; i++) {
		if (p + i + 1 > end)
			break;
		e->val[i] = p[i];
	}
	submit(e);
out:
	// An option with a value larger than a page that no program handled: the kernel must
	// use the caller's buffer as it is (else the caller gets EFAULT). A lock's -1 stays.
	if (ctx->optlen > 4096)
		ctx->optlen = 0;
	return 1;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
