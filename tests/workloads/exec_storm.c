// An exec storm: fork + exec of BINARY, one at a time, for SECONDS of wall-clock time; prints
// how many ran. Usage: exec_storm SECONDS BINARY
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s SECONDS BINARY\n", argv[0]);
        return 2;
    }
    double end = now() + atof(argv[1]);
    long ran = 0;
    while (now() < end) {
        pid_t child = fork();
        if (child == 0) {
            execl(argv[2], argv[2], (char *)0);
            _exit(127);
        }
        int status;
        if (child < 0 || waitpid(child, &status, 0) < 0 || status != 0) return 1;
        ran++;
    }
    printf("%ld\n", ran);
    return 0;
}
