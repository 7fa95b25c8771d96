/* Raw syscalls for programs built with -nostdlib -static: no C library, no loader, so the
 * process makes exactly the syscalls its source shows. Works for x86_64 and for ia32 (-m32),
 * where memory syscalls have their own numbers (mmap2 = 192 …). */
#ifndef RAW_SYSCALL_H
#define RAW_SYSCALL_H

typedef unsigned long word;

#if defined(__x86_64__)
#define NR_MMAP 9
#define NR_MPROTECT 10
#define NR_MUNMAP 11
#define NR_BRK 12
#define NR_MREMAP 25
#define NR_CLOSE 3
#define NR_GETPID 39
#define NR_EXIT 60
#define NR_MEMFD_CREATE 319
#define NR_OPEN 2
#define NR_READ 0
#define NR_WRITE 1
#define NR_KILL 62
static inline long raw6(long n, word a, word b, word c, word d, word e, word f) {
    long ret;
    register word r10 __asm__("r10") = d;
    register word r8 __asm__("r8") = e;
    register word r9 __asm__("r9") = f;
    __asm__ volatile("syscall" : "=a"(ret) : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return ret;
}
#define START_ASM "_start: xor %rbp, %rbp\n mov %rsp, %rdi\n and $-16, %rsp\n call start_c\n hlt\n"
#elif defined(__i386__)
#define NR_MMAP2 192
#define NR_MPROTECT 125
#define NR_MUNMAP 91
#define NR_BRK 45
#define NR_MREMAP 163
#define NR_CLOSE 6
#define NR_GETPID 20
#define NR_EXIT 1
#define NR_MEMFD_CREATE 356
#define NR_OPEN 5
#define NR_READ 3
#define NR_WRITE 4
#define NR_KILL 37
static inline long raw6(long n, word a, word b, word c, word d, word e, word f) {
    long ret;
    /* ebp is the sixth argument; save it around the call since gcc may use it. */
    __asm__ volatile("push %%ebp\n mov %7, %%ebp\n int $0x80\n pop %%ebp"
                     : "=a"(ret) : "a"(n), "b"(a), "c"(b), "d"(c), "S"(d), "D"(e), "m"(f) : "memory");
    return ret;
}
#define START_ASM "_start: xor %ebp, %ebp\n mov %esp, %eax\n and $-16, %esp\n sub $12, %esp\n push %eax\n call start_c\n hlt\n"
#else
#error "x86_64 or i386 only"
#endif

#define PROT_READ 1
#define PROT_WRITE 2
#define PROT_EXEC 4
#define MAP_SHARED 1
#define MAP_PRIVATE 2
#define MAP_FIXED 0x10
#define MAP_ANONYMOUS 0x20
#define MREMAP_MAYMOVE 1

static inline word raw_mmap(word addr, word len, word prot, word flags, long fd, word offset) {
#if defined(__x86_64__)
    return (word)raw6(NR_MMAP, addr, len, prot, flags, (word)fd, offset);
#else
    return (word)raw6(NR_MMAP2, addr, len, prot, flags, (word)fd, offset / 4096);
#endif
}
static inline long raw_munmap(word addr, word len) { return raw6(NR_MUNMAP, addr, len, 0, 0, 0, 0); }
static inline word raw_brk(word addr) { return (word)raw6(NR_BRK, addr, 0, 0, 0, 0, 0); }
static inline long raw_mprotect(word addr, word len, word prot) { return raw6(NR_MPROTECT, addr, len, prot, 0, 0, 0); }
static inline word raw_mremap(word old, word old_len, word new_len, word flags) {
    return (word)raw6(NR_MREMAP, old, old_len, new_len, flags, 0, 0);
}
static inline long raw_memfd_create(const char *name, word flags) {
    return raw6(NR_MEMFD_CREATE, (word)name, flags, 0, 0, 0, 0);
}
static inline long raw_close(long fd) { return raw6(NR_CLOSE, (word)fd, 0, 0, 0, 0, 0); }
static inline __attribute__((noreturn)) void raw_exit(int code) {
    for (;;) raw6(NR_EXIT, (word)code, 0, 0, 0, 0, 0);
}
static inline int is_error(word value) { return value > (word)-4096; }

/* Entry point: start_c(stack) gets argc/argv from the initial stack. */
__asm__(".text\n.global _start\n" START_ASM);
#endif
