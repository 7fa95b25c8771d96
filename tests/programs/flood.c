/* argv[1] times: mmap one anonymous page and munmap it. No C library, so the process makes
 * exactly 2 * N memory syscalls: the ring-buffer loss test counts on that. */
#include "raw_syscall.h"

static word parse(const char *text) {
    word value = 0;
    while (*text >= '0' && *text <= '9') value = value * 10 + (word)(*text++ - '0');
    return value;
}

void start_c(word *stack) {
    word argc = stack[0];
    const char **argv = (const char **)(stack + 1);
    word rounds = argc > 1 ? parse(argv[1]) : 1000;
    for (word i = 0; i < rounds; i++) {
        word page = raw_mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (is_error(page)) raw_exit(1);
        if (raw_munmap(page, 4096) != 0) raw_exit(2);
    }
    raw_exit(0);
}
