/* with-caps UID CAPS PROGRAM [ARGS...]: runs PROGRAM with exactly the capabilities CAPS (a
 * comma-separated list of names without "cap_", or "none") as user UID, the way a container
 * runtime grants a container its capabilities: every other capability leaves the bounding
 * set, and for a user other than root the kept ones are raised as ambient capabilities so they
 * survive exec. The VM scenarios use it to measure what oxeye needs on each kernel (busybox's
 * setpriv cannot change users, and the guests have no setcap). */
#define _GNU_SOURCE
#include <grp.h>
#include <linux/capability.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

static const struct { const char *name; int number; } NAMES[] = {
    {"chown", CAP_CHOWN}, {"dac_override", CAP_DAC_OVERRIDE}, {"dac_read_search", CAP_DAC_READ_SEARCH},
    {"kill", CAP_KILL}, {"setuid", CAP_SETUID}, {"setgid", CAP_SETGID}, {"sys_ptrace", CAP_SYS_PTRACE},
    {"sys_admin", CAP_SYS_ADMIN}, {"sys_resource", CAP_SYS_RESOURCE}, {"syslog", CAP_SYSLOG},
    {"perfmon", 38}, {"bpf", 39}, {"checkpoint_restore", 40},
};

static int number(const char *name) {
    for (size_t i = 0; i < sizeof NAMES / sizeof NAMES[0]; i++)
        if (strcmp(NAMES[i].name, name) == 0) return NAMES[i].number;
    fprintf(stderr, "with-caps: unknown capability %s\n", name);
    exit(125);
}

static void fail(const char *what) {
    perror(what);
    exit(125);
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: with-caps UID CAPS PROGRAM [ARGS...]\n");
        return 125;
    }
    uid_t uid = (uid_t)strtoul(argv[1], NULL, 10);
    unsigned long long wanted = 0;
    if (strcmp(argv[2], "none") != 0) {
        char *list = strdup(argv[2]);
        for (char *name = strtok(list, ","); name; name = strtok(NULL, ","))
            wanted |= 1ULL << number(name);
    }
    for (int cap = 0; cap <= 63; cap++)
        if (!(wanted & (1ULL << cap)) && prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && cap <= 40)
            fail("PR_CAPBSET_DROP");
    if (uid != 0) {
        if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0) fail("PR_SET_KEEPCAPS");
        if (setgroups(0, NULL) != 0 || setresgid(uid, uid, uid) != 0 || setresuid(uid, uid, uid) != 0) fail("setresuid");
        struct __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
        struct __user_cap_data_struct data[2] = {{0}};
        for (int i = 0; i < 2; i++)
            data[i].effective = data[i].permitted = data[i].inheritable = (unsigned)(wanted >> (32 * i));
        if (syscall(SYS_capset, &header, data) != 0) fail("capset");
        for (int cap = 0; cap <= 63; cap++)
            if ((wanted & (1ULL << cap)) && prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0) != 0) fail("PR_CAP_AMBIENT_RAISE");
    }
    execv(argv[3], argv + 3);
    fail(argv[3]);
}
