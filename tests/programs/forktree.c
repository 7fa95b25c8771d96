/* parent -> child -> grandchild; only the grandchild maps memory: 7 anonymous mappings of
 * distinct sizes, made after the forks so --follow must have picked up both generations. */
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

static void wait_for(pid_t pid) {
    int status;
    if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status))
        _exit(1);
}

int main(void) {
    pid_t child = fork();
    if (child == 0) {
        pid_t grandchild = fork();
        if (grandchild == 0) {
            for (int i = 1; i <= 7; i++)
                if (mmap(NULL, (size_t)i * 12288, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) == MAP_FAILED)
                    _exit(2);
            _exit(0);
        }
        wait_for(grandchild);
        _exit(0);
    }
    wait_for(child);
    return 0;
}
