/*
 * node_process_util.h - what the ops tests that run real cairn-node
 * processes share: start node i of a config on a port of its choosing
 * (readiness by the endpoint file it writes), stop it by pid, and the
 * monotonic clock their limits use.
 */
#ifndef CAIRN_OPS_NODE_PROCESS_UTIL_H
#define CAIRN_OPS_NODE_PROCESS_UTIL_H

#include "check.h"

#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* How long a node may take to bind (ASan builds on a busy machine). */
#define NODE_READY_TIMEOUT_MS 30000

static inline uint64_t
now_ms(void)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000 + (uint64_t)now.tv_nsec / 1000000;
}

/*
 * Starts binary as node "node<i+1>" of config_path, logging to
 * dir/node<i+1>.log; *pid is the child, endpoint (size bytes) the
 * address it bound once ready. 0, or -1 when it did not come up.
 */
static inline int
node_process_start(const char *binary, const char *config_path, const char *dir,
                   int i, pid_t *pid, char *endpoint, size_t size)
{
    char name[16], endpoint_file[600], log_path[600];
    uint64_t deadline = now_ms() + NODE_READY_TIMEOUT_MS;
    FILE *file = NULL;
    int rc = -1;

    snprintf(name, sizeof(name), "node%d", i + 1);
    snprintf(endpoint_file, sizeof(endpoint_file), "%s/endpoint%d", dir, i + 1);
    snprintf(log_path, sizeof(log_path), "%s/node%d.log", dir, i + 1);
    unlink(endpoint_file);
    if ((*pid = fork()) == 0) {
        int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0600);

        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execl(binary, "cairn-node", "-f", "-c", config_path, "-n", name, "-e",
              "tcp://127.0.0.1:*", "-w", endpoint_file, (char *)NULL);
        _exit(127);
    }
    if (*pid <= 0)
        return -1;
    while (now_ms() < deadline && (file = fopen(endpoint_file, "r")) == NULL &&
           waitpid(*pid, NULL, WNOHANG) == 0)
        usleep(20000);
    if (file == NULL)
        return -1;
    if (fgets(endpoint, (int)size, file) != NULL) {
        endpoint[strcspn(endpoint, "\n")] = '\0';
        rc = 0;
    }
    fclose(file);
    return rc;
}

/*
 * SIGTERM to a node this test started, and reaps it; the exit status
 * (0 for a clean exit, also no sanitizer report in an ASan build).
 */
static inline int
node_process_stop(pid_t *pid)
{
    int status = 0;

    if (*pid <= 0)
        return 0;
    kill(*pid, SIGTERM);
    CHECK(waitpid(*pid, &status, 0) == *pid);
    *pid = 0;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

#endif /* CAIRN_OPS_NODE_PROCESS_UTIL_H */
