// SPDX-License-Identifier: MIT OR GPL-2.0
//
// sockwrap's kernel backend: cgroup BPF programs that carry out the Plans the policy
// computed, for every socket made in the cgroup they are attached to (static binaries, Go,
// io_uring, and the sockets libc opens inside itself included).
//
// Nothing is decided here. The loader (crates/kernel/src/tables) enumerates every
// decision the policy can take, as classes of (program name, transport, stage, remote
// network, remote port, local port, IP variant), and fills the maps below; a program turns
// the socket in front of it into that key, looks up the Plan and applies its entries.
//
// Programs and the socket calls they stand in for:
//   cgroup/sock_create        socket(): UDP mark, priority, bound device (no setsockopt helper
//                             here: the three fields are written directly); records the
//                             program class for later hooks that run outside the process
//   cgroup/connect4, connect6 connect(): `deny` (the connect fails with the rule's errno,
//                             bpf_set_retval), every option before the SYN (bpf_setsockopt),
//                             the source address (bpf_bind), `redirect` (the address rewritten)
//   cgroup/bind4, bind6       bind(): the bind-time options (reuseaddr...), UDP servers
//   sockops                   listen() (TCP_LISTEN_CB) and accepted sockets
//                             (PASSIVE_ESTABLISHED_CB)
//   cgroup/sendmsg4, sendmsg6 sendto() on an unconnected UDP socket: `deny` and `redirect`
//                             per destination, and what sock_create could not set (see
//                             on_sendmsg for why options are not per destination)
//   cgroup/getpeername4, 6    getpeername() of a redirected socket: the address the program
//   cgroup/recvmsg4, 6        connected or sent to, not the target (attached only when some
//                             rule redirects); recvmsg: the source of the target's datagrams
//   cgroup/setsockopt         locks: the program's own setsockopt of a locked option is
//                             skipped and reports success (optlen = -1)

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "abi.h"      // what the loader and these programs share (checked by a test)
#include "maps.h"     // the maps, and the per-socket state
#include "counters.h" // count()
#include "lookup.h"   // the socket -> decision key -> plan or action
#include "apply.h"    // a plan carried out
#include "redirect.h" // deny and redirect

SEC("cgroup/sock_create")
int sw_sock_create(struct bpf_sock *sk)
{
	struct config *c = cfg();
	struct skstate *st;
	struct kplan *p;
	struct dkey k = {};
	__u32 index;
	int t;

	if (sk->family != AF_INET && sk->family != AF_INET6)
		return 1;
	t = transport_of(sk->type, sk->protocol);
	if (t < 0)
		return 1;
	// A TCP socket needs its storage here only to remember the program's name; without
	// program rules the later hooks make it when they apply something (it costs an
	// allocation per socket).
	if (t != T_UDP && !(c && (c->flags & CFG_PROGRAMS)))
		return 1;
	st = state_of(sk);
	if (!st)
		return 1;
	st->prog = program_class(c);
	if (t != T_UDP)
		return 1;
	k.prog = st->prog;
	k.transport = T_UDP;
	k.stage = STAGE_UDP_CREATE;
	k.variant = sk->family == AF_INET ? VAR_V4 : VAR_V6DUAL;
	p = plan_for(&k, &index);
	if (!p)
		return 1;
	__u32 mark = 0, prio = 0, dev = 0, have = 0;
	for (__u32 i = 0; i < MAX_OPS; i++) {
		struct kop *op;
		__u32 v;

		if (i >= p->len)
			break;
		op = &p->ops[i];
		if (op->level != SOL_SOCKET_ || op->len != 4)
			continue;
		__builtin_memcpy(&v, op->val, 4);
		if (op->name == SO_MARK_) {
			mark = v;
			have |= 1;
		} else if (op->name == SO_PRIORITY_) {
			prio = v;
			have |= 2;
		} else if (op->name == SO_BINDTOIFINDEX_) {
			dev = v;
			have |= 4;
		}
	}
	// One store per field, each through the context pointer itself (the verifier refuses
	// a store through a pointer the compiler computed from it).
	if (have & 1)
		sk->mark = mark;
	asm volatile("" ::: "memory");
	if (have & 2)
		sk->priority = prio;
	asm volatile("" ::: "memory");
	if (have & 4)
		sk->bound_dev_if = dev;
	st->lock |= p->lock;
	count(C_APPLIED_BASE + STAGE_UDP_CREATE);
	return 1;
}

