/* A client that resolves a name with one of libc's gethostbyname forms (Python's socket
 * module only reaches getaddrinfo, even for socket.gethostbyname_ex): the host-name tests
 * need each form to be the only resolution the process makes.
 *
 *   resolve_connect FUNC NAME ADDR PORT
 *
 * First connects to ADDR:PORT without having resolved anything, then resolves NAME with
 * FUNC (gethostbyname, gethostbyname2, gethostbyname_r, gethostbyname2_r; AF_INET) and
 * connects to the first address of the answer, the same port. Each connect sends "ping"
 * and waits for the server's reply before the next, so the server sees them in this order.
 * Prints one JSON line per connect: {"step":"addr"|"name","addr":"...","ok":true|false}. */
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int talk(const char *step, struct in_addr ip, int port) {
    char text[INET_ADDRSTRLEN] = "?";
    inet_ntop(AF_INET, &ip, text, sizeof text);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr = ip};
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int ok = fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
             write(fd, "ping", 4) == 4;
    char reply[16];
    if (ok) ok = read(fd, reply, sizeof reply) > 0;
    printf("{\"step\":\"%s\",\"addr\":\"%s\",\"ok\":%s}\n", step, text, ok ? "true" : "false");
    fflush(stdout);
    if (fd >= 0) close(fd);
    return ok;
}

static struct hostent *resolve(const char *func, const char *name) {
    static struct hostent he;
    static char buf[8192];
    struct hostent *h = NULL;
    int herr = 0;
    if (!strcmp(func, "gethostbyname")) return gethostbyname(name);
    if (!strcmp(func, "gethostbyname2")) return gethostbyname2(name, AF_INET);
    if (!strcmp(func, "gethostbyname_r")) {
        if (gethostbyname_r(name, &he, buf, sizeof buf, &h, &herr) != 0) return NULL;
        return h;
    }
    if (!strcmp(func, "gethostbyname2_r")) {
        if (gethostbyname2_r(name, AF_INET, &he, buf, sizeof buf, &h, &herr) != 0) return NULL;
        return h;
    }
    fprintf(stderr, "unknown function %s\n", func);
    exit(2);
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s FUNC NAME ADDR PORT\n", argv[0]);
        return 2;
    }
    int port = atoi(argv[4]);
    struct in_addr direct;
    if (inet_pton(AF_INET, argv[3], &direct) != 1) return 2;
    int ok = talk("addr", direct, port);
    struct hostent *h = resolve(argv[1], argv[2]);
    if (!h || h->h_addrtype != AF_INET || !h->h_addr_list[0]) {
        fprintf(stderr, "%s(%s) found nothing\n", argv[1], argv[2]);
        return 1;
    }
    struct in_addr ip;
    memcpy(&ip, h->h_addr_list[0], sizeof ip);
    ok &= talk("name", ip, port);
    return ok ? 0 : 1;
}
