/*
 * The benchmark's workload (`cargo xtask bench`): N times, map one anonymous page and unmap it,
 * through the libc wrappers, so the process spends its time in exactly the syscalls memtrace
 * traces. Prints the loop's own duration (`loop_ns N`), so a tracer's start-up and shutdown
 * are not counted as its overhead, and the CPU time the loop used (`cpu_ns N`: what tracing
 * costs it, without the time it waited for a CPU on a busy machine). Usage: mmap_loop N
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

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
    for (unsigned long long i = 0; i < iterations; i++) {
        void *page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (page == MAP_FAILED) {
            fprintf(stderr, "%s: mmap failed at iteration %llu: %s\n", argv[0], i, strerror(errno));
            return 1;
        }
        if (munmap(page, 4096) != 0) {
            fprintf(stderr, "%s: munmap failed at iteration %llu: %s\n", argv[0], i, strerror(errno));
            return 1;
        }
    }
    unsigned long long cpu = now_ns(CLOCK_THREAD_CPUTIME_ID) - cpu_start;
    printf("loop_ns %llu\ncpu_ns %llu\n", now_ns(CLOCK_MONOTONIC) - start, cpu);
    return 0;
}
