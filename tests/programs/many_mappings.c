/* Makes its mappings up to PERCENT (default 95) of vm.max_map_count: one inaccessible
 * reservation, every other page of it then made readable, each mprotect splitting it into
 * mappings the kernel cannot merge. Writes its /proc/self/maps line count (the kernel's
 * count) to stdout, then exits 0.
 * Usage: many_mappings [PERCENT] */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

static long maps_lines(void) {
    FILE *maps = fopen("/proc/self/maps", "r");
    if (!maps) _exit(3);
    long lines = 0;
    int c;
    while ((c = fgetc(maps)) != EOF)
        if (c == '\n') lines++;
    fclose(maps);
    return lines;
}

int main(int argc, char **argv) {
    long percent = argc > 1 ? atol(argv[1]) : 95;
    FILE *sysctl = fopen("/proc/sys/vm/max_map_count", "r");
    long max = 0;
    if (!sysctl || fscanf(sysctl, "%ld", &max) != 1 || max <= 0) _exit(4);
    fclose(sysctl);
    long target = max * percent / 100;
    long page = sysconf(_SC_PAGESIZE);
    /* Each page made readable inside the reservation adds two mappings: itself and the
     * reserved rest after it. Counting the maps after each call would cost O(n^2). */
    long calls = (target - maps_lines()) / 2;
    long pages = 2 * calls + 8;
    char *reservation = mmap(NULL, (size_t)pages * page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (reservation == MAP_FAILED) _exit(5);
    long index = 1;
    for (long call = 0; call < calls; call++, index += 2)
        if (mprotect(reservation + index * page, (size_t)page, PROT_READ) != 0) _exit(6);
    for (; maps_lines() < target && index < pages; index += 2)
        if (mprotect(reservation + index * page, (size_t)page, PROT_READ) != 0) _exit(7);
    printf("%ld %ld\n", maps_lines(), max);
    return 0;
}
