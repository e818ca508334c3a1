/* C helpers for the Go package (static inline; included by the cgo preambles).
 *
 * Each helper makes one swucx call and, when it fails, copies the thread's last error message
 * in the same cgo call (a goroutine may move to another thread between two cgo calls, and the
 * message is per thread). Operations that complete at once are finished here too (details read,
 * request freed), so the common path costs one cgo call. */
#ifndef SWUCX_GO_H
#define SWUCX_GO_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "swucx.h"

typedef struct {
    swucx_status_t st; /* SWUCX_OK, SWUCX_INPROGRESS (out is the request), or an error */
    void *out;         /* a new handle, or the request still in progress */
    size_t length;     /* a completed operation's length */
    uint64_t tag;      /* a completed tag receive's sender tag */
    char *msg;         /* on error: the detail message (malloc'd; the Go side frees it) */
    int detached;      /* swx_wait: the peer failed while UCX still held the operation, which
                        * may still touch its buffers (swucx_request_is_detached) */
} swx_res;

static inline char *swx_msg(void)
{
    size_t n = swucx_last_error_message(NULL, 0);
    char *m = (char *)malloc(n + 1);
    if (m != NULL) swucx_last_error_message(m, n + 1);
    return m;
}

static inline swx_res swx_status(swucx_status_t st)
{
    swx_res r = {st, NULL, 0, 0, NULL};
    if (st < 0) r.msg = swx_msg();
    return r;
}

static inline swx_res swx_handle(swucx_status_t st, void *out)
{
    swx_res r = swx_status(st);
    if (st == SWUCX_OK) r.out = out;
    return r;
}

/* After posting an operation: finish it at once if it completed, else hand the request back. */
static inline swx_res swx_op(swucx_status_t st, swucx_request_t *req)
{
    swx_res r = {st, NULL, 0, 0, NULL};
    if (st == SWUCX_OK) {
        r.st = swucx_request_info(req, &r.length, &r.tag);
        if (r.st < 0) r.msg = swx_msg();
        swucx_request_free(req);
    } else if (st == SWUCX_INPROGRESS) {
        r.out = req;
    } else {
        r.msg = swx_msg();
    }
    return r;
}

/* Packs the signals a wait watches (NULL ones left out) into sigs; returns their count. */
static inline size_t swx_signals(const swucx_signal_t **sigs, const swucx_signal_t *s0,
                                 const swucx_signal_t *s1, const swucx_signal_t *s2)
{
    size_t n = 0;
    if (s0 != NULL) sigs[n++] = s0;
    if (s1 != NULL) sigs[n++] = s1;
    if (s2 != NULL) sigs[n++] = s2;
    return n;
}

/* Waits for a request up to timeout_ms (negative: no limit), through the engine with flags
 * (SWUCX_WAIT_*), watching up to three signals (NULL: none; a raised one ends the wait), or,
 * when engine is NULL, by progressing on this thread. Still running (timed out or signalled): st is SWUCX_INPROGRESS.
 * Done: the final status, the details, and the request is freed. */
static inline swx_res swx_wait(const swucx_engine_t *engine, swucx_request_t *req, int64_t timeout_ms,
                               uint32_t flags, const swucx_signal_t *s0,
                               const swucx_signal_t *s1, const swucx_signal_t *s2)
{
    swx_res r = {SWUCX_INPROGRESS, NULL, 0, 0, NULL};
    swucx_status_t st;
    if (engine != NULL) {
        const swucx_signal_t *sigs[3];
        size_t n = swx_signals(sigs, s0, s1, s2);
        st = swucx_engine_wait_signals(engine, req, timeout_ms, flags, sigs, n);
    } else {
        st = swucx_request_wait(req, timeout_ms);
    }
    if (st == SWUCX_INPROGRESS || st == SWUCX_ERR_TIMED_OUT || st == SWUCX_ERR_BUSY) {
        st = swucx_request_test(req);
        if (st == SWUCX_INPROGRESS) return r;
    }
    if (st == SWUCX_OK) {
        r.st = swucx_request_info(req, &r.length, &r.tag);
    } else {
        r.st = st;
    }
    if (r.st < 0) {
        /* The operation's own failure has no last-error message: take the status text. */
        const char *s = swucx_status_string(r.st);
        r.msg = (char *)malloc(strlen(s) + 1);
        if (r.msg != NULL) strcpy(r.msg, s);
    }
    r.detached = swucx_request_is_detached(req);
    swucx_request_free(req);
    return r;
}

