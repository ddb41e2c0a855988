/* tests/test_mptcp_kernel.py's static client (util.build_c, -static); the modes are
 * described there. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void wait_for(int s, short ev) {
    struct pollfd p = {s, ev, 0};
    if (poll(&p, 1, 20000) != 1) { fprintf(stderr, "poll timed out\n"); exit(3); }
}
int main(int argc, char **argv) {
    if (argc < 4) return 2;
    alarm(90);
    const char *mode = argv[1], *host = argv[2];
    int port = atoi(argv[3]), v6 = strchr(host, ':') != 0;
    int flags = strcmp(mode, "flags") == 0 ? SOCK_NONBLOCK | SOCK_CLOEXEC : 0;
    struct sockaddr_storage to = {0};
    socklen_t len;
    if (v6) {
        struct sockaddr_in6 *a = (void *)&to;
        a->sin6_family = AF_INET6; a->sin6_port = htons(port);
        inet_pton(AF_INET6, host, &a->sin6_addr); len = sizeof *a;
    } else {
        struct sockaddr_in *a = (void *)&to;
        a->sin_family = AF_INET; a->sin_port = htons(port);
        inet_pton(AF_INET, host, &a->sin_addr); len = sizeof *a;
    }
    int s = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | flags, 0);
    if (s < 0) { perror("socket"); return 1; }
    if (connect(s, (struct sockaddr *)&to, len)) {
        if (errno != EINPROGRESS) { perror("connect"); return 1; }
        wait_for(s, POLLOUT);
        int err = 0; socklen_t el = sizeof err;
        getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &el);
        if (err) { errno = err; perror("connect"); return 1; }
    }
    int proto = -1; socklen_t pl = sizeof proto;
    getsockopt(s, SOL_SOCKET, SO_PROTOCOL, &proto, &pl);
    printf("self %d\n", proto);
    fflush(stdout);
    char buf[65536];
    if (strcmp(mode, "get") == 0) {
        char req[512];
        int n = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\n\r\n", argc > 4 ? argv[4] : "/");
        if (write(s, req, n) != n) { perror("write"); return 1; }
        long total = 0, body = -1;
        char last[4] = {0};
        for (;;) {
            ssize_t r = read(s, buf, sizeof buf);
            if (r < 0) { perror("read"); return 1; }
            if (r == 0) break;
            total += r;
            if (body >= 0) { body += r; continue; }
            for (ssize_t i = 0; i < r; i++) {
                last[0] = last[1]; last[1] = last[2]; last[2] = last[3]; last[3] = buf[i];
                if (memcmp(last, "\r\n\r\n", 4) == 0) { body = r - i - 1; break; }
            }
        }
        printf("body %ld\n", body);
        return 0;
    }
    if (write(s, "hello\n", 6) != 6) { perror("write"); return 1; }
    size_t got = 0;
    while (got < sizeof buf - 1 && (got == 0 || buf[got - 1] != '\n')) {
        if (flags) wait_for(s, POLLIN);
        ssize_t r = read(s, buf + got, sizeof buf - 1 - got);
        if (r <= 0) { perror("read"); return 1; }
        got += r;
    }
    buf[got] = 0;
    printf("answer %s", buf);
    fflush(stdout);
    if (argc > 4) usleep(atoi(argv[4]) * 1000);
    return 0;
}
