/* A daemon-like program: optionally close every fd >= FROM (close_range), then open FILE,
 * connect to 127.0.0.1:PORT, send a line, write "DATA\n" to FILE.
 * usage: daemon FROM|-1 FILE PORT   (-1: close nothing) */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 4) return 2;
    int from = atoi(argv[1]);
    if (from >= 0 && syscall(SYS_close_range, (unsigned)from, ~0U, 0) != 0) return 3;
    int f = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (f < 0) return 4;
    char msg[64];
    snprintf(msg, sizeof msg, "fd %d\n", f);
    for (int i = 0; i < 3; i++) {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        if (s < 0) return 5;
        int tos = 0;
        setsockopt(s, IPPROTO_IP, IP_TOS, &tos, sizeof tos); /* overridden: info log */
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[3]))};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (connect(s, (struct sockaddr *)&a, sizeof a) != 0) return 6;
        setsockopt(s, IPPROTO_IP, IP_TOS, &tos, sizeof tos);
        if (write(s, "hello\n", 6) != 6) return 7;
        close(s);
    }
    if (write(f, "DATA\n", 5) != 5) return 8;
    close(f);
    /* fd 1 may be closed too: report on stdout only if it is there */
    (void)!write(1, msg, strlen(msg));
    return 0;
}
