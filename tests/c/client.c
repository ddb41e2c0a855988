/* tests/test_kernel_backend.py's static client (util.build_c, -static): what no LD_PRELOAD reaches. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* client HOST PORT MODE SLEEP_MS
 *   MODE plain: connect, send, sleep, send, close
 *   MODE reset: set IP_TOS 0xb8 itself before connect, IP_TOS 0 after connect (as OpenSSH
 *               does after login), then send: the data shows which value the socket has */
int main(int argc, char **argv) {
    if (argc < 5) return 2;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    inet_pton(AF_INET, argv[1], &a.sin_addr);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    int reset = strcmp(argv[3], "reset") == 0, v = 0xb8, zero = 0;
    if (reset) setsockopt(s, IPPROTO_IP, IP_TOS, &v, sizeof v);
    if (connect(s, (struct sockaddr *)&a, sizeof a)) { perror("connect"); return 1; }
    if (reset && setsockopt(s, IPPROTO_IP, IP_TOS, &zero, sizeof zero)) { perror("IP_TOS"); return 1; }
    if (write(s, "hello\n", 6) < 0) perror("write"); /* reported; the exit status stays 0 */
    usleep(atoi(argv[4]) * 1000);
    if (write(s, "bye\n", 4) < 0) perror("write");
    close(s);
    return 0;
}
