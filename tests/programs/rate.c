/*
 * The sustained-rate workload of `cargo xtask bench`: THREADS threads, each ROUNDS times maps
 * one anonymous page and unmaps it, as fast as it can, so that several CPUs fill memtrace's
 * ring at once. Prints the flood's own duration (`loop_ns N`). Usage: rate THREADS ROUNDS
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

static unsigned long rounds;

static unsigned long long now_ns(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (unsigned long long)now.tv_sec * 1000000000ull + (unsigned long long)now.tv_nsec;
}

static void *flood(void *unused)
{
    (void)unused;
    for (unsigned long i = 0; i < rounds; i++) {
        void *page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (page == MAP_FAILED || munmap(page, 4096) != 0) abort();
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s THREADS ROUNDS\n", argv[0]);
        return 1;
    }
    int threads = atoi(argv[1]);
    rounds = strtoul(argv[2], NULL, 10);
    if (threads < 1 || threads > 64) return 1;
    pthread_t ids[64];
    unsigned long long start = now_ns();
    for (int i = 0; i < threads; i++)
        if (pthread_create(&ids[i], NULL, flood, NULL) != 0) return 1;
    for (int i = 0; i < threads; i++) pthread_join(ids[i], NULL);
    printf("loop_ns %llu\n", now_ns() - start);
    return 0;
}
