// SPDX-License-Identifier: MIT OR GPL-2.0
//
// The `counters` map: failures per option slot (0..N_OPTS), plans applied per stage, locks,
// denials and redirects (abi.h, C_*). The loader reads them for `sockwrap status`.

#ifndef SOCKWRAP_COUNTERS_H
#define SOCKWRAP_COUNTERS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "abi.h"

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

#endif