static __always_inline int on_connect(struct bpf_sock_addr *ctx, const __u32 ip6[4], __u8 variant,
				      int is4)
{
	struct config *c = cfg();
	struct skstate *st;
	struct kaction *act;
	struct kplan *p;
	struct dkey k = {};
	__u32 index, port;
	int t, failed, e;

	t = transport_of(ctx->type, ctx->protocol);
	if (t < 0 || !ctx->sk)
		return 1;
	port = bpf_ntohs((__u16)ctx->user_port);
	st = state_if_any(ctx->sk);
	k.prog = st ? st->prog : program_class(c);
	k.transport = t;
	k.stage = STAGE_CONNECT;
	k.variant = variant;
	k.ipc = network_class(ip6);
	k.rpc = port_class(&rports, port);
	act = action_for(c, &k);
	if (act && act->deny) {
		count(C_DENIED);
		return refuse(act->deny);
	}
	// Options are those of the destination the program asked for (the rules matched it).
	p = plan_for(&k, &index);
	if (p) {
		failed = APPLY(ctx, p, 1);
		// Under CFG_SOCKET_LOCKS a TCP socket's locks are looked up again from its peer.
		if (!st && (t != T_TCP || !socket_locks(c)))
			st = state_of(ctx->sk);
		if (st)
			st->lock |= p->lock;
		count(C_APPLIED_BASE + STAGE_CONNECT);
		if (failed && c && (c->flags & CFG_STRICT))
			return 0;
	}
	if (act && (act->flags & ACT_REDIRECT)) {
		e = redirect(ctx, act, ip6, port, is4, 0);
		if (e)
			return refuse(e);
	} else if (c && (c->flags & CFG_ACTIONS)) {
		struct rdstate *rd = bpf_sk_storage_get(&redirects, ctx->sk, 0, 0);

		if (rd)
			rd->peer.flags = 0; // connected again (UDP), not redirected this time
	}
	return 1;
}

ADDR_PROGRAM("cgroup/connect4", sw_connect4, USER_IP4_MAPPED, on_connect(ctx, ip6, VAR_V4, 1))
ADDR_PROGRAM("cgroup/connect6", sw_connect6, USER_IP6, on_connect(ctx, ip6, v4_mapped(ip6) ? VAR_V6DUAL : VAR_V6, 0))

// sendto() on an unconnected UDP socket.
//
// `deny` and `redirect` per destination: each datagram's address is matched (the sendmsg
// hooks run for every sendto with an address; a v4-mapped destination on an AF_INET6
// socket reaches sendmsg4, udpv6_sendmsg hands it to udp_sendmsg first).
//
// Options: what sock_create could not set (it has no setsockopt helper), from the decision
// without a destination, once per socket. Not per destination, and not for the first
// datagram: on 6.18 udp_sendmsg copies the socket's ToS, mark and priority into the
// datagram's cookie (ipcm_init_sk) before this hook runs, so what is set here reaches the
// next datagram. Per-destination options would be one datagram late on every change of
// destination (measured: each datagram carried the previous destination's class), so rules
// that name a destination reach UDP at connect() only, as in the library.
static __always_inline int on_sendmsg(struct bpf_sock_addr *ctx, const __u32 ip6[4], __u8 variant,
				      int is4)
{
	struct config *c = cfg();
	struct skstate *st;
	struct kplan *p;
	struct dkey k = {};
	__u32 index = 0;
	int failed;

	if (transport_of(ctx->type, ctx->protocol) != T_UDP || !ctx->sk)
		return 1;
	st = state_if_any(ctx->sk);
	if (c && (c->flags & CFG_ACTIONS)) {
		struct dkey d = {};
		struct kaction *act;
		__u32 port = bpf_ntohs((__u16)ctx->user_port);
		int e;

		d.prog = st ? st->prog : program_class(c);
		d.transport = T_UDP;
		d.ipc = network_class(ip6);
		d.rpc = port_class(&rports, port);
		act = action_for(c, &d);
		if (act && act->deny) {
			count(C_DENIED);
			return refuse(act->deny);
		}
		if (act && (act->flags & ACT_REDIRECT)) {
			e = redirect(ctx, act, ip6, port, is4, 1);
			if (e)
				return refuse(e);
		}
	}
	if (st && st->dest_plan)
		return 1;
	k.prog = st ? st->prog : program_class(c);
	k.transport = T_UDP;
	k.stage = STAGE_UDP_CREATE;
	k.variant = variant;
	p = plan_for(&k, &index);
	if (!p)
		return 1;
	if (!st)
		st = state_of(ctx->sk);
	if (!st)
		return 1;
	st->dest_plan = 1; // done, whatever the outcome
	failed = APPLY(ctx, p, 0);
	st->lock |= p->lock;
	count(C_APPLIED_BASE + STAGE_UDP_CREATE);
	if (failed && c && (c->flags & CFG_STRICT))
		return 0;
	return 1;
}

