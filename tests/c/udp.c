/* tests/test_kernel_backend.py's static udp (util.build_c, -static): what no LD_PRELOAD reaches. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* udp MODE PORT_A PORT_B N [HOST]
 *   MODE connected: one socket connected to each port, N datagrams on each
 *   MODE unconnected: one socket, sendto() N datagrams to each port, alternating
 * HOST is 127.0.0.1 by default; ::1 makes AF_INET6 sockets. */
static const char *host = "127.0.0.1";
static int family = AF_INET;
static socklen_t to(struct sockaddr_storage *ss, int port) {
    memset(ss, 0, sizeof *ss);
    if (family == AF_INET6) {
        struct sockaddr_in6 *a = (void *)ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons(port);
        inet_pton(AF_INET6, host, &a->sin6_addr);
        return sizeof *a;
    }
    struct sockaddr_in *a = (void *)ss;
    a->sin_family = AF_INET;
    a->sin_port = htons(port);
    inet_pton(AF_INET, host, &a->sin_addr);
    return sizeof *a;
}
int main(int argc, char **argv) {
    int n = atoi(argv[4]);
    if (argc > 5) host = argv[5];
    if (strchr(host, ':')) family = AF_INET6;
    struct sockaddr_storage a, b;
    socklen_t la = to(&a, atoi(argv[2])), lb = to(&b, atoi(argv[3]));
    if (strcmp(argv[1], "connected") == 0) {
        int sa = socket(family, SOCK_DGRAM, 0), sb = socket(family, SOCK_DGRAM, 0);
        if (connect(sa, (struct sockaddr *)&a, la) || connect(sb, (struct sockaddr *)&b, lb)) {
            perror("connect");
            return 1;
        }
        for (int i = 0; i < n; i++) { send(sa, "a", 1, 0); send(sb, "b", 1, 0); }
    } else {
        int s = socket(family, SOCK_DGRAM, 0);
        for (int i = 0; i < n; i++) { /* a failed sendto (a denied destination) goes on */
            sendto(s, "a", 1, 0, (struct sockaddr *)&a, la);
            sendto(s, "b", 1, 0, (struct sockaddr *)&b, lb);
        }
    }
    return 0;
}
