/* Time inside the vDSO: main -> read_clocks -> clock_gettime (the kernel's vDSO, no system
 * call) in a loop, for argv[1] seconds (default 5). Most samples land in `[vdso]`. */
#include <stdlib.h>
#include <time.h>

#define NOINLINE __attribute__((noinline))

volatile long sink;

NOINLINE void read_clocks(double seconds) {
    struct timespec ts, end;
    clock_gettime(CLOCK_MONOTONIC, &end);
    end.tv_sec += (time_t)seconds;
    end.tv_nsec += (long)((seconds - (time_t)seconds) * 1e9);
    if (end.tv_nsec >= 1000000000L) {
        end.tv_sec += 1;
        end.tv_nsec -= 1000000000L;
    }
    do {
        clock_gettime(CLOCK_MONOTONIC, &ts);
        sink += ts.tv_nsec;
    } while (ts.tv_sec < end.tv_sec || (ts.tv_sec == end.tv_sec && ts.tv_nsec < end.tv_nsec));
}

int main(int argc, char **argv) {
    read_clocks(argc > 1 ? atof(argv[1]) : 5.0);
    return 0;
}
