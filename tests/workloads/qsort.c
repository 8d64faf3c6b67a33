/* Time inside libc for the unwinder tests: main -> sort_many -> qsort (libc) -> ... ->
 * compare_keys. compare_keys does enough work that most samples land in it, under libc's
 * frames. Runs for argv[1] seconds (default 5). */
#include <stdlib.h>
#include <time.h>

#define NOINLINE __attribute__((noinline))
#define COUNT 20000

volatile unsigned long sink;

NOINLINE int compare_keys(const void *a, const void *b) {
    unsigned long x = *(const unsigned long *)a, y = *(const unsigned long *)b;
    for (int i = 0; i < 50; i++) sink += x ^ y;
    return (x > y) - (x < y);
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

NOINLINE void sort_many(double seconds) {
    static unsigned long keys[COUNT];
    unsigned long seed = 88172645463325252UL;
    double end = now() + seconds;
    while (now() < end) {
        for (int i = 0; i < COUNT; i++) {
            seed ^= seed << 13; seed ^= seed >> 7; seed ^= seed << 17;
            keys[i] = seed;
        }
        qsort(keys, COUNT, sizeof keys[0], compare_keys);
    }
    sink++;
}

int main(int argc, char **argv) {
    sort_many(argc > 1 ? atof(argv[1]) : 5.0);
    return 0;
}
