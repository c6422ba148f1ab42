/*
 * parse.c - checked parsing of numbers, sizes, durations and booleans from
 * config files and the wire. Nothing here accepts trailing bytes.
 */
#include "common.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netdb.h>
#include <netinet/in.h>
#include <string.h>
#include <strings.h>

int
cairn_parse_u64(const char *text, size_t len, uint64_t min, uint64_t max,
                uint64_t *out)
{
    uint64_t value = 0;

    if (len == 0)
        return CAIRN_EPARSE;
    for (size_t i = 0; i < len; i++) {
        unsigned digit;

        if (text[i] < '0' || text[i] > '9')
            return CAIRN_EPARSE;
        digit = (unsigned)(text[i] - '0');
        if (value > (UINT64_MAX - digit) / 10)
            return CAIRN_EOVERFLOW;
        value = value * 10 + digit;
    }
    if (value < min || value > max)
        return CAIRN_EOVERFLOW;
    *out = value;
    return CAIRN_OK;
}

int
cairn_parse_u64_str(const char *text, uint64_t min, uint64_t max, uint64_t *out)
{
    return cairn_parse_u64(text, strlen(text), min, max, out);
}

/* Splits text into its leading digits and a unit suffix. */
static int
parse_with_unit(const char *text, uint64_t *number, const char **unit)
{
    size_t digits = 0;

    while (text[digits] >= '0' && text[digits] <= '9')
        digits++;
    *unit = text + digits;
    return cairn_parse_u64(text, digits, 0, UINT64_MAX, number);
}

static int
multiply(uint64_t number, uint64_t factor, uint64_t *out)
{
    if (factor != 0 && number > UINT64_MAX / factor)
        return CAIRN_EOVERFLOW;
    *out = number * factor;
    return CAIRN_OK;
}

int
cairn_parse_size(const char *text, uint64_t *out)
{
    static const char units[] = "KMGT";
    const char *unit;
    uint64_t number, factor = 1;
    int rc;

    if ((rc = parse_with_unit(text, &number, &unit)) < 0)
        return rc;
    if (*unit != '\0') {
        const char *found = strchr(units, toupper((unsigned char)*unit));

        if (found == NULL)
            return CAIRN_EPARSE;
        for (const char *u = units; u <= found; u++)
            factor *= 1024;
        unit++;
        if (*unit == 'B' || *unit == 'b')
            unit++;
        if (*unit != '\0')
            return CAIRN_EPARSE;
    }
    return multiply(number, factor, out);
}

int
cairn_parse_duration(const char *text, uint64_t *seconds)
{
    const char *unit;
    uint64_t number, factor;
    int rc;

    if ((rc = parse_with_unit(text, &number, &unit)) < 0)
        return rc;
    switch (*unit) {
    case '\0':
    case 's':
        factor = 1;
        break;
    case 'm':
        factor = 60;
        break;
    case 'h':
        factor = 3600;
        break;
    case 'd':
        factor = 86400;
        break;
    case 'w':
        factor = 7 * 86400;
        break;
    default:
        return CAIRN_EPARSE;
    }
    if (*unit != '\0' && unit[1] != '\0')
        return CAIRN_EPARSE;
    return multiply(number, factor, seconds);
}

int
cairn_parse_bool(const char *text, bool *out)
{
    static const char *const yes[] = {"yes", "true", "on", "1"};
    static const char *const no[] = {"no", "false", "off", "0"};

    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(text, yes[i]) == 0) {
            *out = true;
            return CAIRN_OK;
        }
        if (strcasecmp(text, no[i]) == 0) {
            *out = false;
            return CAIRN_OK;
        }
    }
    return CAIRN_EPARSE;
}

/*
 * "host:port" (a name resolves to its first address), "*:port" (every
 * IPv4 address) or "[ipv6]:port", as the config's address type documents;
 * *length is the address's size.
 */
int
cairn_parse_listen_address(const char *listen, struct sockaddr_storage *address,
                           socklen_t *length)
{
    const struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
                                   .ai_flags = AI_PASSIVE};
    const char *colon = strrchr(listen, ':');
    size_t host_length = colon != NULL ? (size_t)(colon - listen) : 0;
    struct addrinfo *found = NULL;
    char host[256];
    const char *name = host;
    uint64_t port;

    if (colon == NULL || host_length == 0 || host_length >= sizeof(host))
        return CAIRN_ECONFIG;
    memcpy(host, listen, host_length);
    host[host_length] = '\0';
    if (cairn_parse_u64_str(colon + 1, 0, 65535, &port) < 0)
        return CAIRN_ECONFIG;
    if (host[0] == '[') {
        if (host_length < 3 || host[host_length - 1] != ']' ||
            strchr(host, ':') == NULL)
            return CAIRN_ECONFIG;
        host[host_length - 1] = '\0';
        name = host + 1;
    } else if (strcmp(host, "*") == 0) {
        name = "0.0.0.0";
    }
    if (getaddrinfo(name, NULL, &hints, &found) != 0 || found == NULL)
        return CAIRN_ECONFIG;
    memset(address, 0, sizeof(*address));
    memcpy(address, found->ai_addr, found->ai_addrlen);
    *length = found->ai_addrlen;
    freeaddrinfo(found);
    if (address->ss_family == AF_INET6)
        ((struct sockaddr_in6 *)address)->sin6_port = htons((uint16_t)port);
    else if (address->ss_family == AF_INET)
        ((struct sockaddr_in *)address)->sin_port = htons((uint16_t)port);
    else
        return CAIRN_ECONFIG;
    return CAIRN_OK;
}
