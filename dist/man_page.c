/*
 * man_page.c - the build's generator of the man pages that come from
 * tables: cairnctl(8) from the subcommand table, cluster.conf(5) from the
 * configuration key table. Not installed; run by dist/CMakeLists.txt.
 *
 *     cairn_man_page cairnctl|cluster.conf VERSION OUTPUT
 */
#include "config.h"
#include "ops.h"

#include <stdio.h>
#include <string.h>

#define PAGE_MAX (4 * 1024 * 1024)

int
main(int argc, char **argv)
{
    struct cairn_buf page;
    FILE *file = NULL;
    int rc, status = 1;

    if (argc != 4) {
        fprintf(stderr, "usage: cairn_man_page cairnctl|cluster.conf version "
                        "output\n");
        return 64;
    }
    cairn_buf_init(&page, PAGE_MAX);
    if (strcmp(argv[1], "cairnctl") == 0)
        rc = cairn_ops_format_man(argv[2], &page);
    else if (strcmp(argv[1], "cluster.conf") == 0)
        rc = cairn_config_format_man(argv[2], &page);
    else
        rc = CAIRN_EINVAL;
    if (rc < 0) {
        fprintf(stderr, "cairn_man_page %s: %s\n", argv[1], cairn_strerror(rc));
        goto out;
    }
    if ((file = fopen(argv[3], "w")) == NULL ||
        fwrite(page.data, 1, page.len, file) != page.len) {
        perror(argv[3]);
        goto out;
    }
    status = 0;
out:
    if (file != NULL && fclose(file) != 0 && status == 0) {
        perror(argv[3]);
        status = 1;
    }
    cairn_buf_release(&page);
    return status;
}
