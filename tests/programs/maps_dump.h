/* Copies /proc/self/maps to a file with plain open/read/write: no stdio, no malloc, so the
 * copy is the layout exactly as the process leaves it. The layout test compares it with
 * memtrace's rebuilt layout at exit. */
#ifndef MAPS_DUMP_H
#define MAPS_DUMP_H
#include <fcntl.h>
#include <unistd.h>

static char maps_buffer[1 << 16];

static void dump_maps(const char *path) {
    if (!path) return;
    int in = open("/proc/self/maps", O_RDONLY);
    int out = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (in < 0 || out < 0) _exit(90);
    ssize_t n;
    while ((n = read(in, maps_buffer, sizeof maps_buffer)) > 0)
        if (write(out, maps_buffer, (size_t)n) != n) _exit(91);
    close(in);
    close(out);
}
#endif
