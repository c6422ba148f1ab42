/*
 * fuzz_config.c - libFuzzer target for the cluster.conf reader. The
 * property checked: whatever the input, a text the parser accepts prints
 * (cairn_config_format) to a text that parses again, whose print parses
 * and prints to the very same bytes, and its JSON form prints too; a text it
 * refuses comes back with an error, never a crash or a leak. Build with
 * -DCAIRN_FUZZ=ON and clang.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

/* Appends the effective configuration of text to out as cluster.conf. */
static int
print_config(const char *text, size_t len, struct cairn_buf *out)
{
    struct cairn_config *config = NULL;
    struct cairn_config_error error;
    int rc =
        cairn_config_parse(text, len, "fuzz.conf", "/fuzz", &config, &error);

    if (rc == 0)
        rc = cairn_config_format(config, out);
    if (rc == 0) {
        struct cairn_buf json;

        cairn_buf_init(&json, 16u << 20);
        if (cairn_config_format_json(config, &json) != 0)
            abort();
        cairn_buf_release(&json);
    }
    cairn_config_free(config);
    return rc;
}

int
LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    struct cairn_buf first, second, third;

    cairn_buf_init(&first, 16u << 20);
    cairn_buf_init(&second, 16u << 20);
    cairn_buf_init(&third, 16u << 20);
    /* What cairnctl config show prints is a config file again; printed
     * once more it sets every key, so from then on the text is fixed
     * (the first print marks the keys the input left to "(default)"). */
    if (print_config((const char *)data, size, &first) == 0 &&
        (print_config(first.data, first.len, &second) != 0 ||
         print_config(second.data, second.len, &third) != 0 ||
         second.len != third.len ||
         memcmp(second.data, third.data, second.len) != 0))
        abort();
    cairn_buf_release(&first);
    cairn_buf_release(&second);
    cairn_buf_release(&third);
    return 0;
}
