// SPDX-License-Identifier: MIT OR GPL-2.0
//
// Feature probes for sockwrap's kernel backend: one tiny program per hook, helper or
// context access that the programs in sockwrap.bpf.c rely on. The loader
// (crates/kernel/src/probe.rs) loads each alone; the kernel accepting it is the fact that
// the feature is there. None is ever attached.
//
// Each probe uses exactly one thing that a kernel could lack, so that a refusal names it
// (crates/kernel/src/probe.rs, FEATURES, says which sockwrap program needs which probe).

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u32);
} probe_storage SEC(".maps");

// A probe program: `section` and the context type its hook passes, then the body.
#define PROBE(section, name, ctx_t) \
	SEC(section)                    \
	int name(ctx_t *ctx)

// Hooks: each program type and attach point, doing nothing.
#define HOOK(section, name, ctx_t)      \
	PROBE(section, name, ctx_t)     \
	{                               \
		return 1;               \
	}
HOOK("cgroup/sock_create", hook_sock_create, struct bpf_sock)
HOOK("cgroup/bind4", hook_bind4, struct bpf_sock_addr)
HOOK("cgroup/connect4", hook_connect4, struct bpf_sock_addr)
HOOK("cgroup/sendmsg4", hook_sendmsg4, struct bpf_sock_addr)
HOOK("cgroup/recvmsg4", hook_recvmsg4, struct bpf_sock_addr)
HOOK("cgroup/getpeername4", hook_getpeername4, struct bpf_sock_addr)
HOOK("sockops", hook_sockops, struct bpf_sock_ops)
HOOK("cgroup/setsockopt", hook_setsockopt, struct bpf_sockopt)

// Helpers, each from the hook sockwrap calls it in.
static long loop_cb(__u64 i, void *data)
{
	return 1;
}

SEC("cgroup/connect4")
int helper_loop(struct bpf_sock_addr *ctx)
{
	bpf_loop(1, loop_cb, 0, 0);
	return 1;
}

SEC("cgroup/connect4")
int helper_set_retval(struct bpf_sock_addr *ctx)
{
	bpf_set_retval(-1);
	return 1;
}

SEC("cgroup/connect4")
int helper_bind(struct bpf_sock_addr *ctx)
{
	bpf_bind(ctx, 0, 0);
	return 1;
}

static __always_inline int setsockopt_probe(void *ctx)
{
	int v = 1;

	bpf_setsockopt(ctx, 1 /* SOL_SOCKET */, 2 /* SO_REUSEADDR */, &v, sizeof(v));
	return 1;
}

// bpf_setsockopt from each hook that calls it.
#define SETSOCKOPT_PROBE(section, name, ctx_t) \
	PROBE(section, name, ctx_t)            \
	{                                      \
		return setsockopt_probe(ctx);  \
	}
SETSOCKOPT_PROBE("cgroup/connect4", helper_setsockopt_connect, struct bpf_sock_addr)
SETSOCKOPT_PROBE("cgroup/bind4", helper_setsockopt_bind, struct bpf_sock_addr)
SETSOCKOPT_PROBE("cgroup/sendmsg4", helper_setsockopt_sendmsg, struct bpf_sock_addr)
SETSOCKOPT_PROBE("sockops", helper_setsockopt_sockops, struct bpf_sock_ops)

SEC("cgroup/connect4")
int helper_storage_sock_addr(struct bpf_sock_addr *ctx)
{
	if (ctx->sk)
		bpf_sk_storage_get(&probe_storage, ctx->sk, 0, 0);
	return 1;
}

SEC("cgroup/sock_create")
int helper_storage_sock_create(struct bpf_sock *sk)
{
	bpf_sk_storage_get(&probe_storage, sk, 0, 0);
	return 1;
}

SEC("sockops")
int helper_storage_sockops(struct bpf_sock_ops *skops)
{
	struct bpf_sock *sk = skops->sk;

	if (sk)
		bpf_sk_storage_get(&probe_storage, sk, 0, 0);
	return 1;
}

SEC("cgroup/setsockopt")
int helper_storage_sockopt(struct bpf_sockopt *ctx)
{
	struct bpf_sock *sk = ctx->sk;

	if (sk)
		bpf_sk_storage_get(&probe_storage, sk, 0, 0);
	return 1;
}

// bpf_get_current_comm from each hook that calls it.
#define COMM_PROBE(section, name, ctx_t)                     \
	PROBE(section, name, ctx_t)                          \
	{                                                    \
		char comm[16];                               \
                                                             \
		bpf_get_current_comm(comm, sizeof(comm));    \
		return comm[0] != 0;                         \
	}
COMM_PROBE("cgroup/sock_create", helper_comm_sock_create, struct bpf_sock)
COMM_PROBE("cgroup/connect4", helper_comm_sock_addr, struct bpf_sock_addr)

// Context fields sockwrap writes or reads beyond the oldest forms of each hook.
SEC("cgroup/sock_create")
int ctx_sock_create_fields(struct bpf_sock *sk)
{
	sk->mark = 0;
	sk->priority = 0;
	sk->bound_dev_if = 0;
	return 1;
}

SEC("cgroup/setsockopt")
int ctx_sockopt_bypass(struct bpf_sockopt *ctx)
{
	ctx->optlen = -1;
	return 1;
}

SEC("cgroup/setsockopt")
int ctx_sock_addresses(struct bpf_sockopt *ctx)
{
	struct bpf_sock *sk = ctx->sk;
	__u32 x;

	if (!sk)
		return 1;
	x = sk->src_port ^ sk->dst_port ^ sk->dst_ip4 ^ sk->dst_ip6[3] ^ sk->state;
	barrier_var(x); // the loads stay, though nothing uses them
	return 1;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
