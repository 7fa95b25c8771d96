/* The .NET W^X pattern (scenario 1): each round creates a memfd named "doublemapper", maps it
 * twice (rw for writing JIT code, r-x for running it), closes the fd and never unmaps. One
 * extra round named "released" is unmapped properly and must not be reported.
 * Usage: doublemapper [ROUNDS] [MAPS_DUMP_PATH] */
#define _GNU_SOURCE
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>
#include "maps_dump.h"

#define VIEW_SIZE (4u << 20)

static void *map_view(int fd, int prot) {
    void *view = mmap(NULL, VIEW_SIZE, prot, MAP_SHARED, fd, 0);
    if (view == MAP_FAILED) _exit(2);
    return view;
}

int main(int argc, char **argv) {
    int rounds = argc > 1 ? atoi(argv[1]) : 8;
    for (int i = 0; i < rounds; i++) {
        int fd = memfd_create("doublemapper", MFD_CLOEXEC);
        if (fd < 0 || ftruncate(fd, VIEW_SIZE) != 0) _exit(1);
        char *writable = map_view(fd, PROT_READ | PROT_WRITE);
        map_view(fd, PROT_READ | PROT_EXEC);
        writable[0] = (char)0xc3; /* "JIT" a ret instruction */
        close(fd);
    }
    int fd = memfd_create("released", MFD_CLOEXEC);
    if (fd < 0 || ftruncate(fd, VIEW_SIZE) != 0) _exit(1);
    void *rw = map_view(fd, PROT_READ | PROT_WRITE);
    void *rx = map_view(fd, PROT_READ | PROT_EXEC);
    close(fd);
    munmap(rw, VIEW_SIZE);
    munmap(rx, VIEW_SIZE);
    dump_maps(argc > 2 ? argv[2] : NULL);
    _exit(0);
}
