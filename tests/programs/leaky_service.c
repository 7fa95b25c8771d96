/* A service that leaks like seed 000 while doing normal work, for attaching to it after it has
 * grown. At start: a fixed set of 1 MiB buffers (a steady cache, never freed). Then every
 * 100 ms: a memfd "doublemapper" mapped rw and r-x, its fd closed, never unmapped (the leak),
 * and a 4 MiB buffer mapped, touched and freed (churn). One memfd "kept" stays open and
 * mapped: a mapping whose fd is still open is no closed-fd leak.
 * Prints "ready" once the cache is made; runs ROUNDS rounds (default 60), then exits 0.
 * Usage: leaky_service [ROUNDS] */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define VIEW_SIZE (256u << 10)
#define CHURN_SIZE (4u << 20)
#define CACHE_BUFFERS 6
#define CACHE_SIZE (1u << 20)

static void *map_or_die(size_t len, int prot, int flags, int fd) {
    void *view = mmap(NULL, len, prot, flags, fd, 0);
    if (view == MAP_FAILED) _exit(2);
    return view;
}

static void leak_double_mapping(void) {
    int fd = memfd_create("doublemapper", MFD_CLOEXEC);
    if (fd < 0 || ftruncate(fd, VIEW_SIZE) != 0) _exit(1);
    char *writable = map_or_die(VIEW_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd);
    map_or_die(VIEW_SIZE, PROT_READ | PROT_EXEC, MAP_SHARED, fd);
    writable[0] = (char)0xc3;
    close(fd);
}

static void churn(void) {
    char *buffer = map_or_die(CHURN_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1);
    memset(buffer, 1, CHURN_SIZE);
    munmap(buffer, CHURN_SIZE);
}

int main(int argc, char **argv) {
    int rounds = argc > 1 ? atoi(argv[1]) : 60;
    for (int i = 0; i < CACHE_BUFFERS; i++)
        memset(map_or_die(CACHE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1), 1,
               CACHE_SIZE);
    int kept = memfd_create("kept", MFD_CLOEXEC);
    if (kept < 0 || ftruncate(kept, VIEW_SIZE) != 0) _exit(1);
    map_or_die(VIEW_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, kept);
    printf("ready\n");
    fflush(stdout);
    struct timespec period = {0, 100 * 1000 * 1000};
    for (int i = 0; i < rounds; i++) {
        leak_double_mapping();
        churn();
        nanosleep(&period, NULL);
    }
    _exit(0);
}
