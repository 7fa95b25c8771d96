/* Maps 64 MiB blocks until the kernel refuses one with ENOMEM (run it under `ulimit -v`),
 * touching nothing, then tries one mremap that may move, which fails the same way. Prints
 * the blocks it got; exits 0 once refused, 1 if it never was. It waits half a second first, as
 * a service runs before it fills its address space: memtrace reads a process's limits from
 * /proc while it runs, and a process gone within a millisecond keeps them unknown.
 * Usage: address_space_full [MAX_BLOCKS] */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

#define BLOCK ((size_t)64 << 20)

int main(int argc, char **argv) {
    int max_blocks = argc > 1 ? atoi(argv[1]) : 64;
    struct timespec pause = {0, 500 * 1000 * 1000};
    nanosleep(&pause, NULL);
    void *last = NULL;
    for (int blocks = 0; blocks < max_blocks; blocks++) {
        void *block = mmap(NULL, BLOCK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (block == MAP_FAILED) {
            int refused = errno;
            void *grown = last ? mremap(last, BLOCK, 4 * BLOCK, MREMAP_MAYMOVE) : MAP_FAILED;
            printf("%d blocks, then %s; mremap %s\n", blocks, refused == ENOMEM ? "ENOMEM" : "other",
                   grown == MAP_FAILED ? "refused" : "granted");
            return refused == ENOMEM ? 0 : 2;
        }
        last = block;
    }
    printf("never refused\n");
    return 1;
}
