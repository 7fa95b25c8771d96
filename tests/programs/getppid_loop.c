/*
 * The bystander of `cargo xtask bench`: N getppid calls, a syscall memtrace never traces, made
 * by a process memtrace does not trace. What it pays is what tracing costs everyone else on the
 * machine. Prints the loop's own duration (`loop_ns N`) and its CPU time (`cpu_ns N`: without
 * the time it waited for a CPU on a busy machine). Usage: getppid_loop N
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static unsigned long long now_ns(clockid_t clock)
{
    struct timespec now;
    clock_gettime(clock, &now);
    return (unsigned long long)now.tv_sec * 1000000000ull + (unsigned long long)now.tv_nsec;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s ITERATIONS\n", argv[0]);
        return 1;
    }
    char *end;
    errno = 0;
    unsigned long long iterations = strtoull(argv[1], &end, 10);
    if (errno != 0 || end == argv[1] || *end != '\0') {
        fprintf(stderr, "%s: not a number of iterations: %s\n", argv[0], argv[1]);
        return 1;
    }

    unsigned long long start = now_ns(CLOCK_MONOTONIC);
    unsigned long long cpu_start = now_ns(CLOCK_THREAD_CPUTIME_ID);
    for (unsigned long long i = 0; i < iterations; i++)
        syscall(SYS_getppid); /* the raw syscall: no libc caching can skip the kernel */
    unsigned long long cpu = now_ns(CLOCK_THREAD_CPUTIME_ID) - cpu_start;
    printf("loop_ns %llu\ncpu_ns %llu\n", now_ns(CLOCK_MONOTONIC) - start, cpu);
    return 0;
}
