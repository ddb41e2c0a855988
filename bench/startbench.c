/* startbench.c: process start cost, variants interleaved round-robin.
 * usage: startbench ROUNDS PROG -- NAME [KEY=VAL...] -- NAME [KEY=VAL...] ...
 * Each round runs PROG once per variant (posix_spawn + waitpid), starting at a rotating
 * variant so that no variant always follows the same one. The environment of each variant is
 * this process's environment without LD_PRELOAD and SOCKWRAP_*, plus the variant's KEY=VALs.
 * Prints one line per variant: NAME median_us p25_us p75_us paired_median_diff_vs_first_us */
#define _GNU_SOURCE
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;
#define MAXV 16

static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}
static int cmpd(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}
static double pct(double *v, int n, double p) {
    double *c = malloc(n * sizeof *c);
    memcpy(c, v, n * sizeof *c);
    qsort(c, n, sizeof *c, cmpd);
    double r = c[(int)(p * (n - 1) + 0.5)];
    free(c);
    return r;
}

int main(int argc, char **argv) {
    if (argc < 5) { fprintf(stderr, "usage: startbench ROUNDS PROG -- NAME [K=V..] ...\n"); return 2; }
    int rounds = atoi(argv[1]);
    char *prog = argv[2];
    char *names[MAXV];
    char **envs[MAXV];
    int nv = 0;
    int nbase = 0;
    for (char **e = environ; *e; e++) nbase++;
    for (int i = 3; i < argc; i++) {
        if (strcmp(argv[i], "--") != 0) continue;
        if (i + 1 >= argc || nv == MAXV) break;
        names[nv] = argv[++i];
        char **env = calloc(nbase + argc + 1, sizeof(char *));
        int k = 0;
        for (char **e = environ; *e; e++)
            if (strncmp(*e, "LD_PRELOAD=", 11) && strncmp(*e, "SOCKWRAP_", 9)) env[k++] = *e;
        while (i + 1 < argc && strcmp(argv[i + 1], "--") != 0) env[k++] = argv[++i];
        env[k] = NULL;
        envs[nv++] = env;
    }
    double *t = calloc((size_t)rounds * nv, sizeof(double));
    char *cargv[] = {prog, NULL};
    for (int r = 0; r < rounds; r++) {
        for (int j = 0; j < nv; j++) {
            int v = (r + j) % nv;
            pid_t pid;
            double t0 = now_us();
            if (posix_spawn(&pid, prog, NULL, NULL, cargv, envs[v]) != 0) { perror("posix_spawn"); return 1; }
            int st;
            if (waitpid(pid, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
                fprintf(stderr, "variant %s: %s failed (status %d)\n", names[v], prog, st);
                return 1;
            }
            t[(size_t)v * rounds + r] = now_us() - t0;
        }
    }
    double *d = calloc(rounds, sizeof(double));
    for (int v = 0; v < nv; v++) {
        double *x = t + (size_t)v * rounds;
        for (int r = 0; r < rounds; r++) d[r] = x[r] - t[r];
        printf("%s %.2f %.2f %.2f %.2f\n", names[v], pct(x, rounds, 0.5), pct(x, rounds, 0.25),
               pct(x, rounds, 0.75), pct(d, rounds, 0.5));
    }
    return 0;
}
