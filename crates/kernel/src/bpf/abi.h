// SPDX-License-Identifier: MIT OR GPL-2.0
//
// The boundary between the loader and the programs of sockwrap.bpf.c: every constant and
// struct that both read. Its Rust mirror is crates/kernel/src/abi/mod.rs; a test there
// (abi/tests.rs) reads this file and compares every constant's value and every struct's
// field offsets and sizes with the mirror, so that one side cannot change alone.
//
// Only plain `#define NAME number` lines and structs of fixed-size fields here: the test's
// reader (abi/header.rs) understands nothing else.

#ifndef SOCKWRAP_ABI_H
#define SOCKWRAP_ABI_H

#include <linux/types.h>

#define MAX_OPS 32 // entries per plan; a power of two (see apply_one)
#define N_COUNTERS 32
// The option slots of the policy's catalog (sockwrap_policy::catalog::N_OPTS): counters
// 0..N_OPTS count failures per slot, and a plan entry's `opt` is below it.
#define N_OPTS 22

// policy::plan: a plan entry that binds the source address (its name is the family).
#define LEVEL_BIND (-1)
#define OP_EXTRA 1 // kop.flags: an IPv4 header option on an AF_INET6 socket
#define AF_INET 2
#define AF_INET6 10

// Kernel option numbers the programs read in plan entries (the loader writes the catalog's
// values, which are the kernel's). The trailing _ keeps them apart from the kernel headers'.
#define SOL_SOCKET_ 1
#define SO_PRIORITY_ 12
#define SO_MARK_ 36
#define SO_BINDTOIFINDEX_ 62

// dkey.stage: policy::Stage
#define STAGE_UDP_CREATE 0
#define STAGE_BIND 1
#define STAGE_CONNECT 2
#define STAGE_LISTEN 3
#define STAGE_ACCEPT 4
// An accepted socket whose listener got no listen plan here (made outside the cgroup, or
// inherited): every option of the accept decision, none assumed inherited.
#define STAGE_ACCEPT_FULL 5
// dkey.variant: policy::Variant
#define VAR_V4 0
#define VAR_V6 1
#define VAR_V6DUAL 2
// dkey.transport
#define T_TCP 0
#define T_UDP 1

// config.flags
#define CFG_PROGRAMS 1 // some rule names a program: look the comm up
#define CFG_STRICT 2   // on_error = fail: a failed option fails the call (connect, bind, sendmsg)
#define CFG_ACTIONS 4  // some rule denies or redirects: look the destination's action up
// A TCP socket's locks follow from its own addresses (crates/kernel/src/tables/locks.rs):
// a listener has those of its listen plan, a connected or accepted socket those of the
// connect plan of its peer. TCP sockets then get no storage (an allocation at connect, a copy
// at every accept, a free at close: most of what the programs cost a connection) and
// sw_setsockopt looks their locks up again.
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

// Entries of the port class arrays (rports, lports): four ports per entry.
#define PORT_ENTRIES 16384

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
// winning `deny` and `redirect` of the policy.
struct kaction {
	__u32 deny;   // errno the call fails with; 0: not denied (deny wins over redirect)
	__u32 flags;  // ACT_*
	__u32 ip6[4]; // redirect target, network order, v4-mapped for IPv4
	__u32 port;   // redirect target port, host order
	__u32 pad;
};

// The key of `networks` (an LPM trie): aya's lpm_trie::Key<[u8; 16]>.
struct lpm_key {
	__u32 prefixlen;
	__u8 addr[16];
};

// The key of `lockable`: the (level, name) a program's setsockopt names.
struct optkey {
	__s32 level;
	__s32 name;
};

struct config {
	__u32 flags;
	__u32 pad;
};

// Port → port class, four ports per entry (key port / 4, slot port % 4). Filled by the
// loader through mmap; all zero (one class) when no rule names a port.
struct port_classes {
	__u16 cls[4];
};

_Static_assert(sizeof(struct kop) == 28, "struct kop is policy::PlanOp (28 bytes)");
_Static_assert(sizeof(struct kplan) == 16 + 28 * MAX_OPS, "struct kplan");
_Static_assert(sizeof(struct dkey) == 16, "struct dkey");
_Static_assert(sizeof(struct kaction) == 32, "struct kaction");
_Static_assert(sizeof(struct lpm_key) == 20, "struct lpm_key");
_Static_assert(sizeof(struct optkey) == 8, "struct optkey");
_Static_assert(sizeof(struct config) == 8, "struct config");
_Static_assert(sizeof(struct port_classes) == 8, "struct port_classes");
_Static_assert((MAX_OPS & (MAX_OPS - 1)) == 0, "MAX_OPS bounds an index by a mask");
// count(op->opt & 31) must not reach the counters that follow the per-slot ones.
_Static_assert(N_OPTS <= C_APPLIED_BASE, "more option slots than failure counters");
_Static_assert(C_APPLIED_BASE + STAGE_ACCEPT < C_LOCKED, "applied counters overlap C_LOCKED");
_Static_assert(C_REDIRECTED < N_COUNTERS, "counters past the map");
_Static_assert(PORT_ENTRIES * 4 == 65536, "one class per port");

#endif
