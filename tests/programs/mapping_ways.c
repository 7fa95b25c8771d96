/* Every way a mapping is made besides mmap (#23): SysV shared memory attached and detached,
 * AIO rings set up and destroyed, a protection key, sealing, remap_file_pages.
 *
 *   mapping_ways [MAPS_OUT [stop]]   does it all, prints its pid and the addresses it mapped,
 *                                    copies /proc/self/maps to MAPS_OUT, and exits (or stops
 *                                    itself with SIGSTOP, for a tracer to read it alive)
 *
 * Kept when it exits: a 16 MiB segment (IPC_PRIVATE), a keyed 1 MiB + 1 byte segment attached
 * read-only, an io_setup(128) ring, a 1 MiB mapping pkey_mprotect'ed read-only, a sealed
 * 64 KiB mapping (where the kernel has mseal), and a memfd mapping whose first page
 * remap_file_pages points at the file's third. Gone again: an 8 MiB segment detached after an
 * mprotect split it, an io_setup(32) ring destroyed. Every segment is marked for removal
 * (IPC_RMID) as soon as it is attached, so none outlives the program.
 *
 * Built for both ABIs: the ia32 C library reaches SysV IPC through ipc(2); this program also
 * makes the direct syscalls (Linux 5.1) there, so both paths are taken. Every syscall is made
 * through syscall(2) where the C library might wrap it otherwise (pkey_mprotect, mseal). */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/aio_abi.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "maps_dump.h"

#define MIB (1UL << 20)
#define PAGE 4096UL
/* mseal (Linux 6.10) has the same number in both ABIs; older headers lack it. */
#define NR_MSEAL 462
#if defined(__i386__)
#define NR_SHMAT_DIRECT 397
#define NR_SHMDT_DIRECT 398
#endif

static void fail(const char *what) {
    fprintf(stderr, "mapping_ways: %s: %s\n", what, strerror(errno));
    exit(1);
}

static int segment(key_t key, size_t size) {
    int id = shmget(key, size, IPC_CREAT | 0600);
    if (id < 0) fail("shmget");
    return id;
}

static void *attach(int id, int flags) {
    void *at = shmat(id, NULL, flags);
    if (at == (void *)-1) fail("shmat");
    if (shmctl(id, IPC_RMID, NULL) != 0) fail("shmctl(IPC_RMID)");
    return at;
}

int main(int argc, char **argv) {
    /* Kept: 16 MiB, written to. */
    char *big = attach(segment(IPC_PRIVATE, 16 * MIB), 0);
    memset(big, 1, PAGE);

    /* Detached after an mprotect split it in three: shmdt removes every piece. */
    char *gone = attach(segment(IPC_PRIVATE, 8 * MIB), 0);
    if (mprotect(gone + MIB, MIB, PROT_READ) != 0) fail("mprotect");
    if (shmdt(gone) != 0) fail("shmdt");

    /* Kept: keyed, read-only, of a size that is not whole pages. */
    key_t key = (key_t)(0x4d540000 | (getpid() & 0xffff));
    int keyed = segment(key, MIB + 1);
    void *keyed_at = shmat(keyed, NULL, SHM_RDONLY);
    if (keyed_at == (void *)-1) fail("shmat(SHM_RDONLY)");

#if defined(__i386__)
    /* The direct syscalls, beside the C library's ipc(2). */
    int direct = segment(IPC_PRIVATE, 2 * MIB);
    long direct_at = syscall(NR_SHMAT_DIRECT, direct, 0, 0);
    if (direct_at == -1) fail("shmat (direct)");
    if (syscall(NR_SHMDT_DIRECT, direct_at) != 0) fail("shmdt (direct)");
    if (shmctl(direct, IPC_RMID, NULL) != 0) fail("shmctl(IPC_RMID)");
#endif
    if (shmctl(keyed, IPC_RMID, NULL) != 0) fail("shmctl(IPC_RMID)");

    /* AIO rings: one kept, one destroyed. */
    aio_context_t ring = 0, destroyed = 0;
    if (syscall(SYS_io_setup, 128, &ring) != 0) fail("io_setup(128)");
    if (syscall(SYS_io_setup, 32, &destroyed) != 0) fail("io_setup(32)");
    if (syscall(SYS_io_destroy, destroyed) != 0) fail("io_destroy");

    /* A protection key where the CPU has them; -1 (no key) makes it a plain mprotect. */
    char *keyed_pages = mmap(NULL, MIB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (keyed_pages == MAP_FAILED) fail("mmap");
    memset(keyed_pages, 2, MIB);
    long pkey = syscall(SYS_pkey_alloc, 0, 0);
    if (pkey < 0) pkey = -1;
    if (syscall(SYS_pkey_mprotect, keyed_pages, MIB, PROT_READ, pkey) != 0) fail("pkey_mprotect");

    /* Sealed: the munmap and mprotect after it fail with EPERM and change nothing. */
    char *sealed = mmap(NULL, 16 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (sealed == MAP_FAILED) fail("mmap");
    if (syscall(NR_MSEAL, sealed, 16 * PAGE, 0) == 0) {
        if (munmap(sealed, PAGE) == 0 || errno != EPERM) fail("munmap of a sealed page");
        if (mprotect(sealed + PAGE, PAGE, PROT_NONE) == 0 || errno != EPERM)
            fail("mprotect of a sealed page");
    } else if (errno != ENOSYS) {
        fail("mseal");
    }

    /* remap_file_pages: the first page of a shared file mapping now shows the file's third. */
    int memfd = memfd_create("mapping_ways", 0);
    if (memfd < 0 || ftruncate(memfd, 4 * PAGE) != 0) fail("memfd");
    char *file = mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
    if (file == MAP_FAILED) fail("mmap(memfd)");
    if (remap_file_pages(file, PAGE, 0, 2, 0) != 0 && errno != ENOSYS) fail("remap_file_pages");

    printf("%d %p %p %p %llx %p %p %p\n", (int)getpid(), (void *)big, (void *)keyed_at, (void *)gone,
           (unsigned long long)ring, (void *)keyed_pages, (void *)sealed, (void *)file);
    fflush(stdout);
    if (argc > 1) dump_maps(argv[1]);
    if (argc > 2 && strcmp(argv[2], "stop") == 0) raise(SIGSTOP);
    return 0;
}
