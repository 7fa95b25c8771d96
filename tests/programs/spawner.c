/* A parent starting N short-lived children one after the other (argv[1], default 40), as a
 * daemon spawns sessions: each child maps 2 MiB it never unmaps (leak_block), maps and frees a
 * 64 KiB scratch buffer, and exits with its index modulo 2. The parent waits for each. */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

__attribute__((noinline)) static void *leak_block(size_t len) {
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        _exit(3);
    memset(p, 1, 4096);
    return p;
}

static void child(int index) {
    leak_block(2 << 20);
    void *scratch = mmap(NULL, 64 << 10, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (scratch == MAP_FAILED || munmap(scratch, 64 << 10) != 0)
        _exit(3);
    _exit(index % 2);
}

int main(int argc, char **argv) {
    int count = argc > 1 ? atoi(argv[1]) : 40;
    for (int i = 0; i < count; i++) {
        pid_t pid = fork();
        if (pid < 0)
            return 1;
        if (pid == 0)
            child(i);
        int status;
        if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != i % 2)
            return 1;
    }
    return 0;
}
