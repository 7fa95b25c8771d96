/* Kernel-mode workload: `pipes N`. Writes "ready\n", waits for a line on stdin, then opens N
 * pipes and keeps them, opens and closes N more, writes "done\n", and keeps the first N open
 * until stdin closes. Every pipe is one alloc_pipe_info in the kernel: a kernel-mode trace
 * of this process must show N of them outstanding, not 2N. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 1000;
    /* 2 descriptors per kept pipe, 2 more for the one being opened and closed. */
    struct rlimit limit = {(rlim_t)(2 * n + 64), (rlim_t)(2 * n + 64)};
    if (setrlimit(RLIMIT_NOFILE, &limit) != 0) { perror("setrlimit"); return 1; }
    int (*kept)[2] = calloc((size_t)n, sizeof *kept);
    if (!kept) return 1;
    char line[16];
    printf("ready\n");
    fflush(stdout);
    if (!fgets(line, sizeof line, stdin)) return 1;
    for (int i = 0; i < n; i++)
        if (pipe(kept[i]) != 0) { perror("pipe"); return 1; }
    for (int i = 0; i < n; i++) {
        int closed[2];
        if (pipe(closed) != 0) { perror("pipe"); return 1; }
        close(closed[0]);
        close(closed[1]);
    }
    printf("done\n");
    fflush(stdout);
    while (fgets(line, sizeof line, stdin)) {}
    return 0;
}