ADDR_PROGRAM("cgroup/sendmsg4", sw_sendmsg4, USER_IP4_MAPPED, on_sendmsg(ctx, ip6, VAR_V4, 1))
ADDR_PROGRAM("cgroup/sendmsg6", sw_sendmsg6, USER_IP6, on_sendmsg(ctx, ip6, VAR_V6DUAL, 0))

// getpeername() and recvmsg() of a redirected socket: the address the program asked for
// (restore, redirect.h).
ADDR_PROGRAM("cgroup/getpeername4", sw_getpeername4, USER_IP4_MAPPED, restore(ctx, ip6, 1, 0))
ADDR_PROGRAM("cgroup/getpeername6", sw_getpeername6, USER_IP6, restore(ctx, ip6, 0, 0))
ADDR_PROGRAM("cgroup/recvmsg4", sw_recvmsg4, USER_IP4_MAPPED, restore(ctx, ip6, 1, 1))
ADDR_PROGRAM("cgroup/recvmsg6", sw_recvmsg6, USER_IP6, restore(ctx, ip6, 0, 1))

static __always_inline int on_bind(struct bpf_sock_addr *ctx, __u8 variant)
{
	struct config *c = cfg();
	struct skstate *st;
	struct kplan *p;
	struct dkey k = {};
	__u32 index;
	int t, failed;

	t = transport_of(ctx->type, ctx->protocol);
	if (t < 0 || !ctx->sk)
		return 1;
	st = state_if_any(ctx->sk);
	k.prog = st ? st->prog : program_class(c);
	k.transport = t;
	k.stage = STAGE_BIND;
	k.variant = variant;
	k.lpc = port_class(&lports, bpf_ntohs((__u16)ctx->user_port));
	p = plan_for(&k, &index);
	if (!p)
		return 1;
	failed = APPLY(ctx, p, 0);
	if (t == T_UDP) {
		if (!st)
			st = state_of(ctx->sk);
		if (st)
			st->lock |= p->lock;
	}
	count(C_APPLIED_BASE + STAGE_BIND);
	if (failed && c && (c->flags & CFG_STRICT))
		return 0;
	return 1;
}

SEC("cgroup/bind4")
int sw_bind4(struct bpf_sock_addr *ctx)
{
	return on_bind(ctx, VAR_V4);
}

SEC("cgroup/bind6")
int sw_bind6(struct bpf_sock_addr *ctx)
{
	return on_bind(ctx, VAR_V6DUAL);
}