/* One burst of Engine.Spin in one cgo call: announces a spin first when begin is set
 * (swucx_engine_spin_begin), then progresses up to rounds times. The first round that does
 * something ends the spin (a caller that spins on announces a new one) and its event count is
 * returned; 0 when nothing happened (the spin stays announced). */
static inline uint32_t swx_spin_burst(const swucx_engine_t *engine, int begin, int rounds)
{
    if (begin) swucx_engine_spin_begin(engine);
    for (int i = 0; i < rounds; i++) {
        uint32_t n = swucx_engine_progress(engine);
        if (n > 0) {
            swucx_engine_spin_end(engine);
            return n;
        }
    }
    return 0;
}

static inline swucx_signal_t *swx_signal_create(void)
{
    swucx_signal_t *s = NULL;
    return swucx_signal_create(&s) == SWUCX_OK ? s : NULL;
}

/* ---- context, engine ---- */

static inline swx_res swx_context_create(uint64_t features, uint64_t flags, const char *name,
                                         const char **kv, size_t count)
{
    swucx_context_params_t p;
    swucx_config_entry_t *entries = NULL;
    memset(&p, 0, sizeof p);
    p.field_mask = SWUCX_CONTEXT_PARAM_FIELD_FEATURES | SWUCX_CONTEXT_PARAM_FIELD_FLAGS;
    p.features = features;
    p.flags = flags;
    if (name != NULL) {
        p.field_mask |= SWUCX_CONTEXT_PARAM_FIELD_NAME;
        p.name = name;
    }
    if (count > 0) {
        entries = (swucx_config_entry_t *)calloc(count, sizeof *entries);
        if (entries == NULL) return swx_status(SWUCX_ERR_NO_MEMORY);
        for (size_t i = 0; i < count; i++) {
            entries[i].key = kv[2 * i];
            entries[i].value = kv[2 * i + 1];
        }
        p.field_mask |= SWUCX_CONTEXT_PARAM_FIELD_CONFIG;
        p.config = entries;
        p.config_count = count;
    }
    swucx_context_t *ctx = NULL;
    swucx_status_t st_ = swucx_context_create(&p, &ctx);
    swx_res r = swx_handle(st_, ctx);
    free(entries);
    return r;
}

static inline swx_res swx_engine_create(const swucx_context_t *ctx)
{
    swucx_engine_t *e = NULL;
    swucx_status_t st_ = swucx_engine_create(ctx, &e);
    return swx_handle(st_, e);
}

static inline swx_res swx_engine_worker(const swucx_engine_t *e)
{
    swucx_worker_t *w = NULL;
    swucx_status_t st_ = swucx_engine_worker(e, &w);
    return swx_handle(st_, w);
}

/* Copies the worker's address into a malloc'd buffer (out, length). */
static inline swx_res swx_worker_address(const swucx_worker_t *w)
{
    swucx_bytes_t *b = NULL;
    swx_res r = swx_status(swucx_worker_address(w, &b));
    if (r.st == SWUCX_OK) {
        r.length = swucx_bytes_length(b);
        r.out = malloc(r.length + 1);
        if (r.out != NULL) memcpy(r.out, swucx_bytes_data(b), r.length);
        swucx_bytes_destroy(b);
    }
    return r;
}

/* ---- connections ---- */

static inline swx_res swx_connect(const swucx_worker_t *w, const char *addr)
{
    swucx_ep_t *ep = NULL;
    swucx_status_t st_ = swucx_worker_connect(w, addr, &ep);
    return swx_handle(st_, ep);
}

static inline swx_res swx_connect_address(const swucx_worker_t *w, const void *addr, size_t len)
{
    swucx_ep_t *ep = NULL;
    swucx_status_t st_ = swucx_worker_connect_address(w, addr, len, &ep);
    return swx_handle(st_, ep);
}

