/* 4 threads, each ROUNDS times (argv[1]): mmap a page (every 20th fails on purpose) and
 * munmap it, all at once on every CPU, so syscalls of one process interleave and threads move
 * between CPUs. With 5000 rounds a run makes 20000 more mmap calls (1000 failed) and 19000
 * more munmap calls than with 0 rounds: the start-up's own calls are the same in both. */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#define THREADS 4

static int rounds;

static void *worker(void *unused) {
    (void)unused;
    for (int i = 0; i < rounds; i++) {
        size_t length = (i % 20 == 0) ? 0 : 4096; /* every 20th call fails with EINVAL */
        void *page = mmap(NULL, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (page != MAP_FAILED) munmap(page, 4096);
        if (i % 500 == 0) sched_yield();
    }
    return NULL;
}

int main(int argc, char **argv) {
    rounds = argc > 1 ? atoi(argv[1]) : 5000;
    pthread_t threads[THREADS];
    for (int i = 0; i < THREADS; i++)
        if (pthread_create(&threads[i], NULL, worker, NULL) != 0) return 1;
    for (int i = 0; i < THREADS; i++) pthread_join(threads[i], NULL);
    _exit(0);
}
