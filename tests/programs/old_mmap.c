/* ia32 only: old_mmap (syscall 90) takes one pointer to its six arguments in user memory.
 * Maps 3 pages at a kernel-chosen address, leaves them mapped, and exits 0. */
#include "raw_syscall.h"

#if !defined(__i386__)
#error "old_mmap exists for ia32 only"
#endif

struct mmap_arg_struct {
    word addr, len, prot, flags, fd, offset;
};

void start_c(word *stack) {
    (void)stack;
    static struct mmap_arg_struct args = {0, 3 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, (word)-1, 0};
    word mapped = (word)raw6(90, (word)&args, 0, 0, 0, 0, 0);
    raw_exit(is_error(mapped) ? 1 : 0);
}
