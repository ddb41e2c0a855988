/* tests/test_trace_kernel.py's static client (util.build_c, -static). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* client PORT N M [TOS]: connects to 127.0.0.1:PORT, writes N bytes, reads M, closes.
 * With TOS: sets IP_TOS to it after connect and prints what getsockopt reads back. */
int main(int argc, char **argv) {
    int port = atoi(argv[1]);
    long n = atol(argv[2]), m = atol(argv[3]);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (connect(s, (struct sockaddr *)&a, sizeof a)) { perror("connect"); return 1; }
    if (argc > 4) {
        int t = (int)strtol(argv[4], 0, 0), got = 0;
        socklen_t len = sizeof got;
        setsockopt(s, IPPROTO_IP, IP_TOS, &t, sizeof t);
        getsockopt(s, IPPROTO_IP, IP_TOS, &got, &len);
        printf("tos 0x%x\n", got);
    }
    static char buf[65536];
    memset(buf, 'x', sizeof buf);
    long sent = 0, got = 0;
    while (sent < n) {
        ssize_t w = write(s, buf, n - sent > (long)sizeof buf ? sizeof buf : n - sent);
        if (w <= 0) { perror("write"); return 1; }
        sent += w;
    }
    while (got < m) {
        ssize_t r = read(s, buf, sizeof buf);
        if (r <= 0) break;
        got += r;
    }
    printf("pid %d got %ld\n", getpid(), got);
    fflush(stdout);
    close(s);
    return 0;
}
