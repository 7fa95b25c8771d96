/* Leaks one 16 MiB block (malloc, so mmap inside glibc) from a call made DEPTH bytes of stack
 * below main, so that the stack sample's copy, which starts at the syscall's stack pointer,
 * meets the stack's end at a chosen distance past main's frame. Usage: stack_depth DEPTH */
#include <alloca.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

__attribute__((noinline)) void *leak_block(void) {
    void *block = malloc(16u << 20);
    if (!block) _exit(1);
    memset(block, 1, 4096);
    return block;
}

__attribute__((noinline)) void *at_depth(size_t depth) {
    char *pad = alloca(depth + 1);
    memset(pad, 0, depth + 1);
    __asm__ volatile("" : : "r"(pad) : "memory");
    void *block = leak_block();
    __asm__ volatile("" : : "r"(pad) : "memory");
    return block;
}

int main(int argc, char **argv) {
    size_t depth = argc > 1 ? strtoul(argv[1], NULL, 0) : 0;
    void *leaked = at_depth(depth);
    __asm__ volatile("" : : "r"(leaked) : "memory");
    _exit(0);
}
