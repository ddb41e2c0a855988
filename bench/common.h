/* common.h: helpers shared by the benchmark programs (connbench.c, bulk.c).
 * Include after the system headers and after #define _GNU_SOURCE. */
#ifndef SOCKWRAP_BENCH_COMMON_H
#define SOCKWRAP_BENCH_COMMON_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static inline void die(const char *m) { perror(m); exit(1); }

static inline double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* 127.0.0.1:port (port in host order; 0 lets bind pick one). */
static inline void loopback_addr(struct sockaddr_in *a, int port) {
    memset(a, 0, sizeof *a);
    a->sin_family = AF_INET;
    a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a->sin_port = htons(port);
}

#endif
