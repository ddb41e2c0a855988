// SPDX-License-Identifier: MIT OR GPL-2.0
//
// sockwrap's kernel backend: cgroup BPF programs that carry out the Plans the policy
// computed, for every socket made in the cgroup they are attached to (static binaries, Go,
// io_uring, and the sockets libc opens inside itself included).
//
// Nothing is decided here. The loader (crates/kernel/src/tables.rs) enumerates every
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
#include <linux/in.h>
#include <linux/in6.h>
#include <linux/socket.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

// Keep in step with crates/kernel/src/tables.rs (checked there by size assertions).
#define MAX_OPS 32 // a power of two (see apply_one)
#define N_COUNTERS 32

#define LEVEL_BIND (-1)
#define OP_EXTRA 1

#define AF_INET 2
#define AF_INET6 10
#define EAFNOSUPPORT_ 97
#define SOL_SOCKET_ 1
#define SO_PRIORITY_ 12
#define SO_MARK_ 36
#define SO_BINDTOIFINDEX_ 62
#define IPPROTO_MPTCP_ 262
#define SOCK_STREAM_ 1
#define SOCK_DGRAM_ 2

// policy::Stage
#define STAGE_UDP_CREATE 0
#define STAGE_BIND 1
#define STAGE_CONNECT 2
#define STAGE_LISTEN 3
#define STAGE_ACCEPT 4
// An accepted socket whose listener got no listen plan here (made outside the cgroup, or
// inherited): every option of the accept decision, none assumed inherited.
#define STAGE_ACCEPT_FULL 5
// policy::Variant
#define VAR_V4 0
#define VAR_V6 1
#define VAR_V6DUAL 2
// transports
#define T_TCP 0
#define T_UDP 1

// config.flags
#define CFG_PROGRAMS 1 // some rule names a program: look the comm up
#define CFG_STRICT 2   // on_error = fail: a failed option fails the call (connect, bind, sendmsg)
#define CFG_ACTIONS 4  // some rule denies or redirects: look the destination's action up
// A TCP socket's locks follow from its own addresses (crates/kernel/src/tables.rs,
// socket_locks): a listener has those of its listen plan, a connected or accepted socket
// those of the connect plan of its peer. TCP sockets then get no storage (an allocation at
// connect, a copy at every accept, a free at close: most of what the programs cost a
// connection) and sw_setsockopt looks their locks up again.
#define CFG_SOCKET_LOCKS 8

// counters (after the per-slot failure counters 0..N_OPTS)
#define C_APPLIED_BASE 24 // + stage: plans applied
#define C_LOCKED 29       // setsockopt calls skipped by a lock
#define C_DENIED 30       // connects and datagrams denied
#define C_REDIRECTED 31   // connects and datagrams redirected

// kaction.flags
#define ACT_REDIRECT 1
#define ACT_SHOW_TARGET 2 // getpeername answers the target (peername = "target")
#define ACT_TARGET_V4 4   // the target is an IPv4 address (ip6 holds it v4-mapped)

// policy::PlanOp, byte for byte.
struct kop {
	__s32 level;
	__s32 name;
	__u8 opt;
	__u8 len;
	__u8 flags;
	__u8 pad;
	__u8 val[16];
};

struct kplan {
	__u32 lock;  // slots to lock once set
	__u32 slots; // slots that have entries
	__u32 len;
	__u32 pad;
	struct kop ops[MAX_OPS];
};

struct dkey {
	__u32 ipc;  // remote network class (0: no rule network contains it, or no remote)
	__u32 prog; // program class (0: no rule names it)
	__u16 rpc;  // remote port class
	__u16 lpc;  // local port class
	__u8 transport;
	__u8 stage;
	__u8 variant;
	__u8 pad;
};

// What a connect (or an unconnected sendto) to a destination gets besides options: the
// winning `deny` and `redirect` of the policy (crates/kernel/src/tables.rs, KAction).
struct kaction {
	__u32 deny;   // errno the call fails with; 0: not denied (deny wins over redirect)
	__u32 flags;  // ACT_*
	__u32 ip6[4]; // redirect target, network order, v4-mapped for IPv4
	__u32 port;   // redirect target port, host order
	__u32 pad;
};

// A redirect remembered on the socket: the program's address and where it really went,
// both v4-mapped for IPv4.
struct redirected {
	__u32 flags; // ACT_REDIRECT set when in use, ACT_SHOW_TARGET as the rule said
	__u32 orig_port;
	__u32 target_port;
	__u32 pad;
	__u32 orig[4];
	__u32 target[4];
};

struct lpm_key {
	__u32 prefixlen;
	__u8 addr[16];
};

struct optkey {
	__s32 level;
	__s32 name;
};

struct config {
	__u32 flags;
	__u32 pad;
};

