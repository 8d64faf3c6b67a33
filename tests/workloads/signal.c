/* Time inside a signal handler, for the unwinder tests: main -> interrupted() is interrupted
 * by SIGPROF every 10 ms of CPU, and the handler, on_signal(), spins for about as long as
 * the code it interrupted. The unwinder must continue from the handler through the kernel's
 * signal frame (libc's __restore_rt) back into interrupted() and main. Built with -O2
 * -fomit-frame-pointer. Runs for argv[1] seconds (default 5). */
#include <signal.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>

#define NOINLINE __attribute__((noinline))

volatile unsigned long sink;

NOINLINE void on_signal(int signal) {
    for (unsigned long i = 0; i < 20000000; i++) sink += i ^ (unsigned long)signal;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
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
