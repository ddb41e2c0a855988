/* tests/test_trace_kernel.py's io_uring client (util.build_c, liburing linked static). */
#include <arpa/inet.h>
#include <liburing.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* uring PORT N M: as the static client, every socket operation through io_uring
 * (IORING_OP_SOCKET, CONNECT, SEND, RECV, CLOSE): the library sees none of them. */
static struct io_uring ring;

static int one(void) {
    struct io_uring_cqe *cqe;
    io_uring_submit(&ring);
    int e = io_uring_wait_cqe(&ring, &cqe);
    if (e < 0) return e;
    int res = cqe->res;
    io_uring_cqe_seen(&ring, cqe);
    return res;
}

int main(int argc, char **argv) {
    int port = atoi(argv[1]);
    long n = atol(argv[2]), m = atol(argv[3]);
    if (io_uring_queue_init(8, &ring, 0)) { fprintf(stderr, "io_uring_queue_init failed\n"); return 1; }
    io_uring_prep_socket(io_uring_get_sqe(&ring), AF_INET, SOCK_STREAM, 0, 0);
    int s = one();
    if (s < 0) { fprintf(stderr, "socket: %s\n", strerror(-s)); return 1; }
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    io_uring_prep_connect(io_uring_get_sqe(&ring), s, (struct sockaddr *)&a, sizeof a);
    int r = one();
    if (r < 0) { fprintf(stderr, "connect: %s\n", strerror(-r)); return 1; }
    static char buf[65536];
    memset(buf, 'u', sizeof buf);
    long sent = 0, got = 0;
    while (sent < n) {
        io_uring_prep_send(io_uring_get_sqe(&ring), s, buf,
                           n - sent > (long)sizeof buf ? sizeof buf : n - sent, 0);
        r = one();
        if (r <= 0) { fprintf(stderr, "send: %s\n", strerror(-r)); return 1; }
        sent += r;
    }
    while (got < m) {
        io_uring_prep_recv(io_uring_get_sqe(&ring), s, buf, sizeof buf, 0);
        r = one();
        if (r <= 0) break;
        got += r;
    }
    io_uring_prep_close(io_uring_get_sqe(&ring), s);
    one();
    printf("pid %d got %ld\n", getpid(), got);
    return 0;
}
