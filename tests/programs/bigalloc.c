/* Scenario 2: blocks large enough to bypass the heap come straight from mmap. Each iteration
 * leaks one 16 MiB block through hx_alloc_tmp <- process_image <- main and frees an 8 MiB
 * one. With HOLD_SECONDS it then says "ready" and keeps its leak that long, as a service
 * would. Usage: bigalloc [ITERATIONS] [MAPS_DUMP_PATH|-] [HOLD_SECONDS] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "maps_dump.h"

#define LEAKED_BLOCK (16u << 20)
#define FREED_BLOCK (8u << 20)

__attribute__((noinline)) void *hx_alloc_tmp(size_t size) {
    void *block = malloc(size);
    if (!block) _exit(1);
    memset(block, 0x5a, 4096);
    return block;
}

__attribute__((noinline)) void process_image(void) {
    void *leaked = hx_alloc_tmp(LEAKED_BLOCK);
    __asm__ volatile("" : : "r"(leaked) : "memory"); /* the caller "forgets" it */
    void *scratch = malloc(FREED_BLOCK);
    if (!scratch) _exit(1);
    memset(scratch, 1, 4096);
    free(scratch);
}

int main(int argc, char **argv) {
    int iterations = argc > 1 ? atoi(argv[1]) : 6;
    for (int i = 0; i < iterations; i++) process_image();
    dump_maps(argc > 2 && strcmp(argv[2], "-") != 0 ? argv[2] : NULL);
    if (argc > 3) {
        printf("ready\n");
        fflush(stdout);
        sleep((unsigned)atoi(argv[3]));
    }
    _exit(0);
}
