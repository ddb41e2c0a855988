/* 32 threads x N connect/close to 127.0.0.1:PORT; each connection sets IP_TOS 0 itself
 * after connect (a lock must override it) and sends one byte.
 * Prints "fds START END" and "ok CONNECTS" ; exit 0 only if every connect worked. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int port, per_thread;
static atomic_int ok, failed;

static int count_fds(void) {
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    struct dirent *e;
    if (!d) return -1;
    while ((e = readdir(d))) if (e->d_name[0] != '.') n++;
    closedir(d);
    return n - 1; /* the directory's own fd */
}

static void *worker(void *arg) {
    (void)arg;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    for (int i = 0; i < per_thread; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0) { atomic_fetch_add(&failed, 1); continue; }
        int r;
        do r = connect(fd, (struct sockaddr *)&a, sizeof a); while (r < 0 && errno == EINTR);
        if (r == 0) {
            int zero = 0, one = 1;
            setsockopt(fd, IPPROTO_IP, IP_TOS, &zero, sizeof zero);
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            if (write(fd, "x", 1) == 1) atomic_fetch_add(&ok, 1);
            else atomic_fetch_add(&failed, 1);
        } else {
            fprintf(stderr, "connect: %s\n", strerror(errno));
            atomic_fetch_add(&failed, 1);
        }
        close(fd);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 4) return 2;
    port = atoi(argv[1]);
    int nthreads = atoi(argv[2]);
    per_thread = atoi(argv[3]);
    int start = count_fds();
    pthread_t t[256];
    for (int i = 0; i < nthreads; i++)
        if (pthread_create(&t[i], NULL, worker, NULL)) return 3;
    for (int i = 0; i < nthreads; i++) pthread_join(t[i], NULL);
    int end = count_fds();
    printf("fds %d %d\nok %d failed %d\n", start, end, ok, failed);
    return failed == 0 && start == end ? 0 : 1;
}
