/* Forks; the child execs argv[1..] (built for another ABI in the tests); the parent waits and
 * exits with the child's code. Built with -m32 it reproduces a 32-bit daemon starting a
 * 64-bit program (sshd -> bash, scenario 3). */
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 2) return 64;
    pid_t child = fork();
    if (child < 0) return 65;
    if (child == 0) {
        execv(argv[1], argv + 1);
        _exit(127);
    }
    int status = 0;
    if (waitpid(child, &status, 0) != child) return 66;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
