/* Context-switch-heavy workload for `cargo xtask bench --off-cpu-only`: argv[1] pairs of
 * threads, each pair passing one byte back and forth over two pipes, for argv[2] seconds of
 * wall-clock time; both threads of a pair run on one CPU, pair i on the i-th CPU allowed.
 * Every hop blocks the sender in read() and switches to the other thread: two context
 * switches per round trip at least. Each thread does argv[3] iterations of integer
 * work (a fixed amount, not a time) on every byte it receives, which sets the rate.
 *
 * Prints one line: round trips, the seconds measured, and the voluntary and involuntary
 * context switches of all the process's threads in that time (getrusage(RUSAGE_SELF), the
 * counters /proc/PID/task/TID/status shows, summed over threads). */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define MAX_PAIRS 16

struct pair {
    cpu_set_t cpu;
    int to_pong[2];
    int to_ping[2];
    _Atomic uint64_t round_trips;
};

static atomic_int stop;
static long work;

static uint64_t spin(uint64_t x) {
    for (long i = 0; i < work; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        __asm__ volatile("" : "+r"(x));
    }
    return x;
}

static void *ping(void *arg) {
    struct pair *p = arg;
    char byte = 1;
    uint64_t x = 1;
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        if (write(p->to_pong[1], &byte, 1) != 1 || read(p->to_ping[0], &byte, 1) != 1) exit(3);
        x = spin(x);
        atomic_fetch_add_explicit(&p->round_trips, 1, memory_order_relaxed);
    }
    byte = (char)x;
    close(p->to_pong[1]); /* the pong thread reads end-of-file and returns */
    return NULL;
}

static void *pong(void *arg) {
    struct pair *p = arg;
    char byte;
    uint64_t x = 2;
    while (read(p->to_pong[0], &byte, 1) == 1) {
        x = spin(x);
        if (write(p->to_ping[1], &byte, 1) != 1) exit(3);
    }
    return NULL;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint64_t total(struct pair *pairs, int n) {
    uint64_t sum = 0;
    for (int i = 0; i < n; i++) sum += atomic_load_explicit(&pairs[i].round_trips, memory_order_relaxed);
    return sum;
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 1;
    double seconds = argc > 2 ? atof(argv[2]) : 5.0;
    work = argc > 3 ? atol(argv[3]) : 0;
    static struct pair pairs[MAX_PAIRS];
    pthread_t threads[2 * MAX_PAIRS];
    if (n < 1 || n > MAX_PAIRS || !(seconds > 0) || work < 0) return 2;
    for (int i = 0; i < n; i++)
        if (pipe(pairs[i].to_pong) || pipe(pairs[i].to_ping)) return 4;
    /* Pair i on the i-th allowed CPU (round robin), both its threads: every hop is a switch
     * from one to the other on that CPU, not a wake-up of another CPU from idle, whose speed
     * depends on where the scheduler happens to put the threads. */
    cpu_set_t allowed;
    if (sched_getaffinity(0, sizeof allowed, &allowed)) return 6;
    for (int i = 0, cpu = -1; i < n; i++) {
        do cpu = (cpu + 1) % CPU_SETSIZE;
        while (!CPU_ISSET(cpu, &allowed));
        CPU_ZERO(&pairs[i].cpu);
        CPU_SET(cpu, &pairs[i].cpu);
    }
    for (int i = 0; i < n; i++) {
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setaffinity_np(&attr, sizeof pairs[i].cpu, &pairs[i].cpu);
        if (pthread_create(&threads[2 * i], &attr, pong, &pairs[i]) || pthread_create(&threads[2 * i + 1], &attr, ping, &pairs[i])) return 5;
        pthread_attr_destroy(&attr);
    }

    struct rusage before, after;
    getrusage(RUSAGE_SELF, &before);
    uint64_t trips_before = total(pairs, n);
    double start = now();
    struct timespec duration = {(time_t)seconds, (long)((seconds - (time_t)seconds) * 1e9)};
    while (nanosleep(&duration, &duration) != 0) {
    }
    uint64_t trips = total(pairs, n) - trips_before;
    double elapsed = now() - start;
    getrusage(RUSAGE_SELF, &after);
    atomic_store(&stop, 1);
    for (int i = 0; i < 2 * n; i++) pthread_join(threads[i], NULL);
    printf("%llu %.6f %ld %ld\n", (unsigned long long)trips, elapsed, after.ru_nvcsw - before.ru_nvcsw, after.ru_nivcsw - before.ru_nivcsw);
    return 0;
}
