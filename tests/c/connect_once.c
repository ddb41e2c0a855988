/* tests/test_outcomes.py: connects once to 127.0.0.1:PORT, exits 0, or 3 if refused;
 * built static and dynamic (util.build_c). */
#include <arpa/inet.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>
int main(int argc, char **argv) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1]))};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    int r = connect(s, (struct sockaddr *)&a, sizeof a);
    close(s);
    return r == 0 ? 0 : 3;
}
