/* A syscall-heavy workload: main -> do_reads -> read(2) of /dev/zero, issued with an inline
 * system call instruction so that frame pointers give the exact user chain above the kernel.
 * Runs for argv[1] seconds (default 5). */
#include <fcntl.h>
#include <stdlib.h>
#include <time.h>

#define NOINLINE __attribute__((noinline))
#define ALWAYS_INLINE __attribute__((always_inline)) inline

static char buffer[1 << 20];

static ALWAYS_INLINE long sys_read(long fd, void *buf, unsigned long len) {
#if defined(__x86_64__)
    long ret;
    __asm__ volatile("syscall" : "=a"(ret) : "a"(0L), "D"(fd), "S"(buf), "d"(len) : "rcx", "r11", "memory");
    return ret;
#elif defined(__aarch64__)
    register long x0 __asm__("x0") = fd;
    register long x1 __asm__("x1") = (long)buf;
    register long x2 __asm__("x2") = (long)len;
    register long x8 __asm__("x8") = 63; /* __NR_read */
    __asm__ volatile("svc 0" : "+r"(x0) : "r"(x1), "r"(x2), "r"(x8) : "memory");
    return x0;
#else
#error "unsupported architecture"
#endif
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

NOINLINE void do_reads(int fd, double seconds) {
    double end = now() + seconds;
    while (now() < end)
        for (int i = 0; i < 16; i++) sys_read(fd, buffer, sizeof buffer);
}

int main(int argc, char **argv) {
    int fd = open("/dev/zero", O_RDONLY);
    if (fd < 0) return 1;
    do_reads(fd, argc > 1 ? atof(argv[1]) : 5.0);
    return 0;
}
