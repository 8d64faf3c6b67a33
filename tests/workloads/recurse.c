/* Deep recursion for the unwinder tests: main -> descend() argv[2] times (default 150) ->
 * spin(). Built with -O2 -fomit-frame-pointer; the store after each call keeps the recursion a
 * real one (no tail call, no loop). Runs for argv[1] seconds (default 5). */
#include <stdlib.h>
#include <time.h>

#define NOINLINE __attribute__((noinline))
#define DEPTH 150

volatile unsigned long sink;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

NOINLINE unsigned long spin(double seconds) {
    double end = now() + seconds;
    unsigned long n = 0;
    while (now() < end)
        for (int i = 0; i < 100000; i++) sink += n++;
    return n;
}

NOINLINE unsigned long descend(int depth, double seconds) {
    if (depth == 0) return spin(seconds);
    unsigned long result = descend(depth - 1, seconds);
    sink = result;
    return result + 1;
}

int main(int argc, char **argv) {
    int depth = argc > 2 ? atoi(argv[2]) : DEPTH;
    descend(depth > 0 ? depth - 1 : 0, argc > 1 ? atof(argv[1]) : 5.0);
    return 0;
}
