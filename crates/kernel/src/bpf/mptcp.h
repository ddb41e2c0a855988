// SPDX-License-Identifier: GPL-2.0
//
// What the MPTCP conversion (mptcp.bpf.c) and its loader (crates/kernel/src/mptcp.rs)
// share: the values of its maps. The Rust side is checked against this file by a test
// there (the reader of abi/header.rs).

#ifndef SOCKWRAP_MPTCP_H
#define SOCKWRAP_MPTCP_H

#include <linux/types.h>

// The one entry of `mptcp_config`: which sockets. Programs not in `mptcp_comms` get `others`.
struct mptcp_config {
	__u32 others; // 1: convert the sockets of programs not named in mptcp_comms
	__u32 pad;
};

// A key of `mptcp_comms`: the kernel's name of a program (comm, 16 bytes, NUL-padded).
struct comm {
	char name[16];
};

#endif
