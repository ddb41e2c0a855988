/* Main loop: socket/connect/setsockopt/close N times to 127.0.0.1:PORT, while a SIGALRM
 * handler (every 100 us) does socket/setsockopt/close.  Must finish (no deadlock). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static volatile sig_atomic_t handled, handler_fail;

static void on_alarm(int sig) {
    (void)sig;
    int saved = errno;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd >= 0) {
        int one = 1, tos = 0x10;
        if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0) handler_fail++;
        setsockopt(fd, IPPROTO_IP, IP_TOS, &tos, sizeof tos);
        close(fd);
    } else {
        handler_fail++;
    }
    handled++;
    errno = saved;
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    int port = atoi(argv[1]), n = atoi(argv[2]);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGALRM, &sa, NULL);
    struct itimerval it = {{0, 100}, {0, 100}};
    setitimer(ITIMER_REAL, &it, NULL);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int ok = 0, bad = 0;
    for (int i = 0; i < n; i++) {
        int fd;
        do fd = socket(AF_INET, SOCK_STREAM, 0); while (fd < 0 && errno == EINTR);
        if (fd < 0) { bad++; continue; }
        int r = connect(fd, (struct sockaddr *)&a, sizeof a);
        if (r < 0 && errno == EINTR) {
            /* connect continues in the background: wait for it */
            fd_set w; FD_ZERO(&w); FD_SET(fd, &w);
            struct timeval tv = {5, 0};
            while (select(fd + 1, NULL, &w, NULL, &tv) < 0 && errno == EINTR) {}
            int err = 0; socklen_t l = sizeof err;
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &l);
            r = err ? -1 : 0;
        }
        int one = 1;
        if (r == 0 && setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == 0) ok++;
        else bad++;
        close(fd);
    }
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, NULL);
    printf("ok %d bad %d handled %d handler_fail %d\n", ok, bad, (int)handled, (int)handler_fail);
    return bad == 0 && handler_fail == 0 ? 0 : 1;
}
