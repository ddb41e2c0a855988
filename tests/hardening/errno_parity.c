/* Every hooked call with failing (and a few succeeding) inputs: prints "CASE rc errno" per
 * line.  Run with and without libsockwrap.so: the output must be identical.
 * usage: errno_parity CLOSED_PORT */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define SENTINEL 4242
#define CHECK(name, expr) do { errno = SENTINEL; long _r = (long)(expr); int _e = errno; \
    printf("%-34s rc=%s errno=%s\n", name, _r < 0 ? "-1" : "ok", \
           _e == SENTINEL ? "unchanged" : strerrorname_np(_e) ? strerrorname_np(_e) : "?"); } while (0)

static struct sockaddr_in lo(int port) {
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    setvbuf(stdout, NULL, _IOLBF, 0);
    int closed = atoi(argv[1]);
    struct sockaddr_in cl = lo(closed);
    int one = 1, tos = 0x10;
    int nf = open("/dev/null", O_RDWR);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;

    CHECK("socket bad family", socket(12345, SOCK_STREAM, 0));
    CHECK("socket bad type", socket(AF_INET, 77, 0));
    CHECK("socket bad protocol", socket(AF_INET, SOCK_STREAM, 99));
    CHECK("socket udp with tcp proto", socket(AF_INET, SOCK_DGRAM, IPPROTO_TCP));
    CHECK("socket ipv6 tcp ok", socket(AF_INET6, SOCK_STREAM, 0));

    /* bad fds */
    CHECK("connect fd -1", connect(-1, (struct sockaddr *)&cl, sizeof cl));
    CHECK("connect fd 9999", connect(9999, (struct sockaddr *)&cl, sizeof cl));
    CHECK("bind fd -1", bind(-1, (struct sockaddr *)&cl, sizeof cl));
    CHECK("listen fd -1", listen(-1, 5));
    CHECK("accept fd -1", accept(-1, NULL, NULL));
    CHECK("accept4 fd -1", accept4(-1, NULL, NULL, SOCK_CLOEXEC));
    CHECK("setsockopt fd -1", setsockopt(-1, IPPROTO_IP, IP_TOS, &tos, sizeof tos));
    CHECK("setsockopt fd 9999", setsockopt(9999, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one));
    CHECK("getsockopt fd -1", getsockopt(-1, IPPROTO_IP, IP_TOS, &tos, &sl));
    CHECK("close fd -1", close(-1));
    CHECK("dup2 fd -1", dup2(-1, 50));

    /* not a socket */
    CHECK("connect non-socket", connect(nf, (struct sockaddr *)&cl, sizeof cl));
    CHECK("bind non-socket", bind(nf, (struct sockaddr *)&cl, sizeof cl));
    CHECK("listen non-socket", listen(nf, 5));
    CHECK("accept non-socket", accept(nf, NULL, NULL));
    CHECK("accept4 non-socket", accept4(nf, NULL, NULL, 0));
    CHECK("setsockopt non-socket", setsockopt(nf, IPPROTO_IP, IP_TOS, &tos, sizeof tos));
    CHECK("setsockopt non-socket keepalive", setsockopt(nf, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one));

