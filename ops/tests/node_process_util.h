/*
 * node_process_util.h - what the ops tests that run real cairn-node
 * processes share: their cluster.conf, cairnctl run in process, start node
 * i of the config on a port of its choosing (readiness by the endpoint
 * file it writes), stop it by pid, and the monotonic clock their limits
 * use.
 */
#ifndef CAIRN_OPS_NODE_PROCESS_UTIL_H
#define CAIRN_OPS_NODE_PROCESS_UTIL_H

#include "check.h"
#include "ops.h"

#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
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
              "tcp://127.0.0.1:*", "-w", endpoint_file, "--allow-root",
              (char *)NULL);
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

/*
 * Writes config_path for count nodes "node1".. of one destination "main"
 * (replicas 2): endpoints[i] where known, a distinct placeholder before a
 * node has bound; data under dir/n<i+1>. extra (may be "") is appended to
 * the destination's section.
 */
static inline void
write_cluster_config(const char *config_path, const char *dir,
                     char (*endpoints)[256], int count, const char *extra)
{
    FILE *file = fopen(config_path, "w");

    CHECK(file != NULL);
    if (file == NULL)
        return;
    fprintf(file,
            "[router]\n[channel backup]\nlisten = 127.0.0.1:1\nsasl_user = u\n"
            "sasl_password = p\ndestinations = main\n"
            "[destination main]\nnodes = node1, node2, node3\n"
            "replicas = 2\n%s",
            extra);
    for (int i = 0; i < count; i++) {
        char endpoint[300];

        snprintf(endpoint, sizeof(endpoint), "%s", endpoints[i]);
        if (endpoint[0] == '\0')
            snprintf(endpoint, sizeof(endpoint), "tcp://127.0.0.1:%d", i + 1);
        fprintf(file, "[node node%d]\nendpoint = %s\ndata_dir = %s/n%d\n",
                i + 1, endpoint, dir, i + 1);
    }
    CHECK(fclose(file) == 0);
}

/*
 * Runs cairnctl -c config_path with the words of line, in process.
 * *out and *err_out (each may be NULL: dropped; stderr then printed when
 * not empty) are owned by the caller (free()). Returns the exit status.
 */
static inline int
run_cairnctl(const char *config_path, const char *line, char **out,
             char **err_out)
{
    char *copy = strdup(line), *argv[40], *save = NULL;
    char *output = NULL, *errors = NULL;
    size_t out_size = 0, err_size = 0;
    FILE *stream = open_memstream(&output, &out_size);
    FILE *err = open_memstream(&errors, &err_size);
    int argc = 0, status;

    argv[argc++] = "cairnctl";
    argv[argc++] = "-c";
    argv[argc++] = (char *)config_path;
    for (char *word = strtok_r(copy, " ", &save); word && argc < 39;
         word = strtok_r(NULL, " ", &save))
        argv[argc++] = word;
    argv[argc] = NULL;
    status = cairn_ops_main(argc, argv, stream, err);
    fclose(stream);
    fclose(err);
    if (out != NULL)
        *out = output;
    else
        free(output);
    if (err_out != NULL) {
        *err_out = errors;
        errors = NULL;
    } else if (errors[0] != '\0') {
        fprintf(stderr, "[cairnctl %s] stderr: %s", line, errors);
    }
    free(errors);
    free(copy);
    return status;
}

#endif /* CAIRN_OPS_NODE_PROCESS_UTIL_H */
