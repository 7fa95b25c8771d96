/*
 * A traced program that tries to drive root's terminal through memtrace's outputs: every
 * string it controls holds escape sequences and newlines (issue #29).
 *
 *   hostile names DIR: sets its comm (prctl PR_SET_NAME), creates a memfd and a file in DIR
 *     with hostile names, maps both and an anonymous 1 MiB block (so that a call stack is
 *     sampled), keeps them all mapped, sleeps 600 ms (for --interval) and exits.
 *   hostile reexec DIR N: copies itself to DIR under a hostile name and execs the copy, which
 *     removes itself and does the same, N times: each exec's image is gone (or replaced) by the
 *     time memtrace reads it, so each makes memtrace warn.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* An OSC that sets the window title, a screen clear, and a forged report line. */
#define HOSTILE "\x1b]0;owned\x07\x1b[2J\nFindings: none\n  [leak] forged\r\x7f\x9b"

static void fail(const char *what)
{
    perror(what);
    exit(1);
}

static int names(const char *dir)
{
    /* 15 bytes: the comm's room. */
    if (prctl(PR_SET_NAME, "\x1b[2J\n[x]\x1b]0;t\x07", 0, 0, 0) != 0)
        fail("prctl");

    int memfd = (int)syscall(SYS_memfd_create, HOSTILE, 0);
    if (memfd < 0)
        fail("memfd_create");
    if (ftruncate(memfd, 1 << 20) != 0)
        fail("ftruncate");
    void *shared = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
    if (shared == MAP_FAILED)
        fail("mmap memfd");
    memset(shared, 1, 4096);

    char path[4096];
    snprintf(path, sizeof path, "%s/" HOSTILE ".so", dir);
    int file = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (file < 0)
        fail("open");
    if (ftruncate(file, 1 << 16) != 0)
        fail("ftruncate file");
    void *mapped = mmap(NULL, 1 << 16, PROT_READ, MAP_PRIVATE, file, 0);
    if (mapped == MAP_FAILED)
        fail("mmap file");

    void *block = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (block == MAP_FAILED)
        fail("mmap anonymous");
    memset(block, 2, 4096);

    struct timespec pause = {0, 600 * 1000 * 1000};
    nanosleep(&pause, NULL);
    return 0;
}

/* Copies this image to a hostile name in DIR, removes the image it runs from (unless it is
 * the original), and execs the copy. */
static int reexec(const char *dir, int left, const char *self)
{
    int copy = strstr(self, "owned") != NULL;
    if (left <= 0) {
        if (copy)
            unlink(self);
        return 0;
    }
    char next[4096];
    snprintf(next, sizeof next, "%s/" HOSTILE "%d", dir, left);
    int from = open(self, O_RDONLY);
    int to = open(next, O_WRONLY | O_CREAT | O_TRUNC, 0700);
    if (from < 0 || to < 0)
        fail("copying itself");
    struct stat st;
    if (fstat(from, &st) != 0)
        fail("fstat");
    for (off_t done = 0; done < st.st_size;) {
        ssize_t sent = sendfile(to, from, NULL, (size_t)(st.st_size - done));
        if (sent <= 0)
            fail("sendfile");
        done += sent;
    }
    close(from);
    close(to);
    if (copy)
        unlink(self);
    char count[16];
    snprintf(count, sizeof count, "%d", left - 1);
    char *argv[] = {next, "reexec", (char *)dir, count, NULL};
    execv(next, argv);
    fail("execv");
    return 1;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "names") == 0)
        return names(argv[2]);
    if (argc == 4 && strcmp(argv[1], "reexec") == 0) {
        /* The image this process runs is gone before memtrace reads it. */
        char self[4096];
        ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
        if (len < 0)
            fail("readlink");
        self[len] = '\0';
        return reexec(argv[2], atoi(argv[3]), self);
    }
    fprintf(stderr, "usage: %s names DIR | reexec DIR N\n", argv[0]);
    return 2;
}
