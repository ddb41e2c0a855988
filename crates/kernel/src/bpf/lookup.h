// SPDX-License-Identifier: MIT OR GPL-2.0
//
// The policy lookup: the socket in front of a program turned into its decision key (struct
// dkey: program, transport, stage, variant, network, remote and local port classes), and the
// plan or action the loader stored for that key. Nothing is decided here: the loader
// (crates/kernel/src/tables) enumerated every decision the policy can take.

#ifndef SOCKWRAP_LOOKUP_H
#define SOCKWRAP_LOOKUP_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "abi.h"
#include "maps.h"

#define IPPROTO_MPTCP_ 262
#define SOCK_STREAM_ 1
#define SOCK_DGRAM_ 2

// A sock_addr context's address as the four words network_class and the redirects take:
// an IPv4 address v4-mapped (connect4, sendmsg4, ...), an IPv6 one as it is. Each word is
// read straight from the context (the verifier refuses a load through a pointer the
// compiler computed from it).
#define USER_IP4_MAPPED(ctx) { 0, 0, bpf_htonl(0xffff), (ctx)->user_ip4 }
#define USER_IP6(ctx) { (ctx)->user_ip6[0], (ctx)->user_ip6[1], (ctx)->user_ip6[2], (ctx)->user_ip6[3] }

// A sock_addr program (connect4/6, sendmsg4/6, getpeername4/6, recvmsg4/6): the address
// made four words by `ip_words` (USER_IP4_MAPPED or USER_IP6) as `ip6`, then `call`.
#define ADDR_PROGRAM(section, name, ip_words, call)    \
	SEC(section)                                   \
	int name(struct bpf_sock_addr *ctx)            \
	{                                              \
		__u32 ip6[4] = ip_words(ctx);          \
                                                       \
		return call;                           \
	}

static __always_inline struct config *cfg(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&config, &zero);
}

static __always_inline __u32 program_class(struct config *c)
{
	char comm[16] = {};
	__u32 *cls;

	if (!c || !(c->flags & CFG_PROGRAMS))
		return 0;
	bpf_get_current_comm(comm, sizeof(comm));
	cls = bpf_map_lookup_elem(&programs, comm);
	return cls ? *cls : 0;
}

// The class of `port`: ports of one class are in the same port ranges of every rule.
static __always_inline __u16 port_class(void *classes, __u32 port)
{
	__u32 key = (port >> 2) & 16383;
	struct port_classes *pc = bpf_map_lookup_elem(classes, &key);

	return pc ? pc->cls[port & 3] : 0;
}

static __always_inline __u32 network_class(const __u32 ip6[4])
{
	struct lpm_key k = { .prefixlen = 128 };
	__u32 *cls;

	__builtin_memcpy(k.addr, ip6, 16);
	cls = bpf_map_lookup_elem(&networks, &k);
	return cls ? *cls : 0;
}

static __always_inline int transport_of(__u32 type, __u32 protocol)
{
	if (type == SOCK_STREAM_ && (protocol == IPPROTO_TCP || protocol == IPPROTO_MPTCP_))
		return T_TCP;
	if (type == SOCK_DGRAM_ && protocol == IPPROTO_UDP)
		return T_UDP;
	return -1;
}

static __always_inline struct kplan *plan_for(struct dkey *k, __u32 *index)
{
	__u32 *i = bpf_map_lookup_elem(&decisions, k);

	if (!i)
		return 0;
	*index = *i;
	return bpf_map_lookup_elem(&plans, i);
}

// The socket's storage, made on first need: a socket no plan applies to gets none (the
// allocation is most of what the programs cost a socket).
static __always_inline struct skstate *state_of(struct bpf_sock *sk)
{
	return bpf_sk_storage_get(&sockets, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
}

static __always_inline struct skstate *state_if_any(struct bpf_sock *sk)
{
	return bpf_sk_storage_get(&sockets, sk, 0, 0);
}

static __always_inline int socket_locks(struct config *c)
{
	return c && (c->flags & CFG_SOCKET_LOCKS);
}

// The plan listen() got on a TCP socket of `family` bound to local port `lport`.
static __always_inline struct kplan *listen_plan(__u32 prog, __u32 family, __u32 lport)
{
	struct dkey k = {};
	__u32 index;

	k.prog = prog;
	k.transport = T_TCP;
	k.stage = STAGE_LISTEN;
	k.variant = family == AF_INET ? VAR_V4 : VAR_V6DUAL;
	k.lpc = port_class(&lports, lport);
	return plan_for(&k, &index);
}

// The `deny` and `redirect` of a destination, when some rule has one (CFG_ACTIONS): one
// entry per (program, transport, network, remote port) class, stage connect.
static __always_inline struct kaction *action_for(struct config *c, const struct dkey *k)
{
	struct dkey a = {};

	if (!c || !(c->flags & CFG_ACTIONS))
		return 0;
	a.ipc = k->ipc;
	a.prog = k->prog;
	a.rpc = k->rpc;
	a.transport = k->transport;
	a.stage = STAGE_CONNECT;
	return bpf_map_lookup_elem(&actions, &a);
}

static __always_inline int v4_mapped(const __u32 ip6[4])
{
	return ip6[0] == 0 && ip6[1] == 0 && ip6[2] == bpf_htonl(0xffff);
}

#endif
