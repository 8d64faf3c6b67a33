/* CPU-bound benchmark workload: argv[1] threads each run a fixed integer hash loop for
 * argv[2] seconds; prints the total number of iterations (the throughput). */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double seconds;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

__attribute__((noinline)) static uint64_t mix(uint64_t x) {
    for (int i = 0; i < 1000; i++) x = (x ^ (x >> 31)) * 0x9e3779b97f4a7c15ULL + i;
    return x;
}

static void *work(void *arg) {
    uint64_t iterations = 0, x = (uintptr_t)arg;
    double end = now() + seconds;
    while (now() < end) {
        for (int i = 0; i < 100; i++) x = mix(x);
        iterations += 100;
    }
    *(uint64_t *)arg = iterations + (x == 42);
    return NULL;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 2;
    seconds = argc > 2 ? atof(argv[2]) : 5.0;
    pthread_t ids[256];
    uint64_t counts[256];
    if (threads < 1 || threads > 256) return 2;
    for (int i = 0; i < threads; i++) {
        counts[i] = i + 1;
        pthread_create(&ids[i], NULL, work, &counts[i]);
    }
    uint64_t total = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(ids[i], NULL);
        total += counts[i];
    }
    printf("%llu\n", (unsigned long long)total);
    return 0;
}
