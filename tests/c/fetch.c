/* tests/test_kernel_backend.py's static fetch (util.build_c, -static): what no LD_PRELOAD reaches. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* fetch tcp|udp|udp-connect HOST PORT: an AF_INET socket for a dotted quad, AF_INET6 for
 * anything else (::1, ::ffff:127.0.0.1). tcp: connect, send a line, print the answer and
 * getpeername. udp: sendto one datagram, print sendto's result, then the answer and who sent
 * it. udp-connect: connect, send, print the answer, its sender and getpeername. */
static void show(const char *what, struct sockaddr_storage *ss) {
    char h[64] = "?";
    int port = 0;
    if (ss->ss_family == AF_INET) {
        struct sockaddr_in *a = (void *)ss;
        inet_ntop(AF_INET, &a->sin_addr, h, sizeof h);
        port = ntohs(a->sin_port);
    } else {
        struct sockaddr_in6 *a = (void *)ss;
        inet_ntop(AF_INET6, &a->sin6_addr, h, sizeof h);
        port = ntohs(a->sin6_port);
    }
    printf("%s %s %d\n", what, h, port);
}
int main(int argc, char **argv) {
    if (argc < 4) return 2;
    struct sockaddr_storage to = {0}, got;
    socklen_t len;
    int v6 = strchr(argv[2], ':') != 0, udp = strncmp(argv[1], "udp", 3) == 0;
    if (v6) {
        struct sockaddr_in6 *a = (void *)&to;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons(atoi(argv[3]));
        inet_pton(AF_INET6, argv[2], &a->sin6_addr);
    } else {
        struct sockaddr_in *a = (void *)&to;
        a->sin_family = AF_INET;
        a->sin_port = htons(atoi(argv[3]));
        inet_pton(AF_INET, argv[2], &a->sin_addr);
    }
    socklen_t tolen = v6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    int s = socket(v6 ? AF_INET6 : AF_INET, udp ? SOCK_DGRAM : SOCK_STREAM, 0);
    struct timeval tv = {.tv_sec = 3};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char buf[256];
    ssize_t n;
    if (strcmp(argv[1], "udp") == 0) {
        n = sendto(s, "ping\n", 5, 0, (struct sockaddr *)&to, tolen);
        printf("sendto %zd errno %d %s\n", n, n < 0 ? errno : 0, n < 0 ? strerror(errno) : "");
        fflush(stdout);
        if (n < 0) return 1;
    } else {
        if (connect(s, (struct sockaddr *)&to, tolen)) {
            printf("connect errno %d %s\n", errno, strerror(errno));
            return 1;
        }
        if (write(s, "ping\n", 5) < 0) perror("write"); /* the answer read below tells */
    }
    len = sizeof got;
    n = recvfrom(s, buf, sizeof buf - 1, 0, (struct sockaddr *)&got, &len);
    if (n < 0) { printf("no answer errno %d\n", errno); return 1; }
    buf[n] = 0;
    printf("answer %s", buf);
    if (udp) show("from", &got);
    len = sizeof got;
    if (strcmp(argv[1], "udp") != 0 && getpeername(s, (struct sockaddr *)&got, &len) == 0)
        show("peer", &got);
    return 0;
}
