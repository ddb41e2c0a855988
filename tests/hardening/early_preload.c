/* A preload library whose constructor uses sockets before anyone else's constructor ran. */
#include <netinet/in.h>
#include <netinet/ip.h>
#include <sys/socket.h>
#include <unistd.h>

__attribute__((constructor)) static void early(void) {
    for (int i = 0; i < 3; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd >= 0) {
            int tos = 0x10;
            setsockopt(fd, IPPROTO_IP, IP_TOS, &tos, sizeof tos);
            close(fd);
        }
        int u = socket(AF_INET6, SOCK_DGRAM, 0);
        if (u >= 0) close(u);
    }
}
