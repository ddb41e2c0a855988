/* floor.c: the cheapest possible LD_PRELOAD interposer, the floor of LD_PRELOAD cost.
 * Resolves the real functions once at load with dlsym(RTLD_NEXT) and does nothing else.
 * Hooks the same 14 symbols as libsockwrap.so (nm -D), so that both pay for the same
 * interposition; closefrom returns nothing and close_range/closefrom may be missing from
 * an old libc (then they are left unresolved and never called).
 * Build: cc -O2 -shared -fPIC -o floor.so floor.c -ldl */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <sys/socket.h>

typedef int (*socket_f)(int, int, int);
typedef int (*addr_f)(int, const struct sockaddr *, socklen_t);
typedef int (*listen_f)(int, int);
typedef int (*accept_f)(int, struct sockaddr *, socklen_t *);
typedef int (*accept4_f)(int, struct sockaddr *, socklen_t *, int);
typedef int (*setsockopt_f)(int, int, int, const void *, socklen_t);
typedef int (*dup_f)(int);
typedef int (*dup2_f)(int, int);
typedef int (*dup3_f)(int, int, int);
typedef int (*getsockopt_f)(int, int, int, void *, socklen_t *);
typedef int (*close_f)(int);
typedef int (*close_range_f)(unsigned, unsigned, int);
typedef void (*closefrom_f)(int);

static socket_f r_socket;
static addr_f r_connect, r_bind;
static listen_f r_listen;
static accept_f r_accept;
static accept4_f r_accept4;
static setsockopt_f r_setsockopt;
static dup_f r_dup;
static dup2_f r_dup2;
static dup3_f r_dup3;
static getsockopt_f r_getsockopt;
static close_f r_close;
static close_range_f r_close_range;
static closefrom_f r_closefrom;

__attribute__((constructor)) static void floor_init(void) {
    r_socket = (socket_f)dlsym(RTLD_NEXT, "socket");
    r_connect = (addr_f)dlsym(RTLD_NEXT, "connect");
    r_bind = (addr_f)dlsym(RTLD_NEXT, "bind");
    r_listen = (listen_f)dlsym(RTLD_NEXT, "listen");
    r_accept = (accept_f)dlsym(RTLD_NEXT, "accept");
    r_accept4 = (accept4_f)dlsym(RTLD_NEXT, "accept4");
    r_setsockopt = (setsockopt_f)dlsym(RTLD_NEXT, "setsockopt");
    r_dup = (dup_f)dlsym(RTLD_NEXT, "dup");
    r_dup2 = (dup2_f)dlsym(RTLD_NEXT, "dup2");
    r_dup3 = (dup3_f)dlsym(RTLD_NEXT, "dup3");
    r_getsockopt = (getsockopt_f)dlsym(RTLD_NEXT, "getsockopt");
    r_close = (close_f)dlsym(RTLD_NEXT, "close");
    r_close_range = (close_range_f)dlsym(RTLD_NEXT, "close_range");
    r_closefrom = (closefrom_f)dlsym(RTLD_NEXT, "closefrom");
}

int socket(int d, int t, int p) { return r_socket(d, t, p); }
int connect(int fd, const struct sockaddr *a, socklen_t l) { return r_connect(fd, a, l); }
int bind(int fd, const struct sockaddr *a, socklen_t l) { return r_bind(fd, a, l); }
int listen(int fd, int b) { return r_listen(fd, b); }
int accept(int fd, struct sockaddr *a, socklen_t *l) { return r_accept(fd, a, l); }
int accept4(int fd, struct sockaddr *a, socklen_t *l, int f) { return r_accept4(fd, a, l, f); }
int setsockopt(int fd, int lv, int n, const void *v, socklen_t l) { return r_setsockopt(fd, lv, n, v, l); }
int dup(int fd) { return r_dup(fd); }
int dup2(int a, int b) { return r_dup2(a, b); }
int dup3(int a, int b, int f) { return r_dup3(a, b, f); }
int getsockopt(int fd, int lv, int n, void *v, socklen_t *l) { return r_getsockopt(fd, lv, n, v, l); }
int close(int fd) { return r_close(fd); }
int close_range(unsigned a, unsigned b, int f) { return r_close_range(a, b, f); }
void closefrom(int fd) { r_closefrom(fd); }
