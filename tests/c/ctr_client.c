/* ctr_client HOST PORT TOS: a static client for a container's rootfs (no libc there).
 * Connects to HOST:PORT (IPv4), then, when TOS >= 0, sets IP_TOS to TOS itself (after the
 * connect, as OpenSSH does after login) and prints what the kernel answers for IP_TOS then
 * (tos=0x..), sends one line and closes. Exit 0 when the line
 * was sent; 1 with the failing call on stderr otherwise. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: ctr_client HOST PORT TOS\n");
        return 2;
    }
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[2]))};
    if (inet_pton(AF_INET, argv[1], &a.sin_addr) != 1) {
        fprintf(stderr, "not an IPv4 address: %s\n", argv[1]);
        return 2;
    }
    int tos = atoi(argv[3]);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof a) != 0) {
        perror("connect");
        return 1;
    }
    if (tos >= 0 && setsockopt(s, IPPROTO_IP, IP_TOS, &tos, sizeof tos) != 0) {
        perror("IP_TOS");
        return 1;
    }
    if (tos >= 0) {
        int now = -1;
        socklen_t len = sizeof now;
        if (getsockopt(s, IPPROTO_IP, IP_TOS, &now, &len) != 0) {
            perror("getsockopt IP_TOS");
            return 1;
        }
        printf("tos=0x%x\n", now);
    }
    if (write(s, "hello\n", 6) != 6) {
        perror("write");
        return 1;
    }
    close(s);
    return 0;
}