static inline swx_res swx_listener_create(const swucx_worker_t *w, const char *addr)
{
    swucx_listener_t *l = NULL;
    swucx_status_t st_ = swucx_listener_create(w, addr, &l);
    swx_res r = swx_handle(st_, l);
    if (r.st == SWUCX_OK) {
        uint16_t port = 0;
        swucx_listener_port(l, &port);
        r.length = port;
    }
    return r;
}

/* Accepts a connection request taken with status st on w; no request yet (timed out or
 * signalled): st is SWUCX_INPROGRESS. */
static inline swx_res swx_accept_request(swucx_status_t st, swucx_conn_request_t *cr,
                                         const swucx_worker_t *w)
{
    if (st == SWUCX_ERR_TIMED_OUT || st == SWUCX_INPROGRESS) {
        swx_res r = {SWUCX_INPROGRESS, NULL, 0, 0, NULL};
        return r;
    }
    if (st != SWUCX_OK) return swx_status(st);
    swucx_ep_t *ep = NULL;
    swucx_status_t st_ = swucx_worker_accept(w, cr, &ep);
    return swx_handle(st_, ep);
}

/* Takes a connection request (up to timeout_ms, progressing the worker) and accepts it on w. */
static inline swx_res swx_accept(const swucx_listener_t *l, const swucx_worker_t *w, int64_t timeout_ms)
{
    swucx_conn_request_t *cr = NULL;
    swucx_status_t st = swucx_listener_accept(l, timeout_ms, &cr);
    return swx_accept_request(st, cr, w);
}

/* As swx_accept, sleeping while the engine progresses (no limit) until a request arrives or
 * one of the signals (NULL: none) is raised. */
static inline swx_res swx_engine_accept(const swucx_engine_t *e, const swucx_listener_t *l,
                                        const swucx_worker_t *w, const swucx_signal_t *s0,
                                        const swucx_signal_t *s1, const swucx_signal_t *s2)
{
    const swucx_signal_t *sigs[3];
    size_t n = swx_signals(sigs, s0, s1, s2);
    swucx_conn_request_t *cr = NULL;
    swucx_status_t st = swucx_engine_accept(e, l, -1, sigs, n, &cr);
    return swx_accept_request(st, cr, w);
}

static inline swx_res swx_ep_close(const swucx_ep_t *ep, uint32_t mode)
{
    return swx_status(swucx_ep_close(ep, mode));
}

/* ---- operations ---- */

static inline swx_res swx_tag_send(const swucx_ep_t *ep, const void *buf, size_t len, uint64_t tag)
{
    swucx_request_t *req = NULL;
    swucx_status_t st = swucx_ep_tag_send(ep, buf, len, tag, &req);
    return swx_op(st, req);
}

/* A send within the call (swucx_ep_*_send_now): OK, or SWUCX_ERR_NO_RESOURCE when it cannot go
 * at once (no message: nothing went wrong), or an error with its message. */
static inline swx_res swx_now(swucx_status_t st)
{
    swx_res r = {st, NULL, 0, 0, NULL};
    if (st < 0 && st != SWUCX_ERR_NO_RESOURCE) r.msg = swx_msg();
    return r;
}

static inline swx_res swx_tag_send_now(const swucx_ep_t *ep, const void *buf, size_t len,
                                       uint64_t tag)
{
    return swx_now(swucx_ep_tag_send_now(ep, buf, len, tag));
}

static inline swx_res swx_am_send_now(const swucx_ep_t *ep, uint16_t id, const void *hdr,
                                      size_t hlen, const void *buf, size_t len, uint32_t flags)
{
    return swx_now(swucx_ep_am_send_now(ep, id, hdr, hlen, buf, len, flags));
}

static inline swx_res swx_tag_recv(const swucx_worker_t *w, void *buf, size_t len, uint64_t tag,
                                   uint64_t mask)
{
    swucx_request_t *req = NULL;
    swucx_status_t st = swucx_worker_tag_recv(w, buf, len, tag, mask, &req);
    return swx_op(st, req);
}

/* swucx_engine_tag_recv watching stop (NULL: nothing): st is SWUCX_OK (length, tag),
 * SWUCX_ERR_TIMED_OUT or SWUCX_ERR_CANCELED (nothing received, nothing posted; no message),
 * SWUCX_INPROGRESS (out: the request of a matched message still arriving), or an error. */
