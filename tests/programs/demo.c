/* The workload behind `cargo xtask run` with no arguments: the three incidents of
 * shared/docs/scenarios.md in miniature, one child each, so one `memtrace --follow` run shows
 * every finding. Usage: demo DIR, where DIR holds the other test programs built by xtask. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/personality.h>
#include <sys/wait.h>
#include <unistd.h>

/* Runs argv as a child; with legacy_layout, under the bottom-up mmap layout that old kernels
 * kept for a 64-bit image started by a 32-bit parent (incident 3). */
static int run_with(char *const argv[], int legacy_layout) {
    pid_t child = fork();
    if (child < 0) return 1;
    if (child == 0) {
        if (legacy_layout) personality(PER_LINUX | ADDR_COMPAT_LAYOUT);
        execv(argv[0], argv);
        _exit(127);
    }
    int status = 0;
    waitpid(child, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}

static int run(char *const argv[]) { return run_with(argv, 0); }

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: demo DIR\n");
        return 64;
    }
    char doublemapper[4096], bigalloc[4096], brk_starve[4096], blocker[4096], exec_child[4096], counts[4096];
    snprintf(doublemapper, sizeof doublemapper, "%s/doublemapper", argv[1]);
    snprintf(bigalloc, sizeof bigalloc, "%s/bigalloc", argv[1]);
    snprintf(brk_starve, sizeof brk_starve, "%s/brk_starve", argv[1]);
    snprintf(blocker, sizeof blocker, "%s/blocker.dat", argv[1]);
    snprintf(exec_child, sizeof exec_child, "%s/exec_child32", argv[1]);
    snprintf(counts, sizeof counts, "%s/counts", argv[1]);

    /* 1. .NET W^X: memfd "doublemapper" mapped rw and r-x, fd closed, never unmapped. */
    run((char *[]){doublemapper, "8", NULL});
    /* 2. 16 MiB blocks that bypass the heap and leak; 8 MiB ones that are freed. */
    run((char *[]){bigalloc, "6", NULL});
    /* 3. A heap starved by a mapping 1 MiB above it, and a 32-bit parent starting a 64-bit child. */
    run((char *[]){brk_starve, blocker, "20", NULL});
    run((char *[]){exec_child, counts, NULL});
    /* ... and the same crossing with the 32-bit layout handed down: bash's libraries below it. */
    run_with((char *[]){exec_child, doublemapper, "1", NULL}, 1);
    return 0;
}
