/* What the Go AM handler needs from a message, gathered in C in one go (swx_am_info_get). Only
 * declarations: am_export.go, whose preamble may hold no definitions (it has //export), includes
 * it too. */
#ifndef SWUCX_AM_INFO_H
#define SWUCX_AM_INFO_H

#include "swucx.h"

typedef struct {
    const void *header;
    size_t header_length;
    const void *data;      /* eager payload (NULL for rendezvous or empty) */
    size_t length;
    int rndv;              /* the payload is still at the sender: swx_am_msg_recv it */
    swucx_ep_t *reply_ep;  /* NULL without SWUCX_AM_FLAG_REPLY */
} swx_am_info;

#endif
