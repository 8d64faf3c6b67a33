/* Inlined calls for the symbol endpoint's tests, built with -O2 -g: main -> outer() ->
 * (inlined) step() -> (inlined) mix(), so the DWARF has functions with inlined instances two
 * deep, each with its own lines. Runs for argv[1] seconds (default 5). */
#include <stdlib.h>
#include <time.h>

#define NOINLINE __attribute__((noinline))
#define INLINE static inline __attribute__((always_inline))

volatile unsigned long sink;

INLINE unsigned long mix(unsigned long x) {
    x ^= x >> 31;
    x *= 0x9e3779b97f4a7c15UL;
    return x ^ (x >> 29);
}

INLINE unsigned long step(unsigned long x, int rounds) {
    for (int i = 0; i < rounds; i++)
        x = mix(x + i);
    return x;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

NOINLINE void outer(double seconds) {
    double end = now() + seconds;
    unsigned long x = 1;
    while (now() < end) {
        x = step(x, 100000);
        sink = x;
    }
}

int main(int argc, char **argv) {
    outer(argc > 1 ? atof(argv[1]) : 5.0);
    return 0;
}
