// SPDX-License-Identifier: MIT OR GPL-2.0
//
// `deny` and `redirect`: refusing a connect or datagram, pointing it at the target, and
// answering getpeername and recvmsg with the address the program asked for.

#ifndef SOCKWRAP_REDIRECT_H
#define SOCKWRAP_REDIRECT_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "abi.h"
#include "maps.h"
#include "counters.h"

#define EAFNOSUPPORT_ 97

// Refuses the call with `errno`: returning 0 alone gives the caller EPERM; bpf_set_retval
// (cgroup programs, 5.18+) chooses the error. Nothing is sent.
static __always_inline int refuse(int errno_)
{
	bpf_set_retval(-errno_);
	return 0;
}

static __always_inline void remember(struct redirected *r, const struct kaction *a,
				     const __u32 ip6[4], __u32 port)
{
	r->flags = ACT_REDIRECT | (a->flags & ACT_SHOW_TARGET);
	r->orig_port = port;
	r->target_port = a->port;
	r->orig[0] = ip6[0];
	r->orig[1] = ip6[1];
	r->orig[2] = ip6[2];
	r->orig[3] = ip6[3];
	r->target[0] = a->ip6[0];
	r->target[1] = a->ip6[1];
	r->target[2] = a->ip6[2];
	r->target[3] = a->ip6[3];
}

// Points a sockaddr_in (connect4, sendmsg4) or sockaddr_in6 (connect6, sendmsg6) at the
// target. Each store goes straight to the context (see sw_sock_create). Returns an errno when
// the target cannot be written in this form: an IPv6 target for a sockaddr_in, and an IPv4
// target for a native IPv6 datagram (udpv6_sendmsg refuses a v4-mapped rewrite with the
// kernel-internal ENOTSUPP: measured, the program got errno 524; connect6 accepts it).
static __always_inline int redirect_to(struct bpf_sock_addr *ctx, const struct kaction *a,
				       int is4, int sendmsg)
{
	if (is4) {
		if (!(a->flags & ACT_TARGET_V4))
			return EAFNOSUPPORT_;
		ctx->user_ip4 = a->ip6[3];
	} else {
		if (sendmsg && (a->flags & ACT_TARGET_V4))
			return EAFNOSUPPORT_;
		ctx->user_ip6[0] = a->ip6[0];
		ctx->user_ip6[1] = a->ip6[1];
		ctx->user_ip6[2] = a->ip6[2];
		ctx->user_ip6[3] = a->ip6[3];
	}
	ctx->user_port = bpf_htons((__u16)a->port);
	count(C_REDIRECTED);
	return 0;
}

// Redirects the connect (sendmsg 0) or datagram (sendmsg 1) to the action's target and
// remembers where it went on the socket, for getpeername and recvmsg: 0, or the errno the
// call must fail with (see redirect_to).
static __always_inline int redirect(struct bpf_sock_addr *ctx, const struct kaction *a,
				    const __u32 ip6[4], __u32 port, int is4, int sendmsg)
{
	struct rdstate *rd;
	int e = redirect_to(ctx, a, is4, sendmsg);

	if (e)
		return e;
	rd = bpf_sk_storage_get(&redirects, ctx->sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (rd)
		remember(sendmsg ? &rd->dgram : &rd->peer, a, ip6, port);
	return 0;
}

// Whether `r` is a redirect to (ip6, port): the address the kernel is about to answer.
static __always_inline int went_to(const struct redirected *r, const __u32 ip6[4], __u32 port)
{
	return (r->flags & ACT_REDIRECT) && !(r->flags & ACT_SHOW_TARGET) &&
	       r->target_port == port && r->target[0] == ip6[0] && r->target[1] == ip6[1] &&
	       r->target[2] == ip6[2] && r->target[3] == ip6[3];
}

// Answers with the program's own address instead of the target.
static __always_inline void answer_orig(struct bpf_sock_addr *ctx, const struct redirected *r,
					int is4)
{
	if (is4) {
		ctx->user_ip4 = r->orig[3];
	} else {
		ctx->user_ip6[0] = r->orig[0];
		ctx->user_ip6[1] = r->orig[1];
		ctx->user_ip6[2] = r->orig[2];
		ctx->user_ip6[3] = r->orig[3];
	}
	ctx->user_port = bpf_htons((__u16)r->orig_port);
}

// getpeername() (peer) and recvmsg() (peer or the last redirected sendto): the program sees
// the address it asked for, unless its rule says peername = "target". The verifier makes
// these programs return 1: they can change the answer, never fail the call.
static __always_inline int restore(struct bpf_sock_addr *ctx, const __u32 ip6[4], int is4,
				   int datagrams)
{
	struct rdstate *rd;
	__u32 port = bpf_ntohs((__u16)ctx->user_port);

	if (!ctx->sk)
		return 1;
	rd = bpf_sk_storage_get(&redirects, ctx->sk, 0, 0);
	if (!rd)
		return 1;
	if (datagrams && went_to(&rd->dgram, ip6, port))
		answer_orig(ctx, &rd->dgram, is4);
	else if (went_to(&rd->peer, ip6, port))
		answer_orig(ctx, &rd->peer, is4);
	return 1;
}

#endif
