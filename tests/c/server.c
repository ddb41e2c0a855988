/* tests/test_kernel_backend.py's static server (util.build_c, -static): what no LD_PRELOAD reaches. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* server PORT [HOST]: accept one connection, read it to the end, answer, exit. HOST is
 * 127.0.0.1 by default; an address with a colon (::1, ::ffff:127.0.0.1) makes an AF_INET6
 * listener. */
int main(int argc, char **argv) {
    const char *host = argc > 2 ? argv[2] : "127.0.0.1";
    struct sockaddr_storage ss = {0};
    socklen_t len;
    int v6 = strchr(host, ':') != 0;
    if (v6) {
        struct sockaddr_in6 *a = (void *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons(atoi(argv[1]));
        inet_pton(AF_INET6, host, &a->sin6_addr);
        len = sizeof *a;
    } else {
        struct sockaddr_in *a = (void *)&ss;
        a->sin_family = AF_INET;
        a->sin_port = htons(atoi(argv[1]));
        inet_pton(AF_INET, host, &a->sin_addr);
        len = sizeof *a;
    }
    int s = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(s, (struct sockaddr *)&ss, len) || listen(s, 4)) { perror("listen"); return 1; }
    printf("listening\n");
    fflush(stdout);
    int c = accept(s, 0, 0);
    if (c < 0) { perror("accept"); return 1; }
    char buf[256];
    ssize_t n = read(c, buf, sizeof buf);
    if (write(c, "answer\n", 7) < 0) perror("write"); /* reported; the exit status stays 0 */
    (void)n;
    usleep(200000);
    close(c);
    return 0;
}
