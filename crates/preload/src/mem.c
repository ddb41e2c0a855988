/* The memory functions the compiled Rust code calls (memcpy, memmove, memset, memcmp, bcmp,
 * strlen), defined inside libsockwrap.so and hidden.
 *
 * Rust calls an external function through its GOT entry, and the loader fills each GOT
 * entry with a symbol look-up when the library is loaded (~600 instructions each, in every
 * exec of every program under sockwrap). With these definitions linked in as objects
 * (build.rs), the link resolves the calls inside the library: no look-up, no relocation.
 * They are hidden: the program and its other libraries keep libc's own. The library's
 * copies are small (socket addresses, option values, the policy's structures moved at
 * start), where 16-byte blocks with an overlapping tail are as quick as libc's code.
 *
 * Written here because the one crate that has them, compiler_builtins with its `mem`
 * feature, is linked by rustc itself and takes that feature only with a rebuilt standard
 * library (nightly's -Z build-std).
 *
 * Compiled with -fno-builtin and -fno-tree-loop-distribute-patterns, so that the compiler
 * does not turn these loops back into calls of the functions they define. */
#include <stddef.h>
#include <stdint.h>
#if defined(__x86_64__)
#include <emmintrin.h>
#endif

#define HIDDEN __attribute__((visibility("hidden")))

/* Unaligned loads and stores that the compiler may not fuse into a call. */
typedef uint64_t __attribute__((aligned(1), may_alias)) u64u;
typedef uint32_t __attribute__((aligned(1), may_alias)) u32u;

/* Copies forward: the last 16 bytes (or the short tail) are read before anything is
 * written, and each block is read before it is written, so that an overlapping copy to a
 * lower address (memmove's forward case) is right too. */
HIDDEN void *memcpy(void *restrict dst, const void *restrict src, size_t n) {
    unsigned char *d = dst;
    const unsigned char *s = src;
    if (n >= 16) {
#if defined(__x86_64__)
        __m128i last = _mm_loadu_si128((const __m128i *)(s + n - 16));
        for (size_t i = 0; i + 16 <= n; i += 16)
            _mm_storeu_si128((__m128i *)(d + i), _mm_loadu_si128((const __m128i *)(s + i)));
        _mm_storeu_si128((__m128i *)(d + n - 16), last);
#else
        uint64_t l0 = *(const u64u *)(s + n - 16), l1 = *(const u64u *)(s + n - 8);
        for (size_t i = 0; i + 16 <= n; i += 16) {
            uint64_t a = *(const u64u *)(s + i), b = *(const u64u *)(s + i + 8);
            *(u64u *)(d + i) = a;
            *(u64u *)(d + i + 8) = b;
        }
        *(u64u *)(d + n - 16) = l0;
        *(u64u *)(d + n - 8) = l1;
#endif
    } else if (n >= 8) {
        uint64_t a = *(const u64u *)s, b = *(const u64u *)(s + n - 8);
        *(u64u *)d = a;
        *(u64u *)(d + n - 8) = b;
    } else if (n >= 4) {
        uint32_t a = *(const u32u *)s, b = *(const u32u *)(s + n - 4);
        *(u32u *)d = a;
        *(u32u *)(d + n - 4) = b;
    } else if (n > 0) {
        unsigned char a = s[0], b = s[n / 2], c = s[n - 1];
        d[0] = a;
        d[n / 2] = b;
        d[n - 1] = c;
    }
    return dst;
}

HIDDEN void *memmove(void *dst, const void *src, size_t n) {
    unsigned char *d = dst;
    const unsigned char *s = src;
    /* memcpy reads each block before it writes it, and short copies wholly first: right
     * for any overlap when short, and for a destination below the source. */
    if (n < 16 || d <= s || d >= s + n) return memcpy(dst, src, n);
    /* Overlapping, the destination above the source (a Vec insert): blocks from the end,
     * the first 16 bytes read before anything is written. */
#if defined(__x86_64__)
    __m128i first = _mm_loadu_si128((const __m128i *)s);
    for (size_t i = n; i >= 16; i -= 16)
        _mm_storeu_si128((__m128i *)(d + i - 16), _mm_loadu_si128((const __m128i *)(s + i - 16)));
    _mm_storeu_si128((__m128i *)d, first);
#else
    while (n--) d[n] = s[n];
#endif
    return dst;
}

HIDDEN void *memset(void *dst, int c, size_t n) {
    unsigned char *d = dst;
    uint64_t v = 0x0101010101010101ull * (unsigned char)c;
    if (n >= 16) {
#if defined(__x86_64__)
        __m128i w = _mm_set1_epi8((char)c);
        for (size_t i = 0; i + 16 <= n; i += 16) _mm_storeu_si128((__m128i *)(d + i), w);
        _mm_storeu_si128((__m128i *)(d + n - 16), w);
#else
        for (size_t i = 0; i + 16 <= n; i += 16) {
            *(u64u *)(d + i) = v;
            *(u64u *)(d + i + 8) = v;
        }
        *(u64u *)(d + n - 16) = v;
        *(u64u *)(d + n - 8) = v;
#endif
    } else if (n >= 8) {
        *(u64u *)d = v;
        *(u64u *)(d + n - 8) = v;
    } else if (n >= 4) {
        *(u32u *)d = (uint32_t)v;
        *(u32u *)(d + n - 4) = (uint32_t)v;
    } else if (n > 0) {
        d[0] = (unsigned char)c;
        d[n / 2] = (unsigned char)c;
        d[n - 1] = (unsigned char)c;
    }
    return dst;
}

HIDDEN int memcmp(const void *a, const void *b, size_t n) {
    const unsigned char *x = a, *y = b;
    size_t i = 0;
    /* Eight bytes at a time to the first difference, then bytewise. */
    while (i + 8 <= n && *(const u64u *)(x + i) == *(const u64u *)(y + i)) i += 8;
    for (; i < n; i++)
        if (x[i] != y[i]) return x[i] - y[i];
    return 0;
}

HIDDEN int bcmp(const void *a, const void *b, size_t n) { return memcmp(a, b, n); }

/* Sixteen bytes at a time once aligned (an aligned load never crosses into the next page,
 * so it cannot fault past the string's end): the compiled policy in the environment is
 * kilobytes long. */
HIDDEN size_t strlen(const char *s) {
    const char *p = s;
#if defined(__x86_64__)
    while ((uintptr_t)p & 15) {
        if (!*p) return (size_t)(p - s);
        p++;
    }
    const __m128i zero = _mm_setzero_si128();
    for (;;) {
        int m = _mm_movemask_epi8(_mm_cmpeq_epi8(_mm_load_si128((const __m128i *)p), zero));
        if (m) return (size_t)(p - s) + (size_t)__builtin_ctz((unsigned)m);
        p += 16;
    }
#else
    while (*p) p++;
    return (size_t)(p - s);
#endif
}
