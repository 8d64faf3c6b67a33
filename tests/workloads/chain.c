/* A known call chain for profiler tests: main -> outer -> middle -> leaf_a / leaf_b.
 * middle() gives leaf_a three times the work of leaf_b, so a correct profiler splits their
 * samples 75% / 25%. Runs for argv[1] seconds (default 5), after sleeping argv[2] seconds (default
 * 0: a profiler started before it has that long to describe the new process). */
#include <stdlib.h>
#include <time.h>

#define NOINLINE __attribute__((noinline))
#define UNIT 200000UL

volatile unsigned long sink;

NOINLINE void leaf_a(unsigned long n) {
    for (unsigned long i = 0; i < n; i++) sink += i;
}

NOINLINE void leaf_b(unsigned long n) {
    for (unsigned long i = 0; i < n; i++) sink += i;
}

NOINLINE void middle(void) {
    leaf_a(3 * UNIT);
    leaf_b(UNIT);
    sink++; /* not a tail call: at -O2 middle() stays on the stack under leaf_b() */
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

NOINLINE void outer(double seconds) {
    double end = now() + seconds;
    while (now() < end) middle();
}

int main(int argc, char **argv) {
    if (argc > 2) {
        double pause = atof(argv[2]);
        struct timespec ts = {(time_t)pause, (long)((pause - (time_t)pause) * 1e9)};
        nanosleep(&ts, NULL);
    }
    outer(argc > 1 ? atof(argv[1]) : 5.0);
    return 0;
}
