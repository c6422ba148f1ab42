/*
 * server_roles.c - what each CURVE role may ask a node (curve.h):
 *   writer (the router): APPLY and its continuations, state requests,
 *          body and sieve reads, PING;
 *   peer (another node): transfers, state requests, body and sieve
 *          reads, STATUS, VERIFY and DIGEST (self-heal asks a source to
 *          verify itself first), PING;
 *   admin (cairnctl): everything - export, import, compact, verify,
 *          status, remove, and what the others may.
 * With CURVE off there are no roles and every request is served; a peer
 * the ZAP handler admitted without a role gets nothing.
 */
#include "server_int.h"

#include <stdio.h>
#include <string.h>

static bool
reads(Cairn__Kind kind)
{
    return kind == CAIRN__KIND__STATE_REQUEST ||
           kind == CAIRN__KIND__BODY_REQUEST ||
           kind == CAIRN__KIND__SIEVE_REQUEST || kind == CAIRN__KIND__PING;
}

static bool
writer_may(const Cairn__Envelope *envelope)
{
    return envelope->continuation || envelope->kind == CAIRN__KIND__APPLY ||
           reads(envelope->kind);
}

static bool
peer_may(const Cairn__Envelope *envelope)
{
    switch (envelope->kind) {
    case CAIRN__KIND__TRANSFER_BEGIN:
        /* making this node pull a copy in is the administrator's call */
        return envelope->verb == NULL || strcmp(envelope->verb, "PULL") != 0;
    case CAIRN__KIND__TRANSFER_CHUNK:
    case CAIRN__KIND__TRANSFER_END:
    case CAIRN__KIND__STATUS_REQUEST:
    case CAIRN__KIND__VERIFY_REQUEST:
    case CAIRN__KIND__DIGEST_REQUEST:
        return true;
    default:
        return reads(envelope->kind);
    }
}

bool
node_role_allows(enum cairn_curve_role role, const Cairn__Envelope *envelope,
                 char *refusal, size_t refusal_size)
{
    bool allowed;
    const ProtobufCEnumValue *kind = protobuf_c_enum_descriptor_get_value(
        &cairn__kind__descriptor, (int)envelope->kind);

    switch (role) {
    case CAIRN_CURVE_ROLE_NONE:
    case CAIRN_CURVE_ROLE_ADMIN:
        return true;
    case CAIRN_CURVE_ROLE_WRITER:
        allowed = writer_may(envelope);
        break;
    case CAIRN_CURVE_ROLE_PEER:
        allowed = peer_may(envelope);
        break;
    default:
        allowed = false;
        break;
    }
    if (!allowed)
        snprintf(refusal, refusal_size,
                 "refused: a %s key may not ask for %s%s%s (role admin "
                 "needed)",
                 cairn_curve_role_name(role), kind ? kind->name : "this",
                 envelope->verb && envelope->verb[0] ? " " : "",
                 envelope->verb ? envelope->verb : "");
    return allowed;
}