// listen() and accepted connections. sock_ops runs outside the process (accepts complete in
// softirq): the program class comes from the socket's storage, which sock_create filled and
// which accepted sockets inherit from their listener (BPF_F_CLONE).
SEC("sockops")
int sw_sockops(struct bpf_sock_ops *skops)
{
	struct config *c = cfg();
	struct bpf_sock *sk;
	struct skstate *st;
	struct kplan *p;
	struct dkey k = {};
	__u32 index;
	__u32 op = skops->op;

	if (op != BPF_SOCK_OPS_TCP_LISTEN_CB && op != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB)
		return 1;
	if (skops->family != AF_INET && skops->family != AF_INET6)
		return 1;
	sk = skops->sk;
	if (!sk)
		return 1;
	// An accepted socket has its listener's storage (BPF_F_CLONE) if the listener had one.
	st = state_if_any(sk);
	k.prog = st ? st->prog : 0;
	k.transport = T_TCP;
	k.lpc = port_class(&lports, skops->local_port);
	if (op == BPF_SOCK_OPS_TCP_LISTEN_CB) {
		k.stage = STAGE_LISTEN;
		k.variant = skops->family == AF_INET ? VAR_V4 : VAR_V6DUAL;
	} else {
		// Every field read unconditionally, each straight from the context (the verifier
		// refuses a load through a pointer the compiler computed from it).
		__u32 r4 = skops->remote_ip4;
		__u32 ip6[4] = { skops->remote_ip6[0], skops->remote_ip6[1], skops->remote_ip6[2],
				 skops->remote_ip6[3] };

		// Whether the listener got a listen plan: its storage says so; under
		// CFG_SOCKET_LOCKS listeners have none, and the listen plan of the port says it.
		int listened = st ? st->listened
				  : socket_locks(c) && listen_plan(0, skops->family, skops->local_port);

		k.stage = listened ? STAGE_ACCEPT : STAGE_ACCEPT_FULL;
		if (skops->family == AF_INET) {
			ip6[0] = 0;
			ip6[1] = 0;
			ip6[2] = bpf_htonl(0xffff);
			ip6[3] = r4;
			k.variant = VAR_V4;
		} else {
			k.variant = v4_mapped(ip6) ? VAR_V6DUAL : VAR_V6;
		}
		k.ipc = network_class(ip6);
		k.rpc = port_class(&rports, bpf_ntohl(skops->remote_port));
	}
	p = plan_for(&k, &index);
	if (!p)
		return 1;
	APPLY(skops, p, 0);
	count(C_APPLIED_BASE + (op == BPF_SOCK_OPS_TCP_LISTEN_CB ? STAGE_LISTEN : STAGE_ACCEPT));
	if (!st && socket_locks(c))
		return 1; // sw_setsockopt finds the locks from the socket itself
	if (!st)
		st = bpf_sk_storage_get(&sockets, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!st)
		return 1;
	st->lock |= p->lock;
	if (op == BPF_SOCK_OPS_TCP_LISTEN_CB)
		st->listened = 1;
	return 1;
}

// The locks of a TCP socket without storage under CFG_SOCKET_LOCKS: a listener's are those
// of its listen plan, a connected or accepted socket's those of the connect plan of its peer
// (the loader set the flag only where that equals what the listener passed on and the
// accept plan locks); a socket not yet listening or connected has had nothing applied.
static __always_inline __u32 locks_from_socket(struct bpf_sock *sk)
{
	// Every field read unconditionally, each straight from the context.
	__u32 family = sk->family, type = sk->type, protocol = sk->protocol;
	__u32 state = sk->state, lport = sk->src_port;
	__u32 rport = bpf_ntohs(sk->dst_port);
	__u32 r4 = sk->dst_ip4;
	__u32 ip6[4] = { sk->dst_ip6[0], sk->dst_ip6[1], sk->dst_ip6[2], sk->dst_ip6[3] };
	struct dkey k = {};
	struct kplan *p;
	__u32 index;

	if (transport_of(type, protocol) != T_TCP || (family != AF_INET && family != AF_INET6))
		return 0;
	if (state == BPF_TCP_LISTEN) {
		p = listen_plan(0, family, lport);
		return p ? p->lock : 0;
	}
	if (!rport)
		return 0;
	if (family == AF_INET) {
		ip6[0] = 0;
		ip6[1] = 0;
		ip6[2] = bpf_htonl(0xffff);
		ip6[3] = r4;
		k.variant = VAR_V4;
	} else {
		k.variant = v4_mapped(ip6) ? VAR_V6DUAL : VAR_V6;
	}
	k.transport = T_TCP;
	k.stage = STAGE_CONNECT;
	k.ipc = network_class(ip6);
	k.rpc = port_class(&rports, rport);
	p = plan_for(&k, &index);
	return p ? p->lock : 0;
}

SEC("cgroup/setsockopt")
int sw_setsockopt(struct bpf_sockopt *ctx)
{
	struct bpf_sock *sk = ctx->sk;
	struct optkey k = { .level = ctx->level, .name = ctx->optname };
	struct skstate *st;
	__u32 *slot, lock;

	if (!sk)
		goto pass;
	slot = bpf_map_lookup_elem(&lockable, &k);
	if (!slot)
		goto pass;
	st = bpf_sk_storage_get(&sockets, sk, 0, 0);
	if (st)
		lock = st->lock;
	else if (socket_locks(cfg()))
		lock = locks_from_socket(sk);
	else
		goto pass;
	if (lock & (1u << (*slot & 31))) {
		// Skip the kernel's setsockopt; the caller sees success, the value stays.
		ctx->optlen = -1;
		count(C_LOCKED);
		return 1;
	}
pass:
	// An option we do not handle, with a value larger than a page: the kernel must use
	// the caller's buffer as it is (else the caller gets EFAULT).
	if (ctx->optlen > 4096)
		ctx->optlen = 0;
	return 1;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