static inline swx_res swx_engine_tag_recv(const swucx_engine_t *engine, void *buf, size_t len,
                                          uint64_t tag, uint64_t mask, int64_t timeout_ms,
                                          const swucx_signal_t *stop)
{
    swx_res r = {SWUCX_OK, NULL, 0, 0, NULL};
    swucx_request_t *req = NULL;
    const swucx_signal_t *sigs[1] = {stop};
    r.st = swucx_engine_tag_recv(engine, buf, len, tag, mask, timeout_ms, 0, sigs, stop != NULL,
                                 &r.length, &r.tag, &req);
    if (r.st == SWUCX_INPROGRESS) {
        r.out = req;
    } else if (r.st < 0 && r.st != SWUCX_ERR_TIMED_OUT && r.st != SWUCX_ERR_CANCELED) {
        r.msg = swx_msg();
    }
    return r;
}

static inline swx_res swx_tag_send_mem(const swucx_ep_t *ep, const swucx_mem_t *m, size_t off,
                                       size_t len, uint64_t tag)
{
    swucx_request_t *req = NULL;
    swucx_status_t st = swucx_ep_tag_send_mem(ep, m, off, len, tag, &req);
    return swx_op(st, req);
}

static inline swx_res swx_tag_recv_mem(const swucx_worker_t *w, const swucx_mem_t *m, size_t off,
                                       size_t len, uint64_t tag, uint64_t mask)
{
    swucx_request_t *req = NULL;
    swucx_status_t st = swucx_worker_tag_recv_mem(w, m, off, len, tag, mask, &req);
    return swx_op(st, req);
}

static inline swx_res swx_stream_send(const swucx_ep_t *ep, const void *buf, size_t len)
{
    swucx_request_t *req = NULL;
    swucx_status_t st = swucx_ep_stream_send(ep, buf, len, &req);
    return swx_op(st, req);
}

static inline swx_res swx_stream_recv(const swucx_ep_t *ep, void *buf, size_t len, int some)
{
    swucx_request_t *req = NULL;
    swucx_status_t st = some ? swucx_ep_stream_recv_some(ep, buf, len, &req)
                             : swucx_ep_stream_recv(ep, buf, len, &req);
    return swx_op(st, req);
}

static inline swx_res swx_am_send(const swucx_ep_t *ep, uint16_t id, const void *hdr, size_t hlen,
                                  const void *buf, size_t len, uint32_t flags)
{
    swucx_request_t *req = NULL;
    swucx_status_t st = swucx_ep_am_send(ep, id, hdr, hlen, buf, len, flags, &req);
    return swx_op(st, req);
}

static inline swx_res swx_am_desc_recv(swucx_am_desc_t *d, void *buf, size_t len)
{
    swucx_request_t *req = NULL;
    swucx_status_t st = swucx_am_desc_recv(d, buf, len, &req);
    return swx_op(st, req);
}

static inline swx_res swx_mem_allocate(const swucx_context_t *ctx, size_t len)
{
    swucx_mem_t *m = NULL;
    swucx_status_t st_ = swucx_mem_allocate(ctx, len, &m);
    swx_res r = swx_handle(st_, m);
    return r;
}

/* ---- active messages ---- */

#include "swucx_am_info.h"

static inline void swx_am_info_get(swucx_am_msg_t *msg, swx_am_info *info)
{
    memset(info, 0, sizeof *info);
    swucx_am_msg_header(msg, &info->header, &info->header_length);
    swucx_am_msg_reply_ep(msg, &info->reply_ep);
    info->length = swucx_am_msg_length(msg);
    info->rndv = swucx_am_msg_is_rndv(msg);
    if (!info->rndv && info->length > 0) {
        swucx_am_msg_data(msg, &info->data);
    }
}

/* Starts receiving the payload into buf (len bytes). */
static inline swx_res swx_am_msg_recv(swucx_am_msg_t *msg, void *buf, size_t len)
{
    swucx_request_t *req = NULL;
    swucx_status_t st = swucx_am_msg_recv(msg, buf, len, &req);
    return swx_op(st, req);
}

/* The exported Go handler (am_export.go). */
extern void swucxGoAMHandler(swucx_am_msg_t *msg, swx_am_info *info, void *user_data);

/* The registered callback: gathers the message's details here, in C, so the Go handler needs no
 * call back into C for them (a cgo call from inside a callback costs tens of nanoseconds per
 * message). */
