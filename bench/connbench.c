/* connbench.c: loopback TCP connection helpers for the sockwrap benchmarks.
 *
 *   connbench loop N [opts]     one process: listener on 127.0.0.1:0, then N times
 *                               socket, [own options], setsockopt(SO_LINGER 0), connect,
 *                               accept, close, close. Prints "N wall_ns_per_iter".
 *   connbench serve             listener on 127.0.0.1:0, prints the port, accepts and closes
 *                               until killed or stdin reaches EOF (bounded by alarm(600)).
 *   connbench rate PORT SECS [opts]
 *                               client: connect/close loop to 127.0.0.1:PORT for SECS seconds,
 *                               prints "connections conn_per_s".
 *
 * opts = "own": the program itself sets IP_TOS=0xb8, TCP_NODELAY=1, SO_KEEPALIVE=1,
 * TCP_KEEPIDLE=30, TCP_KEEPINTVL=10, TCP_KEEPCNT=3 (what SOCKWRAP_DSCP=EF SOCKWRAP_NODELAY=1
 * SOCKWRAP_KEEPALIVE=30,10,3 asks for) before connect. SO_LINGER {1,0} makes close send a RST
 * so that no TIME_WAIT state piles up and the ephemeral ports are never exhausted. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common.h"

static int listener(struct sockaddr_in *a) {
    int l = socket(AF_INET, SOCK_STREAM, 0);
    if (l < 0) die("socket");
    int one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    loopback_addr(a, 0);
    if (bind(l, (struct sockaddr *)a, sizeof *a) < 0) die("bind");
    if (listen(l, 4096) < 0) die("listen");
    socklen_t len = sizeof *a;
    if (getsockname(l, (struct sockaddr *)a, &len) < 0) die("getsockname");
    return l;
}

static void own_options(int s) {
    int tos = 0xb8, one = 1, idle = 30, intvl = 10, cnt = 3;
    if (setsockopt(s, IPPROTO_IP, IP_TOS, &tos, sizeof tos) < 0 ||
        setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0 ||
        setsockopt(s, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one) < 0 ||
        setsockopt(s, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle) < 0 ||
        setsockopt(s, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl) < 0 ||
        setsockopt(s, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt) < 0)
        die("setsockopt (own options)");
}

static int client(const struct sockaddr_in *a, int own) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0) die("socket");
    if (own) own_options(s);
    struct linger lg = {1, 0};
    if (setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof lg) < 0) die("setsockopt SO_LINGER");
    if (connect(s, (const struct sockaddr *)a, sizeof *a) < 0) die("connect");
    return s;
}

int main(int argc, char **argv) {
    alarm(600);
    if (argc >= 3 && !strcmp(argv[1], "loop")) {
        long n = atol(argv[2]);
        int own = argc > 3 && !strcmp(argv[3], "own");
        struct sockaddr_in a;
        int l = listener(&a);
        double t0 = now_s();
        for (long i = 0; i < n; i++) {
            int s = client(&a, own);
            int c = accept(l, NULL, NULL);
            if (c < 0) die("accept");
            close(s);
            close(c);
        }
        double t = now_s() - t0;
        printf("%ld %.1f\n", n, n ? t * 1e9 / n : 0.0);
        return 0;
    }
    if (argc >= 2 && !strcmp(argv[1], "serve")) {
        struct sockaddr_in a;
        int l = listener(&a);
        printf("%d\n", ntohs(a.sin_port));
        fflush(stdout);
        struct pollfd p[2] = {{l, POLLIN, 0}, {0, POLLIN, 0}};
        for (;;) {
            if (poll(p, 2, 1000) < 0 && errno != EINTR) die("poll");
            if (p[1].revents) {
                char b[64];
                if (read(0, b, sizeof b) <= 0) return 0;
            }
            if (p[0].revents & POLLIN) {
                for (int k = 0; k < 64; k++) {
                    int c = accept4(l, NULL, NULL, SOCK_NONBLOCK);
                    if (c < 0) break;
                    close(c);
                }
            }
        }
    }
    if (argc >= 4 && !strcmp(argv[1], "rate")) {
        struct sockaddr_in a;
        loopback_addr(&a, atoi(argv[2]));
        double secs = atof(argv[3]);
        int own = argc > 4 && !strcmp(argv[4], "own");
        long n = 0;
        double t0 = now_s(), t = t0;
        while (t - t0 < secs) {
            for (int k = 0; k < 64; k++, n++) close(client(&a, own));
            t = now_s();
        }
        printf("%ld %.1f\n", n, n / (t - t0));
        return 0;
    }
    fprintf(stderr, "usage: connbench loop N [own] | serve | rate PORT SECS [own]\n");
    return 2;
}
