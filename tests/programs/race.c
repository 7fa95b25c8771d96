/* 8 threads racing mmap/mprotect/munmap on 64 KiB regions of one address space, ROUNDS times
 * each (argv[1]); then the process stops itself (SIGSTOP) so that its /proc/PID/maps can be
 * read while it cannot change, and waits to be killed.
 *
 * Each round: mmap 64 KiB rw; mprotect its middle 16 KiB read-only (splitting it in three);
 * munmap its first 16 KiB; every second round unmap the rest too, so that about half of the
 * regions stay mapped, with holes and mixed permissions, for the layout to be checked. Every
 * call is exact: 3 calls a round plus one every second round. With a second argument the
 * process exits instead of stopping (for a run under strace). */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#define THREADS 8
#define REGION (64 * 1024)
#define QUARTER (REGION / 4)

static int rounds;

static void *worker(void *unused) {
    (void)unused;
    for (int i = 0; i < rounds; i++) {
        char *region = mmap(NULL, REGION, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (region == MAP_FAILED) abort();
        region[QUARTER] = 1;
        if (mprotect(region + QUARTER, QUARTER, PROT_READ) != 0) abort();
        if (munmap(region, QUARTER) != 0) abort();
        if (i % 2 == 1 && munmap(region + QUARTER, REGION - QUARTER) != 0) abort();
    }
    return NULL;
}

int main(int argc, char **argv) {
    rounds = argc > 1 ? atoi(argv[1]) : 2000;
    pthread_t threads[THREADS];
    for (int i = 0; i < THREADS; i++)
        if (pthread_create(&threads[i], NULL, worker, NULL) != 0) return 1;
    for (int i = 0; i < THREADS; i++) pthread_join(threads[i], NULL);
    if (argc > 2) return 0;
    raise(SIGSTOP);
    pause();
    return 0;
}
