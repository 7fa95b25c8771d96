/* For the in-flight check: prints its tid, waits for one byte on stdin (meanwhile the test
 * plants a stale munmap entry for this tid in the probes' in-flight table), then makes a futex
 * call whose arguments read as a plausible munmap (FUTEX_WAKE_PRIVATE on a word: returns 0),
 * then exactly one real mmap and one real munmap, and exits 0. No C library: those are all
 * the memory syscalls it makes. */
#include "raw_syscall.h"

#if defined(__x86_64__)
#define NR_FUTEX 202
#define NR_GETTID 186
#else
#define NR_FUTEX 240
#define NR_GETTID 224
#endif
#define FUTEX_WAKE_PRIVATE 129

/* An element past the first: never page-aligned, like the futex words a runtime uses. */
static int futex_words[8];

void start_c(word *stack) {
    (void)stack;
    long tid = raw6(NR_GETTID, 0, 0, 0, 0, 0, 0);
    char line[24];
    int at = sizeof line;
    line[--at] = '\n';
    do {
        line[--at] = (char)('0' + tid % 10);
        tid /= 10;
    } while (tid > 0);
    raw6(NR_WRITE, 1, (word)(line + at), sizeof line - at, 0, 0, 0);
    char byte;
    if (raw6(NR_READ, 0, (word)&byte, 1, 0, 0, 0) != 1) raw_exit(1);
    if (raw6(NR_FUTEX, (word)&futex_words[3], FUTEX_WAKE_PRIVATE, 1, 0, 0, 0) != 0) raw_exit(2);
    word page = raw_mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (is_error(page)) raw_exit(3);
    if (raw_munmap(page, 4096) != 0) raw_exit(4);
    raw_exit(0);
}
