/* A .NET-like service attached to after its leak: ROUNDS memfds "doublemapper" mapped rw and
 * r-x, their fds closed, never unmapped, then nothing more while it waits. Traced from then
 * on it does not grow: the W^X pattern must be found in the layout at attach.
 * Prints "ready" once mapped; exits when its stdin closes.
 * Usage: doublemapper_idle [ROUNDS] */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#define VIEW_SIZE (1u << 20)

int main(int argc, char **argv) {
    int rounds = argc > 1 ? atoi(argv[1]) : 6;
    for (int i = 0; i < rounds; i++) {
        int fd = memfd_create("doublemapper", MFD_CLOEXEC);
        if (fd < 0 || ftruncate(fd, VIEW_SIZE) != 0) _exit(1);
        char *writable = mmap(NULL, VIEW_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        void *executable = mmap(NULL, VIEW_SIZE, PROT_READ | PROT_EXEC, MAP_SHARED, fd, 0);
        if (writable == MAP_FAILED || executable == MAP_FAILED) _exit(2);
        writable[0] = (char)0xc3; /* "JIT" a ret instruction */
        close(fd);
    }
    printf("ready\n");
    fflush(stdout);
    char byte;
    while (read(0, &byte, 1) > 0) {
    }
    _exit(0);
}
