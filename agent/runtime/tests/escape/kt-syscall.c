/* The escape suite's syscall attempts busybox has no applet for. Built static by the suite
 * (gcc -static) into the test rootfs as /bin/kt-syscall.
 *
 *   kt-syscall keyctl          join a new session keyring (keyctl), add a user key (add_key)
 *   kt-syscall bpf             load a one-instruction socket filter program (bpf)
 *   kt-syscall perf            open a CPU-cycles counter on the whole CPU 0 and on itself
 *   kt-syscall ptrace PID...   PTRACE_ATTACH / PTRACE_SEIZE each PID (host processes)
 *
 * Each attempt prints `NAME rc=R errno=E (text)`; the exit code is 0 whatever happened (the
 * suite judges the lines). */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/bpf.h>
#include <linux/keyctl.h>
#include <linux/perf_event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <unistd.h>

static void report(const char *name, long rc) {
    int e = rc < 0 ? errno : 0;
    printf("%s rc=%ld errno=%d (%s)\n", name, rc, e, e ? strerror(e) : "ok");
    fflush(stdout);
}

static void do_keyctl(void) {
    errno = 0;
    report("keyctl-join", syscall(SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, "kt-escape"));
    errno = 0;
    report("add_key", syscall(SYS_add_key, "user", "kt-escape", "x", 1, KEY_SPEC_PROCESS_KEYRING));
}

static void do_bpf(void) {
    struct bpf_insn prog[2];
    memset(prog, 0, sizeof prog);
    prog[0].code = BPF_ALU64 | BPF_MOV | BPF_K; /* r0 = 0 */
    prog[1].code = BPF_JMP | BPF_EXIT;
    union bpf_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.prog_type = BPF_PROG_TYPE_SOCKET_FILTER;
    attr.insn_cnt = 2;
    attr.insns = (unsigned long)prog;
    attr.license = (unsigned long)"GPL";
    errno = 0;
    report("bpf-prog-load", syscall(SYS_bpf, BPF_PROG_LOAD, &attr, sizeof attr));
    union bpf_attr map;
    memset(&map, 0, sizeof map);
    map.map_type = BPF_MAP_TYPE_ARRAY;
    map.key_size = 4;
    map.value_size = 4;
    map.max_entries = 1;
    errno = 0;
    report("bpf-map-create", syscall(SYS_bpf, BPF_MAP_CREATE, &map, sizeof map));
}

static void do_perf(void) {
    struct perf_event_attr a;
    memset(&a, 0, sizeof a);
    a.type = PERF_TYPE_HARDWARE;
    a.size = sizeof a;
    a.config = PERF_COUNT_HW_CPU_CYCLES;
    a.disabled = 1;
    errno = 0;
    report("perf-cpu0", syscall(SYS_perf_event_open, &a, -1, 0, -1, 0));
    a.type = PERF_TYPE_SOFTWARE;
    a.config = PERF_COUNT_SW_TASK_CLOCK;
    a.exclude_kernel = 1;
    errno = 0;
    report("perf-self", syscall(SYS_perf_event_open, &a, 0, -1, -1, 0));
}

static void do_ptrace(int argc, char **argv) {
    for (int i = 2; i < argc; i++) {
        pid_t pid = (pid_t)atoi(argv[i]);
        char name[64];
        snprintf(name, sizeof name, "ptrace-attach-%d", pid);
        errno = 0;
        long rc = ptrace(PTRACE_ATTACH, pid, 0, 0);
        report(name, rc);
        if (rc == 0) ptrace(PTRACE_DETACH, pid, 0, 0); /* never leave a host process stopped */
        snprintf(name, sizeof name, "ptrace-seize-%d", pid);
        errno = 0;
        rc = ptrace(PTRACE_SEIZE, pid, 0, 0);
        report(name, rc);
        if (rc == 0) ptrace(PTRACE_DETACH, pid, 0, 0);
    }
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: kt-syscall keyctl|bpf|perf|ptrace PID...\n");
        return 2;
    }
    if (!strcmp(argv[1], "keyctl")) do_keyctl();
    else if (!strcmp(argv[1], "bpf")) do_bpf();
    else if (!strcmp(argv[1], "perf")) do_perf();
    else if (!strcmp(argv[1], "ptrace")) do_ptrace(argc, argv);
    else {
        fprintf(stderr, "kt-syscall: unknown attempt %s\n", argv[1]);
        return 2;
    }
    return 0;
}