struct skstate {
	__u32 lock;      // slots locked on this socket
	__u32 prog;      // program class of the process that made it
	__u32 dest_plan; // unconnected UDP: the first sendto() has applied the UDP plan
	__u32 listened;  // a listener whose listen plan was applied (accepted sockets inherit
			 // this storage, BPF_F_CLONE, and with it the listener's options)
};

// A redirected socket's addresses, in storage of their own: made only when a redirect
// happens, so that other sockets' storage (skstate) stays as small as without actions.
struct rdstate {
	struct redirected peer;  // connect(): what getpeername answers, and recvmsg
	struct redirected dgram; // the last redirected sendto(): what recvmsg answers
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct config);
} config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1); // set by the loader
	__type(key, __u32);
	__type(value, struct kplan);
} plans SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1); // set by the loader
	__type(key, struct dkey);
	__type(value, __u32);
} decisions SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1); // set by the loader
	__type(key, struct dkey);
	__type(value, struct kaction);
} actions SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1); // set by the loader
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lpm_key);
	__type(value, __u32);
} networks SEC(".maps");

// Port → port class, four ports per entry (key port / 4, slot port % 4). Filled by the
// loader through mmap; all zero (one class) when no rule names a port.
struct port_classes {
	__u16 cls[4];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct port_classes);
} rports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct port_classes);
} lports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1); // set by the loader
	__type(key, char[16]);
	__type(value, __u32);
} programs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, struct optkey);
	__type(value, __u32);
} lockable SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC | BPF_F_CLONE);
	__type(key, int);
	__type(value, struct skstate);
} sockets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct rdstate);
} redirects SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, N_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

static __always_inline void count(__u32 i)
{
	__u64 *c = bpf_map_lookup_elem(&counters, &i);
	if (c)
		__sync_fetch_and_add(c, 1);
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
		struct rdstate *rd;

		e = redirect_to(ctx, act, is4, 0);
		if (e)
			return refuse(e);
		rd = bpf_sk_storage_get(&redirects, ctx->sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
		if (rd)
			remember(&rd->peer, act, ip6, port);
	} else if (c && (c->flags & CFG_ACTIONS)) {
		struct rdstate *rd = bpf_sk_storage_get(&redirects, ctx->sk, 0, 0);

		if (rd)
			rd->peer.flags = 0; // connected again (UDP), not redirected this time
	}
	return 1;
}

SEC("cgroup/connect4")
int sw_connect4(struct bpf_sock_addr *ctx)
{
	__u32 ip6[4] = { 0, 0, bpf_htonl(0xffff), ctx->user_ip4 };

	return on_connect(ctx, ip6, VAR_V4, 1);
}

static __always_inline int v4_mapped(const __u32 ip6[4])
{
	return ip6[0] == 0 && ip6[1] == 0 && ip6[2] == bpf_htonl(0xffff);
}

SEC("cgroup/connect6")
int sw_connect6(struct bpf_sock_addr *ctx)
{
	__u32 ip6[4] = { ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3] };

	return on_connect(ctx, ip6, v4_mapped(ip6) ? VAR_V6DUAL : VAR_V6, 0);
}

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
			struct rdstate *rd;

			e = redirect_to(ctx, act, is4, 1);
			if (e)
				return refuse(e);
			rd = bpf_sk_storage_get(&redirects, ctx->sk, 0,
						BPF_SK_STORAGE_GET_F_CREATE);
			if (rd)
				remember(&rd->dgram, act, ip6, port);
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

SEC("cgroup/sendmsg4")
int sw_sendmsg4(struct bpf_sock_addr *ctx)
{
	__u32 ip6[4] = { 0, 0, bpf_htonl(0xffff), ctx->user_ip4 };

	return on_sendmsg(ctx, ip6, VAR_V4, 1);
}

SEC("cgroup/sendmsg6")
int sw_sendmsg6(struct bpf_sock_addr *ctx)
{
	__u32 ip6[4] = { ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3] };

	return on_sendmsg(ctx, ip6, VAR_V6DUAL, 0);
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

SEC("cgroup/getpeername4")
int sw_getpeername4(struct bpf_sock_addr *ctx)
{
	__u32 ip6[4] = { 0, 0, bpf_htonl(0xffff), ctx->user_ip4 };

	return restore(ctx, ip6, 1, 0);
}

SEC("cgroup/getpeername6")
int sw_getpeername6(struct bpf_sock_addr *ctx)
{
	__u32 ip6[4] = { ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3] };

	return restore(ctx, ip6, 0, 0);
}

SEC("cgroup/recvmsg4")
int sw_recvmsg4(struct bpf_sock_addr *ctx)
{
	__u32 ip6[4] = { 0, 0, bpf_htonl(0xffff), ctx->user_ip4 };

	return restore(ctx, ip6, 1, 1);
}

SEC("cgroup/recvmsg6")
int sw_recvmsg6(struct bpf_sock_addr *ctx)
{
	__u32 ip6[4] = { ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3] };

	return restore(ctx, ip6, 0, 1);
}

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
