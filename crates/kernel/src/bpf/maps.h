// SPDX-License-Identifier: MIT OR GPL-2.0
//
// The maps of sockwrap.bpf.c: what the loader fills (config, plans, decisions, actions,
// networks, rports, lports, programs, lockable: the structs of abi.h) and what the programs
// keep per socket (sockets, redirects: the structs below, which only the programs read).

#ifndef SOCKWRAP_MAPS_H
#define SOCKWRAP_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "abi.h"

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

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PORT_ENTRIES);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct port_classes);
} rports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PORT_ENTRIES);
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

#endif
