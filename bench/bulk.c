/* bulk.c: bulk transfer over loopback TCP (the data path).
 *   bulk MBYTES   parent accepts and write()s MBYTES MiB in 256 KiB chunks; a forked child
 *                 connects and read()s until EOF. Prints "bytes seconds MiB_per_s". */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common.h"

int main(int argc, char **argv) {
    alarm(300);
    long long total = (argc > 1 ? atoll(argv[1]) : 2048) << 20;
    static char buf[256 << 10];
    struct sockaddr_in a;
    loopback_addr(&a, 0);
    int l = socket(AF_INET, SOCK_STREAM, 0);
    if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) < 0 || listen(l, 1) < 0) die("listen");
    socklen_t len = sizeof a;
    getsockname(l, (struct sockaddr *)&a, &len);
    pid_t pid = fork();
    if (pid < 0) die("fork");
    if (pid == 0) {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof a) < 0) die("connect");
        long long got = 0;
        ssize_t r;
        while ((r = read(s, buf, sizeof buf)) > 0) got += r;
        _exit(got == total ? 0 : 3);
    }
    int c = accept(l, NULL, NULL);
    if (c < 0) die("accept");
    memset(buf, 0x5a, sizeof buf);
    double t0 = now_s();
    for (long long sent = 0; sent < total;) {
        size_t want = total - sent < (long long)sizeof buf ? (size_t)(total - sent) : sizeof buf;
        ssize_t w = write(c, buf, want);
        if (w <= 0) die("write");
        sent += w;
    }
    close(c);
    int st;
    waitpid(pid, &st, 0);
    double t = now_s() - t0;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) { fprintf(stderr, "receiver failed\n"); return 1; }
    printf("%lld %.4f %.1f\n", total, t, total / 1048576.0 / t);
    return 0;
}
