/*
 * fuzz_ring_parse.c - libFuzzer target for the ring file parser. A random
 * input would never get past the SHA-256 check, so the input is taken as
 * the body of a ring file and sealed with its own checksum line first;
 * the parser must then refuse or accept it without crashing, and a ring
 * it accepts must survive a format/parse round trip unchanged.
 */
#include "common.h"
#include "placement.h"

#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    unsigned char digest[SHA256_DIGEST_LENGTH];
    struct cairn_ring *ring = NULL, *again = NULL;
    char *text = malloc(size + 80), *formatted = NULL;
    size_t len = size, formatted_len = 0;

    if (text == NULL)
        return 0;
    memcpy(text, data, size);
    SHA256(data, size, digest);
    len += (size_t)sprintf(text + len, "sha256 ");
    for (size_t i = 0; i < sizeof(digest); i++)
        len += (size_t)sprintf(text + len, "%02x", digest[i]);
    text[len++] = '\n';
    if (cairn_ring_parse(text, len, &ring) == 0) {
        if (cairn_ring_format(ring, &formatted, &formatted_len) != 0 ||
            cairn_ring_parse(formatted, formatted_len, &again) != 0 ||
            !cairn_ring_equal(ring, again))
            abort();
    }
    cairn_ring_free(ring);
    cairn_ring_free(again);
    free(formatted);
    free(text);
    return 0;
}
