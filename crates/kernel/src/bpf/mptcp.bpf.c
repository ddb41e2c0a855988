// SPDX-License-Identifier: GPL-2.0
// sockwrap's MPTCP conversion: an fmod_ret program on update_socket_protocol (Linux 6.6+),
// the hook the kernel added so that BPF can turn a program's TCP sockets into MPTCP at
// socket(), with no wrapper inside the program. The kernel's selftest `mptcpify` shows the
// idea; this one is driven by the policy and limited to one cgroup.
//
// fmod_ret programs are global (attached to a kernel function, not to a cgroup), so the
// program itself checks that the task calling socket() is in the target cgroup or below it
// (bpf_current_task_under_cgroup with the cgroup held in `mptcp_target`, a cgroup array:
// allowed for tracing programs on every kernel that has the hook, and it follows the
// cgroup object, not a path or a level, so a systemd unit's fresh cgroup can be put there
// by the unit's own ExecStartPre). Returning 0 changes nothing (the next fmod_ret program on
// the hook, or the kernel, decides); returning IPPROTO_MPTCP makes socket() create an MPTCP
// socket, which falls back to TCP inside the kernel when the peer has no MPTCP.
//
// Loaded by crates/kernel/src/mptcp.rs, by hand: aya 0.14 has no fmod_ret program type.
// The section says `fentry/` only so that aya-obj parses the object; the loader asks the
// kernel for BPF_MODIFY_RETURN.

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include "mptcp.h"

#define AF_INET 2
#define AF_INET6 10
#define SOCK_STREAM 1
#define SOCK_TYPE_MASK 0xf // the type without SOCK_CLOEXEC and SOCK_NONBLOCK

struct {
	__uint(type, BPF_MAP_TYPE_CGROUP_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} mptcp_target SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct mptcp_config);
} mptcp_config SEC(".maps");

// A program's name → 1 convert, 0 leave as TCP.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, struct comm);
	__type(value, __u32);
} mptcp_comms SEC(".maps");

// [0]: sockets converted.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} mptcp_counters SEC(".maps");

SEC("fentry/update_socket_protocol")
int sw_mptcp(unsigned long long *ctx)
{
	int family = (int)ctx[0];
	int type = (int)ctx[1];
	int protocol = (int)ctx[2];
	__u32 zero = 0;

	if (family != AF_INET && family != AF_INET6)
		return 0;
	if ((type & SOCK_TYPE_MASK) != SOCK_STREAM)
		return 0;
	if (protocol != 0 && protocol != IPPROTO_TCP)
		return 0;
	// 1: under the target; 0: not; < 0: no cgroup in the map (yet).
	if (bpf_current_task_under_cgroup(&mptcp_target, 0) != 1)
		return 0;

	struct mptcp_config *cfg = bpf_map_lookup_elem(&mptcp_config, &zero);
	if (!cfg)
		return 0;
	__u32 convert = cfg->others;
	struct comm comm = {};
	if (bpf_get_current_comm(comm.name, sizeof(comm.name)) == 0) {
		__u32 *named = bpf_map_lookup_elem(&mptcp_comms, &comm);
		if (named)
			convert = *named;
	}
	if (!convert)
		return 0;
	__u64 *n = bpf_map_lookup_elem(&mptcp_counters, &zero);
	if (n)
		__sync_fetch_and_add(n, 1);
	return IPPROTO_MPTCP;
}

char _license[] SEC("license") = "GPL";
