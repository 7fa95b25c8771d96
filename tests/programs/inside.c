/* A program "built inside" a container, for tests/tests/it/containers.rs: linked statically (it
 * runs on the container's userland whatever the host's glibc), its functions named after
 * PREFIX. Built twice from this file: the container's copy (PREFIX=memtrace_inside) and a
 * decoy the host keeps at the same path (PREFIX=host_decoy, DECOY shifting its code), so that
 * reading the host's file would name and unwind its frames wrongly.
 *
 * Usage: inside DIR. Waits for DIR/go, maps 4 blocks of 1 MiB from FN(leaf) through
 * FN(middle), never unmaps them, saves its /proc/self/maps to DIR/maps and exits. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "maps_dump.h"

#define JOIN(a, b) a##_##b
#define NAME(a, b) JOIN(a, b)
#define FN(x) NAME(PREFIX, x)

#ifdef DECOY
/* Moves the decoy's functions away from the offsets the container's copy has. */
__attribute__((noinline)) int FN(padding)(int n) {
    volatile char pad[64];
    __asm__ volatile(".skip 8192, 0x90");
    for (int i = 0; i < n && i < 64; i++)
        pad[i] = (char)i;
    return pad[0];
}
#endif

__attribute__((noinline)) void *FN(leaf)(size_t length) {
    void *block = mmap(NULL, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (block != MAP_FAILED)
        memset(block, 1, 4096);
    __asm__ volatile("" ::: "memory");
    return block;
}

__attribute__((noinline)) void *FN(middle)(size_t length) {
    void *block = FN(leaf)(length);
    __asm__ volatile("" ::: "memory");
    return block;
}

int main(int argc, char **argv) {
    if (argc < 2)
        return 2;
    char go[4096];
    snprintf(go, sizeof go, "%s/go", argv[1]);
    while (access(go, F_OK) != 0)
        usleep(20000);
#ifdef DECOY
    FN(padding)(argc);
#endif
    for (int i = 0; i < 4; i++)
        if (FN(middle)(1 << 20) == MAP_FAILED)
            return 1;
    char maps[4096];
    snprintf(maps, sizeof maps, "%s/maps", argv[1]);
    dump_maps(maps);
    return 0;
}
