/* Time inside a signal handler, for the unwinder tests: main -> interrupted() is interrupted
 * by SIGPROF every 10 ms of CPU, and the handler, on_signal(), spins for 4 ms of wall-clock
 * time. The unwinder must continue from the handler through the kernel's signal frame (libc's
 * __restore_rt) back into interrupted() and main. Built with -O2 -fomit-frame-pointer. Runs for
 * argv[1] seconds (default 5).
 *
 * The handler's length is wall-clock time, never a count of iterations: a handler that needs
 * more CPU than the timer's interval finds SIGPROF pending again as it returns, so
 * interrupted() never runs and the program never ends (as a 20 M-iteration loop did on a slow
 * CPU). 4 ms of wall time is at most 4 ms of CPU, under the 10 ms interval, whatever the CPU. */
#include <signal.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>

#define NOINLINE __attribute__((noinline))

volatile unsigned long sink;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts); /* async-signal-safe */
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

NOINLINE void on_signal(int signal) {
    double end = now() + 0.004;
    while (now() < end)
        for (int i = 0; i < 10000; i++) sink += i ^ (unsigned long)signal;
}

NOINLINE void interrupted(double seconds) {
    double end = now() + seconds;
    while (now() < end)
        for (int i = 0; i < 100000; i++) sink += i;
    sink++;
}

int main(int argc, char **argv) {
    struct sigaction action = {0};
    action.sa_handler = on_signal;
    sigaction(SIGPROF, &action, NULL);
    struct itimerval timer = {{0, 10000}, {0, 10000}};
    setitimer(ITIMER_PROF, &timer, NULL);
    interrupted(argc > 1 ? atof(argv[1]) : 5.0);
    return 0;
}
