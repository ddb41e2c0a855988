/* Checks libsockwrap's own memory functions (crates/preload/src/mem.c, compiled into this
 * program under other names) against byte-by-byte references: every length 0..300, every
 * source and destination offset 0..31 within a buffer, overlapping copies both ways.
 * Exit 0 when all agree; prints the first disagreement otherwise. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void *sw_memcpy(void *, const void *, size_t);
void *sw_memmove(void *, const void *, size_t);
void *sw_memset(void *, int, size_t);
int sw_memcmp(const void *, const void *, size_t);
size_t sw_strlen(const char *);

#define N 400
static unsigned char a[N], b[N], ref[N];

static void fill(unsigned char *p, unsigned seed) {
    for (int i = 0; i < N; i++) p[i] = (unsigned char)(seed * 31 + i * 7 + 1);
}

static int sign(int x) { return (x > 0) - (x < 0); }

int main(void) {
    for (size_t n = 0; n <= 300; n++) {
        for (size_t so = 0; so < 32; so++) {
            for (size_t d = 0; d < 32; d++) {
                /* memcpy, disjoint */
                fill(a, 1); fill(b, 2); memcpy(ref, b, N);
                for (size_t i = 0; i < n; i++) ref[d + i] = a[so + i];
                if (sw_memcpy(b + d, a + so, n) != b + d || memcmp(b, ref, N)) {
                    printf("memcpy n=%zu src+%zu dst+%zu\n", n, so, d);
                    return 1;
                }
                /* memmove within one buffer, both directions */
                fill(a, 3); memcpy(ref, a, N);
                memmove(ref + d, ref + so, n); /* libc's as the reference */
                if (sw_memmove(a + d, a + so, n) != a + d || memcmp(a, ref, N)) {
                    printf("memmove n=%zu src+%zu dst+%zu\n", n, so, d);
                    return 1;
                }
            }
            /* memset */
            fill(a, 4); memcpy(ref, a, N);
            for (size_t i = 0; i < n; i++) ref[so + i] = (unsigned char)(0x5a + n);
            if (sw_memset(a + so, 0x5a + (int)n, n) != a + so || memcmp(a, ref, N)) {
                printf("memset n=%zu dst+%zu\n", n, so);
                return 1;
            }
            /* memcmp: equal, then one byte different at each place */
            fill(a, 5); fill(b, 5);
            if (sw_memcmp(a + so, b + so, n) != 0) {
                printf("memcmp equal n=%zu\n", n);
                return 1;
            }
            for (size_t k = 0; k < n; k++) {
                b[so + k] ^= 0x80;
                if (sign(sw_memcmp(a + so, b + so, n)) != sign(memcmp(a + so, b + so, n))) {
                    printf("memcmp n=%zu diff at %zu\n", n, k);
                    return 1;
                }
                b[so + k] ^= 0x80;
            }
            /* strlen at every alignment */
            memset(a, 'x', N);
            a[so + n] = 0;
            if (sw_strlen((const char *)a + so) != n) {
                printf("strlen n=%zu at +%zu\n", n, so);
                return 1;
            }
        }
    }
    puts("ok");
    return 0;
}
