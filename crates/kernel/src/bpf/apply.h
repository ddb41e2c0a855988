// SPDX-License-Identifier: MIT OR GPL-2.0
//
// Carrying a plan out: bpf_setsockopt for each entry, bpf_bind for a source address.

#ifndef SOCKWRAP_APPLY_H
#define SOCKWRAP_APPLY_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <linux/socket.h>
#include <bpf/bpf_helpers.h>
#include "abi.h"
#include "counters.h"

// bpf_bind to the source address of a LEVEL_BIND entry, port 0: the kernel then binds with
// IP_BIND_ADDRESS_NO_PORT semantics (BIND_FORCE_ADDRESS_NO_PORT), and connect picks the port.
static __always_inline long bind_source(struct bpf_sock_addr *ctx, struct kop *op)
{
	if (op->name == AF_INET && ctx->family == AF_INET) {
		struct sockaddr_in sa = { .sin_family = AF_INET };
		__builtin_memcpy(&sa.sin_addr, op->val, 4);
		return bpf_bind(ctx, (struct sockaddr *)&sa, sizeof(sa));
	}
	if (op->name == AF_INET6 && ctx->family == AF_INET6) {
		struct sockaddr_in6 sa = { .sin6_family = AF_INET6 };
		__builtin_memcpy(&sa.sin6_addr, op->val, 16);
		return bpf_bind(ctx, (struct sockaddr *)&sa, sizeof(sa));
	}
	return 0;
}

// Applies every entry of `p` with bpf_setsockopt (and bpf_bind in the connect hooks).
// The loop runs in bpf_loop so that the verifier checks one entry once, not every unrolled
// iteration: loading stays fast.
struct apply_args {
	void *ctx;
	struct kplan *p;
	int failed;
};

static __always_inline long apply_one(struct apply_args *a, __u32 i, int can_bind)
{
	struct kplan *p = a->p;
	struct kop *op;
	char buf[16];
	__u32 len;
	long r = 0;

	// MAX_OPS is a power of two: the mask bounds the index for the verifier.
	i &= MAX_OPS - 1;
	if (i >= p->len)
		return 1; // stop
	op = &p->ops[i];
	len = op->len;
	if (op->level == LEVEL_BIND) {
		if (can_bind)
			r = bind_source(a->ctx, op);
	} else {
		if (len < 1 || len > 16)
			return 0;
		// The check above compiles to one unsigned compare of len - 1 in a scratch
		// register, which tells a verifier before 6.12 nothing about len itself (it links
		// no register that differs by a constant): 6.1 then refuses the call as an
		// "invalid zero-sized read". The same bound, recomputed on the register passed,
		// with the compiler kept from folding it away, holds on every kernel.
		len -= 1;
		barrier_var(len);
		len = (len & 15) + 1;
		__builtin_memcpy(buf, op->val, 16);
		r = bpf_setsockopt(a->ctx, op->level, op->name, buf, len);
	}
	if (r && !(op->flags & OP_EXTRA)) {
		count(op->opt & 31);
		a->failed = 1;
	}
	return 0;
}

static long apply_cb(__u64 i, void *data)
{
	return apply_one(data, i, 0);
}

static long apply_bind_cb(__u64 i, void *data)
{
	return apply_one(data, i, 1);
}

#define APPLY(ctx_, p_, can_bind)                                                      \
	({                                                                             \
		struct apply_args a_ = { .ctx = (ctx_), .p = (p_) };                    \
		bpf_loop(MAX_OPS, (can_bind) ? apply_bind_cb : apply_cb, &a_, 0);       \
		a_.failed;                                                             \
	})

#endif