    /* bad arguments on a fresh TCP socket */
    int s = socket(AF_INET, SOCK_STREAM, 0);
    CHECK("connect addrlen 3", connect(s, (struct sockaddr *)&cl, 3));
    CHECK("connect NULL addr", connect(s, NULL, sizeof cl));
    struct sockaddr_in6 six;
    memset(&six, 0, sizeof six);
    six.sin6_family = AF_INET6;
    six.sin6_addr = in6addr_loopback;
    six.sin6_port = htons(closed);
    CHECK("connect v6 addr on v4 socket", connect(s, (struct sockaddr *)&six, sizeof six));
    CHECK("bind addrlen 3", bind(s, (struct sockaddr *)&cl, 3));
    struct sockaddr_in foreign = lo(0);
    foreign.sin_addr.s_addr = inet_addr("192.0.2.77");
    CHECK("bind foreign address", bind(s, (struct sockaddr *)&foreign, sizeof foreign));
    CHECK("setsockopt bad level", setsockopt(s, 12345, 1, &one, sizeof one));
    CHECK("setsockopt bad optname", setsockopt(s, IPPROTO_TCP, 12345, &one, sizeof one));
    CHECK("setsockopt IP_TOS optlen 0", setsockopt(s, IPPROTO_IP, IP_TOS, &tos, 0));
    CHECK("setsockopt IP_TOS NULL", setsockopt(s, IPPROTO_IP, IP_TOS, NULL, 4));
    CHECK("setsockopt NODELAY optlen 1", setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, 1));
    CHECK("setsockopt KEEPIDLE 0", setsockopt(s, IPPROTO_TCP, TCP_KEEPIDLE, &(int){0}, sizeof(int)));
    CHECK("setsockopt CONGESTION bogus", setsockopt(s, IPPROTO_TCP, TCP_CONGESTION, "nosuchcc", 8));
    CHECK("setsockopt IP_TOS ok", setsockopt(s, IPPROTO_IP, IP_TOS, &tos, sizeof tos));
    CHECK("accept not listening", accept(s, NULL, NULL));
    CHECK("connect refused", connect(s, (struct sockaddr *)&cl, sizeof cl));
    CHECK("connect refused again", connect(s, (struct sockaddr *)&cl, sizeof cl));
    close(s);

    /* a listener (the program's own) and a non-blocking connect to it */
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in la = lo(0);
    CHECK("bind listener", bind(l, (struct sockaddr *)&la, sizeof la));
    CHECK("bind twice", bind(l, (struct sockaddr *)&la, sizeof la));
    CHECK("listen", listen(l, 16));
    socklen_t ll = sizeof la;
    getsockname(l, (struct sockaddr *)&la, &ll);
    int nb = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    CHECK("connect nonblocking", connect(nb, (struct sockaddr *)&la, sizeof la));
    CHECK("connect nonblocking again", connect(nb, (struct sockaddr *)&la, sizeof la));
    usleep(50000);
    CHECK("connect nonblocking done", connect(nb, (struct sockaddr *)&la, sizeof la));
    CHECK("setsockopt connected IP_TOS ok", setsockopt(nb, IPPROTO_IP, IP_TOS, &tos, sizeof tos));
    CHECK("setsockopt connected IP_TOS optlen 0", setsockopt(nb, IPPROTO_IP, IP_TOS, &tos, 0));
    CHECK("setsockopt connected IP_TOS NULL", setsockopt(nb, IPPROTO_IP, IP_TOS, NULL, 4));
    CHECK("setsockopt connected NODELAY NULL", setsockopt(nb, IPPROTO_TCP, TCP_NODELAY, NULL, 4));
    CHECK("setsockopt connected KEEPALIVE ok", setsockopt(nb, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one));
    CHECK("setsockopt connected KEEPIDLE 0", setsockopt(nb, IPPROTO_TCP, TCP_KEEPIDLE, &(int){0}, sizeof(int)));
    CHECK("setsockopt connected CONGESTION bogus", setsockopt(nb, IPPROTO_TCP, TCP_CONGESTION, "nosuchcc", 8));
    CHECK("accept ok", accept(l, NULL, NULL));
    int lnb = fcntl(l, F_GETFL);
    fcntl(l, F_SETFL, lnb | O_NONBLOCK);
    CHECK("accept4 nonblock empty", accept4(l, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK));
    CHECK("accept empty nonblocking", accept(l, NULL, NULL));
    CHECK("accept4 bad flags", accept4(l, NULL, NULL, 0x7fff0000));
    sl = 1;
    CHECK("getsockname small", getsockname(l, (struct sockaddr *)&ss, &sl));

    int nb2 = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    CHECK("connect nonblocking refused", connect(nb2, (struct sockaddr *)&cl, sizeof cl));
    usleep(50000);
    CHECK("connect nonblocking refused later", connect(nb2, (struct sockaddr *)&cl, sizeof cl));

    /* UDP */
    int u = socket(AF_INET, SOCK_DGRAM, 0);
    CHECK("listen udp", listen(u, 5));
    CHECK("accept udp", accept(u, NULL, NULL));
    CHECK("setsockopt udp NODELAY", setsockopt(u, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one));
    CHECK("connect udp ok", connect(u, (struct sockaddr *)&cl, sizeof cl));
    CHECK("setsockopt udp IP_TOS ok", setsockopt(u, IPPROTO_IP, IP_TOS, &tos, sizeof tos));

    /* AF_UNIX passes through */
    int x = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un un;
    memset(&un, 0, sizeof un);
    un.sun_family = AF_UNIX;
    strcpy(un.sun_path, "/nonexistent/sockwrap-errno");
    CHECK("connect unix missing", connect(x, (struct sockaddr *)&un, sizeof un));
    CHECK("setsockopt unix IP_TOS", setsockopt(x, IPPROTO_IP, IP_TOS, &tos, sizeof tos));
    CHECK("setsockopt unix NODELAY", setsockopt(x, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one));

    /* successful calls leave errno alone */
    int g = socket(AF_INET, SOCK_STREAM, 0);
    CHECK("setsockopt keepalive ok", setsockopt(g, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one));
    CHECK("connect ok", connect(g, (struct sockaddr *)&la, sizeof la));
    CHECK("close ok", close(g));
    return 0;
}