static void swx_am_trampoline(swucx_am_msg_t *msg, void *user_data)
{
    swx_am_info info;
    swx_am_info_get(msg, &info);
    swucxGoAMHandler(msg, &info, user_data);
}

static inline swx_res swx_set_am_handler(const swucx_worker_t *w, uint16_t id, uintptr_t handle)
{
    return swx_status(swucx_worker_set_am_handler(w, id, swx_am_trampoline, (void *)handle));
}

/* A handler that drops every message (UCX releases it): replaces a Go handler before its
 * cgo.Handle is deleted. UCX runs handlers under the worker's lock, which setting one takes too,
 * so once this is set no call with the old handle runs or starts. */
static inline void swx_am_drop(swucx_am_msg_t *msg, void *user_data)
{
    (void)msg;
    (void)user_data;
}

static inline swx_res swx_set_am_drop(const swucx_worker_t *w, uint16_t id)
{
    return swx_status(swucx_worker_set_am_handler(w, id, swx_am_drop, NULL));
}

/* ---- active-message queues ---- */

typedef struct {
    swx_res r;               /* the payload's receive (as swx_op): SWUCX_OK (length set), or
                              * SWUCX_INPROGRESS with the request in r.out; without a message,
                              * the wait's end: SWUCX_INPROGRESS (signalled) or an error */
    int taken;               /* a message was taken from the queue */
    size_t header_length;
    int rndv;                /* the payload is still at the sender */
    swucx_am_desc_t *desc;   /* not NULL: the message, handed back untouched, as the header
                              * needs a buffer of header_length bytes, the payload a longer one
                              * or, by rendezvous, a pinned one: swx_am_take it */
    swucx_ep_t *reply_ep;    /* NULL unless the sender asked for replies */
} swx_am_res;

/* Takes the header (into hdr, at least header_length bytes) and the payload (into buf, len
 * bytes; kept past the call for a rendezvous payload) out of a message handed back in desc. */
static inline swx_am_res swx_am_take(swucx_am_desc_t *desc, void *buf, size_t len, void *hdr)
{
    swx_am_res out;
    const void *h = NULL;
    swucx_request_t *req = NULL;
    swucx_status_t st;
    memset(&out, 0, sizeof out);
    out.taken = 1;
    swucx_am_desc_header(desc, &h, &out.header_length);
    if (out.header_length > 0) memcpy(hdr, h, out.header_length);
    st = swucx_am_desc_recv(desc, buf, len, &req);
    out.r = swx_op(st, req);
    return out;
}

/* Waits through the engine (swucx_engine_am_recv_into, up to three signals) for the queue's
 * next message: an eager payload that fits lands in buf (not kept past the call) and a message
 * without a header is done; any other comes back in desc. */
static inline swx_am_res swx_am_recv(const swucx_engine_t *engine, const swucx_am_queue_t *queue,
                                     int64_t timeout_ms, uint32_t flags,
                                     const swucx_signal_t *s0, const swucx_signal_t *s1,
                                     const swucx_signal_t *s2, void *buf, size_t len)
{
    const swucx_signal_t *sigs[3];
    size_t n = swx_signals(sigs, s0, s1, s2);
    swucx_am_recv_info_t info;
    swx_am_res out;
    swucx_status_t st;
    memset(&out, 0, sizeof out);
    st = swucx_engine_am_recv_into(engine, queue, timeout_ms, flags, sigs, n, NULL, 0, buf, len,
                                   &info);
    if (st != SWUCX_OK) {
        out.r = swx_status(st);
        return out;
    }
    out.taken = 1;
    out.header_length = info.header_length;
    out.reply_ep = info.reply_ep;
    out.desc = info.desc;
    if (info.desc != NULL) {
        out.rndv = swucx_am_desc_is_rndv(info.desc);
    } else {
        out.r.st = SWUCX_OK;
        out.r.length = info.length;
    }
    return out;
}

static inline swx_res swx_am_queue_create(const swucx_worker_t *w, uint16_t id)
{
    swucx_am_queue_t *q = NULL;
    swucx_status_t st = swucx_am_queue_create(w, id, &q);
    return swx_handle(st, q);
}

#endif /* SWUCX_GO_H */
