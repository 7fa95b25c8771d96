/* The shape of the imaging-library leak that call stacks must explain:
 * main -> process_image -> hx_alloc_tmp -> malloc(16 MiB), which glibc serves with an mmap
 * made from inside libc (malloc -> sysmalloc -> mmap). The block is never freed.
 *
 * The process stops itself (SIGSTOP) before allocating, so a tracer can attach and catch the
 * mmap syscall. Built with -DOTHER_BUILD it is a different build of the same program (other
 * code layout, other build-id), for the symbolizer's replaced-file tests. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TMP_BYTES (16u << 20)

/* noinline/noclone keep one frame per function at -O1; the work after each call keeps the
 * calls from becoming tail calls. */
__attribute__((noinline, noclone)) char *hx_alloc_tmp(size_t bytes) {
    char *block = malloc(bytes);
    if (block)
        memset(block, 0x5a, 4096);
    return block;
}

#ifdef OTHER_BUILD
__attribute__((noinline, noclone)) long other_build_only(long value) {
    return value * 3 + 1;
}
#endif

__attribute__((noinline, noclone)) long process_image(int rows) {
    char *tmp = hx_alloc_tmp(TMP_BYTES);
    if (!tmp)
        return -1;
    long sum = 0;
    for (int row = 0; row < rows; row++)
        sum += tmp[row * 1024];
#ifdef OTHER_BUILD
    sum = other_build_only(sum);
#endif
    return sum;
}

int main(int argc, char **argv) {
    (void)argv;
    raise(SIGSTOP);
    printf("%ld\n", process_image(argc));
    return 0;
}
