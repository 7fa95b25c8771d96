/* Waits until SIGUSR1, then maps 5 anonymous regions of 64 KiB and exits: the --pid test
 * attaches while it sleeps and must see exactly those 5 mappings. Writes "ready\n" to stdout
 * once its handler is in place. */
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

static volatile sig_atomic_t go;
static void on_usr1(int signal) { (void)signal; go = 1; }

int main(void) {
    struct sigaction action = {0};
    action.sa_handler = on_usr1;
    sigaction(SIGUSR1, &action, NULL);
    if (write(1, "ready\n", 6) != 6) return 1;
    while (!go) pause();
    for (int i = 0; i < 5; i++)
        if (mmap(NULL, 65536, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) == MAP_FAILED)
            _exit(2);
    _exit(0);
}
