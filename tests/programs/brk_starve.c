/* Scenario 3 in miniature: a file is mapped 1 MiB above the start of the heap, then the heap
 * grows with brk in 64 KiB steps until it cannot. brk needs a free page above the new break,
 * so 15 steps succeed and the rest fail.
 * Usage: brk_starve BLOCKER_FILE [STEPS] [MAPS_DUMP_PATH] */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "maps_dump.h"

#define STEP (64u << 10)
#define ROOM (1u << 20)

static unsigned long raw_brk(unsigned long address) { return (unsigned long)syscall(SYS_brk, address); }

int main(int argc, char **argv) {
    if (argc < 2) _exit(64);
    int steps = argc > 2 ? atoi(argv[2]) : 20;
    int fd = open(argv[1], O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || ftruncate(fd, 65536) != 0) _exit(1);
    unsigned long start = raw_brk(0);
    unsigned long page = (unsigned long)sysconf(_SC_PAGESIZE);
    unsigned long blocker = ((start + page - 1) & ~(page - 1)) + ROOM;
    if (mmap((void *)blocker, 65536, PROT_READ, MAP_SHARED | MAP_FIXED, fd, 0) == MAP_FAILED) _exit(2);
    close(fd);
    unsigned long end = start;
    int failures = 0;
    for (int i = 0; i < steps; i++) {
        unsigned long got = raw_brk(end + STEP);
        if (got == end + STEP) end = got; else failures++;
    }
    dump_maps(argc > 3 ? argv[3] : NULL);
    _exit(failures == steps - 15 ? 0 : 3);
}
