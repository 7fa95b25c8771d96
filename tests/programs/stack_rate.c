/*
 * Paced stack samples for `cargo xtask bench`: RATE times a second for SECONDS, maps 64 KiB
 * (sampled at the default --stack-min-size) a few calls below main and unmaps it. Built with
 * -DTEXT_PAD=BYTES it carries that much more .text (never run): a large executable, like
 * chromium's 236 MB of .text, whose call stacks must not cost memtrace its size. Prints the
 * calls made and the paced loop's own duration (`loop_ns N`). Usage: stack_rate RATE SECONDS
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

#ifdef TEXT_PAD
#define STRINGIFY(x) #x
#define EXPAND(x) STRINGIFY(x)
__asm__(".section .text.pad,\"ax\",@progbits\n.skip " EXPAND(TEXT_PAD) "\n.previous\n");
#endif

#define BLOCK (64u << 10)

static unsigned long long now_ns(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (unsigned long long)now.tv_sec * 1000000000ull + (unsigned long long)now.tv_nsec;
}

__attribute__((noinline)) static void map_block(void)
{
    void *block = mmap(NULL, BLOCK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (block == MAP_FAILED || munmap(block, BLOCK) != 0) abort();
    __asm__ volatile("" ::: "memory");
}

__attribute__((noinline)) static void handle_request(void)
{
    map_block();
    __asm__ volatile("" ::: "memory");
}

__attribute__((noinline)) static void serve(void)
{
    handle_request();
    __asm__ volatile("" ::: "memory");
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s RATE SECONDS\n", argv[0]);
        return 2;
    }
    unsigned long rate = strtoul(argv[1], NULL, 10);
    unsigned long seconds = strtoul(argv[2], NULL, 10);
    unsigned long total = rate * seconds;
    unsigned long long start = now_ns();
    for (unsigned long i = 0; i < total; i++) {
        serve();
        /* Paced in batches of a millisecond's worth: sleep until the next one is due. */
        if (i % (rate / 1000 + 1) == 0) {
            unsigned long long due = start + (unsigned long long)(i + 1) * 1000000000ull / rate;
            unsigned long long now = now_ns();
            if (due > now) {
                struct timespec pause = {(time_t)((due - now) / 1000000000ull),
                                         (long)((due - now) % 1000000000ull)};
                nanosleep(&pause, NULL);
            }
        }
    }
    printf("calls %lu\nloop_ns %llu\n", total, now_ns() - start);
    return 0;
}
