/*
 * Kernel mode's benchmark workload (`cargo xtask bench`): N times, open a pipe, pass one byte
 * through it and close it. Each iteration allocates and frees kernel memory (the pipe, its
 * buffers, two files, a page for the byte), which is what `memtrace kernel` watches
 * system-wide. Prints the loop's own duration (`loop_ns N`). Usage: pipe_loop N
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static unsigned long long now_ns(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (unsigned long long)now.tv_sec * 1000000000ull + (unsigned long long)now.tv_nsec;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s ITERATIONS\n", argv[0]);
        return 1;
    }
    unsigned long long iterations = strtoull(argv[1], NULL, 10);
    unsigned long long start = now_ns();
    for (unsigned long long i = 0; i < iterations; i++) {
        int fds[2];
        char byte = 'x';
        if (pipe(fds) != 0 || write(fds[1], &byte, 1) != 1 || read(fds[0], &byte, 1) != 1) {
            perror("pipe_loop");
            return 1;
        }
        close(fds[0]);
        close(fds[1]);
    }
    printf("loop_ns %llu\n", now_ns() - start);
    return 0;
}
