// A process that lives about a millisecond: main -> middle -> leaf spins for 1 ms of wall-clock
// time, then exits. Run thousands of times in a row, like a build's or a shell script's
// commands.
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

__attribute__((noinline)) static void leaf(double end) {
    volatile unsigned long x = 0;
    while (now() < end)
        for (int i = 0; i < 1000; i++) x += i;
}

__attribute__((noinline)) static void middle(double end) {
    leaf(end);
    __asm__ volatile("");
}

int main(void) {
    middle(now() + 0.001);
    return 0;
}
