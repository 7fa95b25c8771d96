/* A fixed number of each memory syscall, no C library: the exact-count test expects
 *   mmap 6 (1 fails), munmap 5 (1 fails: unaligned), brk 3, mremap 2, mprotect 3 (1 fails),
 *   memfd_create 2 (1 fails: bad flags), close 2.
 * Exits with 0 if every call behaved as planned, else with the number of the failed step. */
#include "raw_syscall.h"

void start_c(word *stack) {
    (void)stack;
    word pages[5];
    for (int i = 0; i < 5; i++) {
        pages[i] = raw_mmap(0, 4096 * (i + 1), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (is_error(pages[i])) raw_exit(1);
    }
    if (!is_error(raw_mmap(0, 0, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0))) raw_exit(2);
    for (int i = 0; i < 4; i++)
        if (raw_munmap(pages[i], 4096 * (i + 1)) != 0) raw_exit(3);
    if (raw_munmap(pages[4] + 1, 4096) == 0) raw_exit(4);
    word start = raw_brk(0);
    if (raw_brk(start + 65536) != start + 65536) raw_exit(5);
    raw_brk(start);
    word grown = raw_mremap(pages[4], 5 * 4096, 64 * 4096, MREMAP_MAYMOVE);
    if (is_error(grown)) raw_exit(6);
    if (is_error(raw_mremap(grown, 64 * 4096, 16 * 4096, 0))) raw_exit(7);
    if (raw_mprotect(grown, 4096, PROT_READ) != 0) raw_exit(8);
    if (raw_mprotect(grown + 4096, 4096, PROT_READ | PROT_EXEC) != 0) raw_exit(9);
    if (raw_mprotect(grown + 1, 4096, PROT_READ) == 0) raw_exit(10);
    long fd = raw_memfd_create("counts", 0);
    if (fd < 0) raw_exit(11);
    if (raw_memfd_create("bad-flags", 0x1000000) >= 0) raw_exit(12);
    if (raw_close(fd) != 0) raw_exit(13);
    if (raw_close(fd) == 0) raw_exit(14);
    raw_exit(0);
}
