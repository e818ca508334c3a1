/* Ping-pong latency and windowed bandwidth over the swucx C API: the C twin of
 * examples/pingpong.rs, with the same flags, the same RESULT line and the same wire protocol, so
 * a C client runs against a Rust server and the reverse (tests/c_pingpong.rs checks both).
 *
 *   pingpong-c --server [--listen 0.0.0.0:13337] [--cpu 0]
 *   pingpong-c --connect 127.0.0.1:13337 --api tag|am|stream --mode lat|bw --size 8
 *              --iters 100000 [--warmup N] [--window 32] [--front] [--wireup cm|address]
 *              [--transport shm|tcp] [--cpu 1] [--features tm] [--multi] [--idle-secs N]
 *
 * The client's last line on stdout is the result, e.g.
 *   RESULT mode=lat api=am size=8 iters=100000 lat_us_p50=0.310 lat_us_p99=0.520 lat_us_avg=0.330
 *   RESULT mode=bw api=am size=1048576 iters=2000 window=32 gbps=14.900
 *
 * How it measures, as the Rust one (see its header comment for the control protocol):
 * - one registered region (swucx_mem_allocate) holds the send and the receive buffer; every
 *   operation passes the region handle plus offset and length (the *_mem functions), so UCX gets
 *   the memory handle and skips its registration cache;
 * - inline mode (the default) busy-polls: swucx_request_poll / swucx_worker_progress loops on a
 *   SERIALIZED worker (MULTI with --multi); --front waits through an engine (swucx_engine_wait);
 * - AM handlers count eager arrivals without copying; rendezvous payloads are received into the
 *   registered receive buffer (swucx_am_msg_recv_mem);
 * - tag and AM messages of up to SEND_NOW_MAX bytes are sent within the call
 *   (swucx_ep_tag_send_now / swucx_ep_am_send_now: no request), and with a request when UCX
 *   refuses (SWUCX_ERR_NO_RESOURCE: the transport is momentarily full).
 * Not in the C API: --front-spin-us (accepted; the engine's default spin is used), and the
 * engine's progress_until (with --front, AM arrivals are awaited by progressing the engine's
 * worker from this thread). */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#if defined(__x86_64__)
#include <x86intrin.h>
#endif

#include "swucx.h"

#define MAGIC 0x50505753u
#define VERSION 1u
#define HEADER_LEN 40u

#define CTRL 0xC7A1000000000000ull
#define HELLO (CTRL | 1u)
#define READY (CTRL | 2u)
#define ACK (CTRL | 3u)
#define BYE (CTRL | 4u)
#define DATA_TAG 1u
#define AM_DATA 7u
#define MAX_CTRL (64u * 1024u)
#define STUCK_S 30.0

enum api { API_TAG = 0, API_AM = 1, API_STREAM = 2 };
enum mode { MODE_LAT = 0, MODE_BW = 1 };
enum wireup { WIREUP_CM = 0, WIREUP_ADDRESS = 1 };

typedef struct {
    enum api api;
    enum mode mode;
    uint64_t size, iters, warmup;
    uint32_t window;
    bool front;
    enum wireup wireup;
} params_t;

/* ------------------------------------------------------------------------------------------ */
/* Errors: functions return 0 or -1 after storing a message here. */

static char g_error[1024];

static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_error, sizeof g_error, fmt, ap);
    va_end(ap);
    return -1;
}

/* A failed swucx call: its status text and the library's detail message. */
static int fail_st(const char *what, swucx_status_t st)
{
    char detail[512];
    swucx_last_error_message(detail, sizeof detail);
    return fail("%s: %s (%s)", what, swucx_status_string(st), detail);
}

#define TRY(call)                                                                                  \
    do {                                                                                           \
        if ((call) != 0) {                                                                         \
            return -1;                                                                             \
        }                                                                                          \
    } while (0)

/* A call that must start an operation: SWUCX_OK or SWUCX_INPROGRESS. */
#define TRY_START(what, call)                                                                      \
    do {                                                                                           \
        swucx_status_t st_ = (call);                                                               \
        if (st_ != SWUCX_OK && st_ != SWUCX_INPROGRESS) {                                          \
            return fail_st(what, st_);                                                             \
        }                                                                                          \
    } while (0)

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Time stamps for every round trip, as cheap as ucx_perftest's (its ucs_get_time reads the
 * time-stamp counter on x86-64; clock_gettime costs about 20 ns once per round trip). Ticks
 * become nanoseconds by the ratio of ticks to CLOCK_MONOTONIC time over the whole run; on other
 * CPUs the ticks are nanoseconds. */
typedef struct {
    uint64_t first_ns, first_tick;
} stamps_t;

static inline uint64_t stamp_now(void)
{
#if defined(__x86_64__)
    return __rdtsc();
#else
    return now_ns();
#endif
}

static stamps_t stamps_start(void)
{
    stamps_t c = {.first_ns = now_ns(), .first_tick = stamp_now()};
    return c;
}

/* Nanoseconds per tick, measured from stamps_start to now. */
static double stamps_ns_per_tick(const stamps_t *c)
{
    uint64_t ticks = stamp_now() - c->first_tick;
    return (double)(now_ns() - c->first_ns) / (double)(ticks ? ticks : 1);
}

/* ------------------------------------------------------------------------------------------ */
/* The 40-byte header, little endian. */

static void put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static uint32_t get_u32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        v |= (uint32_t)p[i] << (8 * i);
    }
    return v;
}

static uint64_t get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) {
        v |= (uint64_t)p[i] << (8 * i);
    }
    return v;
}

static void encode(const params_t *p, uint8_t h[HEADER_LEN])
{
    put_u32(h, MAGIC);
    put_u16(h + 4, VERSION);
    h[6] = (uint8_t)p->api;
    h[7] = (uint8_t)p->mode;
    put_u64(h + 8, p->size);
    put_u64(h + 16, p->iters);
    put_u64(h + 24, p->warmup);
    put_u32(h + 32, p->window);
    put_u32(h + 36, (p->front ? 1u : 0u) | (p->wireup == WIREUP_ADDRESS ? 2u : 0u));
}

static int validate(const params_t *p)
{
    if (p->iters == 0) {
        return fail("iters must be > 0");
    }
    if (p->window == 0) {
        return fail("window must be > 0");
    }
    if (p->size > (1ull << 32)) {
        return fail("size must be <= 4 GiB");
    }
    if (p->api == API_STREAM && p->size == 0) {
        return fail("stream needs size > 0");
    }
    return 0;
}

static int decode(const uint8_t *h, size_t len, params_t *p)
{
    if (len < HEADER_LEN) {
        return fail("header is %zu bytes, want %u", len, HEADER_LEN);
    }
    if (get_u32(h) != MAGIC) {
        return fail("bad header magic");
    }
    unsigned version = (unsigned)h[4] | ((unsigned)h[5] << 8);
    if (version != VERSION) {
        return fail("header version %u, want %u", version, VERSION);
    }
    if (h[6] > 2) {
        return fail("unknown api %u", h[6]);
    }
    if (h[7] > 1) {
        return fail("unknown mode %u", h[7]);
    }
    p->api = (enum api)h[6];
    p->mode = (enum mode)h[7];
    p->size = get_u64(h + 8);
    p->iters = get_u64(h + 16);
    p->warmup = get_u64(h + 24);
    p->window = get_u32(h + 32);
    uint32_t flags = get_u32(h + 36);
    p->front = (flags & 1u) != 0;
    p->wireup = (flags & 2u) ? WIREUP_ADDRESS : WIREUP_CM;
    return validate(p);
}

static const char *api_name(enum api api)
{
    return api == API_TAG ? "tag" : api == API_AM ? "am" : "stream";
}

/* ------------------------------------------------------------------------------------------ */
/* The driver: a worker busy-polled inline, or an engine (the thread-safe front). */

typedef struct {
    swucx_worker_t *worker;
    swucx_engine_t *engine; /* NULL inline */
} driver_t;

/* Called now and then from busy loops: fails on a dead peer or a wait that takes too long. */
static int check_stuck(const swucx_ep_t *ep, double *since)
{
    swucx_status_t failed = ep != NULL ? swucx_ep_failure(ep) : SWUCX_OK;
    if (failed != SWUCX_OK) {
        return fail("peer failed: %s", swucx_status_string(failed));
    }
    if (*since == 0.0) {
        *since = now_s();
    } else if (now_s() - *since > STUCK_S) {
        return fail("no progress for %.0fs", STUCK_S);
    }
    return 0;
}

/* Waits until `req` is complete, without taking its result (spinning on progress inline, or
 * through the engine); *st is its final status. Leaves `req` to the caller either way. */
static inline int until_done(const driver_t *d, swucx_request_t *req, const swucx_ep_t *ep,
                             swucx_status_t *st)
{
    /* Already complete (a send UCX finished at once, a receive matched during an earlier
     * progress): no progress call, as the Rust driver (Request::is_complete first). */
    *st = swucx_request_test(req);
    if (*st != SWUCX_INPROGRESS) {
        return 0;
    }
    if (d->engine != NULL) {
        *st = swucx_engine_wait(d->engine, req, (int64_t)(STUCK_S * 1000));
        if (*st != SWUCX_ERR_TIMED_OUT) {
            return 0;
        }
        swucx_status_t failed = ep != NULL ? swucx_ep_failure(ep) : SWUCX_OK;
        if (failed != SWUCX_OK) {
            return fail("peer failed: %s", swucx_status_string(failed));
        }
        return fail("no progress for %.0fs", STUCK_S);
    }
    uint32_t spins = 0;
    double since = 0.0;
    while ((*st = swucx_request_poll(req)) == SWUCX_INPROGRESS) {
        if ((++spins & 0xFFFFu) == 0 && check_stuck(ep, &since) != 0) {
            return -1;
        }
    }
    return 0;
}

/* Waits for `req` and frees it; fails unless it ended with SWUCX_OK. Writes the transferred
 * length to *length_p if not NULL. A NULL `req` is a send made within the call (start_send):
 * done. */
static int wait_req(const driver_t *d, swucx_request_t *req, const swucx_ep_t *ep,
                    size_t *length_p)
{
    if (req == NULL) {
        return 0;
    }
    swucx_status_t st;
    if (until_done(d, req, ep, &st) != 0) {
        swucx_request_free(req);
        return -1;
    }
    if (st == SWUCX_OK && length_p != NULL) {
        st = swucx_request_info(req, length_p, NULL);
    }
    swucx_request_free(req);
    if (st != SWUCX_OK) {
        return fail_st("operation", st);
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Active-message arrivals, shared between the handler and the loop that waits for them. */

#define RNDV_MAX 4096

typedef struct {
    atomic_uint_fast64_t eager;
    atomic_uint_fast64_t rndv_done;
    atomic_size_t rndv_pending;
    pthread_mutex_t lock; /* guards the queue (the handler may run on the engine's thread) */
    swucx_request_t *rndv[RNDV_MAX]; /* receives in flight, oldest first, a ring */
    size_t head, count;
    swucx_mem_t *mem; /* where rendezvous payloads land: offset, length */
    size_t offset, length;
    char error[256];
} am_rx_t;

static void am_rx_init(am_rx_t *rx, swucx_mem_t *mem, size_t offset, size_t length)
{
    atomic_init(&rx->eager, 0);
    atomic_init(&rx->rndv_done, 0);
    atomic_init(&rx->rndv_pending, 0);
    pthread_mutex_init(&rx->lock, NULL);
    rx->head = rx->count = 0;
    rx->mem = mem;
    rx->offset = offset;
    rx->length = length;
    rx->error[0] = '\0';
}

/* The handler: count eager arrivals, receive rendezvous payloads into the receive buffer. */
static void am_handler(swucx_am_msg_t *msg, void *user_data)
{
    am_rx_t *rx = user_data;
    if (!swucx_am_msg_is_rndv(msg)) {
        atomic_fetch_add_explicit(&rx->eager, 1, memory_order_release);
        return;
    }
    swucx_request_t *req = NULL;
    swucx_status_t st = swucx_am_msg_recv_mem(msg, rx->mem, rx->offset, rx->length, &req);
    pthread_mutex_lock(&rx->lock);
    if (st != SWUCX_OK && st != SWUCX_INPROGRESS) {
        snprintf(rx->error, sizeof rx->error, "am receive: %s", swucx_status_string(st));
    } else if (rx->count == RNDV_MAX) {
        snprintf(rx->error, sizeof rx->error, "more than %d rendezvous receives in flight",
                 RNDV_MAX);
        swucx_request_free(req);
    } else {
        rx->rndv[(rx->head + rx->count) % RNDV_MAX] = req;
        rx->count++;
        atomic_fetch_add_explicit(&rx->rndv_pending, 1, memory_order_release);
    }
    pthread_mutex_unlock(&rx->lock);
}

/* Collects the completed rendezvous receives at the front of the queue. */
static void am_rx_reap(am_rx_t *rx)
{
    pthread_mutex_lock(&rx->lock);
    while (rx->count > 0) {
        swucx_request_t *req = rx->rndv[rx->head];
        swucx_status_t st = swucx_request_test(req);
        if (st == SWUCX_INPROGRESS) {
            break;
        }
        rx->head = (rx->head + 1) % RNDV_MAX;
        rx->count--;
        atomic_fetch_sub_explicit(&rx->rndv_pending, 1, memory_order_release);
        if (st == SWUCX_OK) {
            atomic_fetch_add_explicit(&rx->rndv_done, 1, memory_order_release);
        } else {
            snprintf(rx->error, sizeof rx->error, "am receive: %s", swucx_status_string(st));
        }
        swucx_request_free(req);
    }
    pthread_mutex_unlock(&rx->lock);
}

static inline uint64_t am_rx_arrived(am_rx_t *rx)
{
    if (atomic_load_explicit(&rx->rndv_pending, memory_order_acquire) > 0) {
        am_rx_reap(rx);
    }
    return atomic_load_explicit(&rx->eager, memory_order_acquire) +
           atomic_load_explicit(&rx->rndv_done, memory_order_acquire);
}

/* Waits for what is still in flight (at the end of a session) and releases the queue. */
static void am_rx_drain(am_rx_t *rx, const driver_t *d)
{
    /* No handler may touch rx once this returns (the engine's thread progresses too). */
    swucx_status_t st = swucx_worker_set_am_handler(d->worker, AM_DATA, NULL, NULL);
    if (st != SWUCX_OK) {
        fprintf(stderr, "pingpong: removing the AM handler: %s\n", swucx_status_string(st));
    }
    double deadline = now_s() + 5.0;
    while (atomic_load(&rx->rndv_pending) > 0 && now_s() < deadline) {
        swucx_worker_progress(d->worker);
        am_rx_reap(rx);
    }
    pthread_mutex_lock(&rx->lock);
    while (rx->count > 0) {
        swucx_request_free(rx->rndv[rx->head]);
        rx->head = (rx->head + 1) % RNDV_MAX;
        rx->count--;
    }
    pthread_mutex_unlock(&rx->lock);
    pthread_mutex_destroy(&rx->lock);
}

/* ------------------------------------------------------------------------------------------ */
/* One side's data operations for a session. */

typedef struct {
    const driver_t *d;
    swucx_ep_t *ep;
    enum api api;
    swucx_mem_t *mem;
    size_t soff, roff, size;
    am_rx_t *rx;
} io_t;

/* Tag and AM sends up to this size try the *_send_now functions first (about UCX's short path
 * over shm). */
#define SEND_NOW_MAX 96

/* Starts sending the send buffer: *req is the send in flight, or NULL when it went within the
 * call. */
static inline int start_send(const io_t *io, swucx_request_t **req)
{
    *req = NULL;
    if (io->size <= SEND_NOW_MAX && io->api != API_STREAM) {
        const char *buf = (const char *)swucx_mem_address(io->mem) + io->soff;
        swucx_status_t st = io->api == API_TAG
                                ? swucx_ep_tag_send_now(io->ep, buf, io->size, DATA_TAG)
                                : swucx_ep_am_send_now(io->ep, AM_DATA, NULL, 0, buf, io->size, 0);
        if (st == SWUCX_OK) {
            return 0;
        }
        if (st != SWUCX_ERR_NO_RESOURCE) {
            return fail_st("send_now", st);
        }
    }
    switch (io->api) {
    case API_TAG:
        TRY_START("tag_send", swucx_ep_tag_send_mem(io->ep, io->mem, io->soff, io->size, DATA_TAG,
                                                    req));
        break;
    case API_AM:
        TRY_START("am_send", swucx_ep_am_send_mem(io->ep, AM_DATA, NULL, 0, io->mem, io->soff,
                                                  io->size, 0, req));
        break;
    case API_STREAM:
        TRY_START("stream_send", swucx_ep_stream_send_mem(io->ep, io->mem, io->soff, io->size,
                                                          req));
        break;
    }
    return 0;
}

/* Posts a receive for one message (tag/stream); *req = NULL for AM. */
static inline int post_recv(const io_t *io, swucx_request_t **req)
{
    *req = NULL;
    switch (io->api) {
    case API_TAG:
        TRY_START("tag_recv", swucx_worker_tag_recv_mem(io->d->worker, io->mem, io->roff,
                                                        io->size, DATA_TAG, UINT64_MAX, req));
        break;
    case API_STREAM:
        TRY_START("stream_recv", swucx_ep_stream_recv_mem(io->ep, io->mem, io->roff, io->size,
                                                          req));
        break;
    case API_AM:
        break;
    }
    return 0;
}

/* Progresses until the AM receiver has seen `n` messages. */
static int wait_arrived(const io_t *io, uint64_t n)
{
    uint32_t spins = 0;
    double since = 0.0;
    while (am_rx_arrived(io->rx) < n) {
        swucx_worker_progress(io->d->worker);
        if ((++spins & 0xFFFFu) == 0) {
            TRY(check_stuck(io->ep, &since));
        }
    }
    if (io->rx->error[0] != '\0') {
        return fail("%s", io->rx->error);
    }
    return 0;
}

/* Waits until the receive `req` (tag/stream) completes or AM arrival number `n` (1-based) is
 * in, without taking its result: the latency loops answer first and take the result after
 * (take_received), off the round trip's path. */
static inline int until_received(const io_t *io, swucx_request_t *req, uint64_t n)
{
    if (req == NULL) {
        return wait_arrived(io, n);
    }
    swucx_status_t st;
    if (until_done(io->d, req, io->ep, &st) != 0) {
        swucx_request_free(req);
        return -1;
    }
    return 0;
}

/* Takes the result of the receive `req` (waiting if needed), checks its length and frees it;
 * nothing for AM (NULL), whose handler's record until_received checked. */
static inline int take_received(const io_t *io, swucx_request_t *req)
{
    if (req == NULL) {
        return 0;
    }
    size_t length = 0;
    TRY(wait_req(io->d, req, io->ep, &length));
    if (length != io->size) {
        return fail("received %zu bytes, want %zu", length, io->size);
    }
    return 0;
}

/* Waits for the receive `req` (tag/stream) or for AM arrival number `n` (1-based). */
static inline int wait_recv(const io_t *io, swucx_request_t *req, uint64_t n)
{
    TRY(until_received(io, req, n));
    return take_received(io, req);
}

/* Sends a control message and waits for it locally. */
static int ctrl_send(const driver_t *d, swucx_ep_t *ep, uint64_t tag, const void *buf, size_t len)
{
    swucx_request_t *req = NULL;
    TRY_START("control send", swucx_ep_tag_send(ep, buf, len, tag, &req));
    return wait_req(d, req, ep, NULL);
}

static int ctrl_recv(const driver_t *d, uint64_t tag, void *buf, size_t len,
                     swucx_request_t **req)
{
    TRY_START("control receive", swucx_worker_tag_recv(d->worker, buf, len, tag, UINT64_MAX, req));
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Setup */

typedef struct {
    bool server;
    const char *listen;
    const char *connect;
    params_t p;
    bool warmup_set;
    bool multi;
    int64_t idle_secs;
    const char *transport;
    int cpu;
    const char *features;
} args_t;

static int parse_features(const char *letters, uint64_t *features)
{
    uint64_t f = 0;
    for (const char *c = letters; *c; c++) {
        switch (*c) {
        case 't': f |= SWUCX_FEATURE_TAG; break;
        case 's': f |= SWUCX_FEATURE_STREAM; break;
        case 'm': f |= SWUCX_FEATURE_AM; break;
        case 'r': f |= SWUCX_FEATURE_RMA; break;
        case 'w': f |= SWUCX_FEATURE_WAKEUP; break;
        default: return fail("unknown feature letter '%c' (use t, s, m, r, w)", *c);
        }
    }
    if (!(f & SWUCX_FEATURE_TAG)) {
        return fail("features must include t (control messages are tag messages)");
    }
    *features = f;
    return 0;
}

static int build_context(const char *transport, uint64_t features, swucx_context_t **ctx)
{
    swucx_config_entry_t config[2];
    size_t n = 0;
    if (transport != NULL && strcmp(transport, "shm") == 0) {
        if (getenv("UCX_TLS") == NULL) {
            config[n++] = (swucx_config_entry_t){"TLS", "posix,sysv,cma,self,tcp"};
        }
    } else if (transport != NULL && strcmp(transport, "tcp") == 0) {
        if (getenv("UCX_TLS") == NULL) {
            config[n++] = (swucx_config_entry_t){"TLS", "tcp,self"};
        }
        if (getenv("UCX_NET_DEVICES") == NULL) {
            config[n++] = (swucx_config_entry_t){"NET_DEVICES", "lo"};
        }
    }
    swucx_context_params_t params = {
        .field_mask = SWUCX_CONTEXT_PARAM_FIELD_FEATURES | SWUCX_CONTEXT_PARAM_FIELD_NAME |
                      SWUCX_CONTEXT_PARAM_FIELD_CONFIG,
        .features = features,
        .name = "pingpong",
        .config = config,
        .config_count = n,
    };
    swucx_status_t st = swucx_context_create(&params, ctx);
    return st == SWUCX_OK ? 0 : fail_st("context", st);
}

static int pin_cpu(int cpu)
{
    if (cpu < 0 || cpu >= CPU_SETSIZE) {
        return fail("cpu %d out of range", cpu);
    }
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0) {
        return fail("sched_setaffinity(%d): %s", cpu, strerror(errno));
    }
    return 0;
}

static int new_worker(swucx_context_t *ctx, bool multi, swucx_worker_t **w)
{
    swucx_status_t st =
        multi ? swucx_worker_create(ctx, w) : swucx_worker_create_serialized(ctx, w);
    return st == SWUCX_OK ? 0 : fail_st("worker", st);
}

/* Registered send and receive buffers of `size` bytes (at least one byte is mapped). */
static int buffers(swucx_context_t *ctx, size_t size, swucx_mem_t **mem, size_t *soff,
                   size_t *roff)
{
    size_t unit = size > 64 ? size : 64;
    swucx_status_t st = swucx_mem_allocate(ctx, 2 * unit, mem);
    if (st != SWUCX_OK) {
        return fail_st("mem allocate", st);
    }
    memset(swucx_mem_address(*mem), 0xA5, size);
    *soff = 0;
    *roff = unit;
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Server */

/* Receives `count` messages with up to `window` receives posted (tag/stream), or counts AM
 * arrivals; *arrived is the running AM total. */
static int bw_receive(const io_t *io, uint32_t window, uint64_t count, uint64_t *arrived)
{
    if (io->api == API_AM) {
        *arrived += count;
        return wait_recv(io, NULL, *arrived);
    }
    swucx_request_t **posted = calloc(window, sizeof *posted);
    if (posted == NULL) {
        return fail("out of memory");
    }
    size_t head = 0, n = 0;
    uint64_t issued = 0, done = 0;
    int rc = 0;
    while (rc == 0 && done < count) {
        while (rc == 0 && issued < count && n < window) {
            rc = post_recv(io, &posted[(head + n) % window]);
            if (rc == 0) {
                n++;
                issued++;
            }
        }
        if (rc == 0) {
            swucx_request_t *front = posted[head];
            head = (head + 1) % window;
            n--;
            rc = wait_recv(io, front, 0);
            done++;
        }
    }
    while (n > 0) {
        swucx_request_free(posted[head]);
        head = (head + 1) % window;
        n--;
    }
    free(posted);
    return rc;
}

static int serve_session(swucx_context_t *ctx, const driver_t *d, swucx_ep_t *cm_ep,
                         params_t *p, swucx_ep_t **data_ep, swucx_mem_t **mem, am_rx_t *rx,
                         bool *rx_used, swucx_request_t **bye, uint8_t *hello)
{
    swucx_request_t *hello_req = NULL;
    TRY(ctrl_recv(d, HELLO, hello, MAX_CTRL, &hello_req));
    TRY(ctrl_recv(d, BYE, NULL, 0, bye));
    size_t hello_len = 0;
    TRY(wait_req(d, hello_req, cm_ep, &hello_len));
    TRY(decode(hello, hello_len, p));
    swucx_bytes_t *ready = NULL;
    swucx_ep_t *ep = cm_ep;
    if (p->wireup == WIREUP_ADDRESS) {
        swucx_status_t st = swucx_worker_address(d->worker, &ready);
        if (st != SWUCX_OK) {
            return fail_st("worker address", st);
        }
        /* The ping-pong trusts its peer to send its whole worker address (UCX reads it without
         * bounds; the library refuses only an empty one). */
        st = swucx_worker_connect_address(d->worker, hello + HEADER_LEN, hello_len - HEADER_LEN,
                                          data_ep);
        if (st != SWUCX_OK) {
            swucx_bytes_destroy(ready);
            return fail_st("connect_address", st);
        }
        ep = *data_ep;
    }
    size_t soff = 0, roff = 0;
    if (buffers(ctx, p->size, mem, &soff, &roff) != 0) {
        swucx_bytes_destroy(ready);
        return -1;
    }
    if (p->api == API_AM) {
        am_rx_init(rx, *mem, roff, p->size);
        *rx_used = true;
        swucx_status_t st = swucx_worker_set_am_handler(d->worker, AM_DATA, am_handler, rx);
        if (st != SWUCX_OK) {
            swucx_bytes_destroy(ready);
            return fail_st("set_am_handler", st);
        }
    }
    io_t io = {d, ep, p->api, *mem, soff, roff, p->size, rx};
    int rc = ctrl_send(d, cm_ep, READY, ready ? swucx_bytes_data(ready) : NULL,
                       ready ? swucx_bytes_length(ready) : 0);
    swucx_bytes_destroy(ready);
    TRY(rc);
    if (p->mode == MODE_LAT) {
        for (uint64_t i = 1; i <= p->warmup + p->iters; i++) {
            swucx_request_t *recv = NULL, *send = NULL;
            TRY(post_recv(&io, &recv));
            TRY(until_received(&io, recv, i));
            if (start_send(&io, &send) != 0) {
                swucx_request_free(recv);
                return -1;
            }
            TRY(take_received(&io, recv));
            TRY(wait_req(d, send, ep, NULL));
        }
    } else {
        uint64_t arrived = 0;
        uint64_t counts[2] = {p->warmup, p->iters};
        for (int k = 0; k < 2; k++) {
            if (counts[k] == 0) {
                continue;
            }
            TRY(bw_receive(&io, p->window, counts[k], &arrived));
            TRY(ctrl_send(d, ep, ACK, NULL, 0));
        }
    }
    swucx_request_t *b = *bye;
    *bye = NULL;
    return wait_req(d, b, ep, NULL);
}

static int run_server(const args_t *a)
{
    uint64_t features = 0;
    TRY(parse_features(a->features ? a->features : "tsm", &features));
    swucx_context_t *ctx = NULL;
    TRY(build_context(a->transport, features, &ctx));
    driver_t d = {NULL, NULL};
    TRY(new_worker(ctx, a->multi, &d.worker));
    swucx_listener_t *lst = NULL;
    swucx_status_t st = swucx_listener_create(d.worker, a->listen, &lst);
    if (st != SWUCX_OK) {
        return fail_st("listen", st);
    }
    swucx_bytes_t *where = NULL;
    st = swucx_listener_address(lst, &where);
    if (st != SWUCX_OK) {
        return fail_st("listener address", st);
    }
    if (a->cpu >= 0) {
        TRY(pin_cpu(a->cpu));
    }
    fprintf(stderr, "pingpong server listening on %s\n", (const char *)swucx_bytes_data(where));
    swucx_bytes_destroy(where);
    uint8_t *hello = malloc(MAX_CTRL);
    if (hello == NULL) {
        return fail("out of memory");
    }
    uint64_t served = 0;
    for (;;) {
        swucx_conn_request_t *creq = NULL;
        if (features & SWUCX_FEATURE_WAKEUP) {
            st = swucx_listener_accept(lst, 1000, &creq);
        } else {
            if (swucx_worker_progress(d.worker) == 0) {
                usleep(500);
            }
            st = swucx_listener_accept(lst, 0, &creq);
        }
        if (st == SWUCX_ERR_TIMED_OUT) {
            continue;
        }
        if (st != SWUCX_OK) {
            return fail_st("accept", st);
        }
        char peer[128] = "?";
        swucx_bytes_t *pa = NULL;
        if (swucx_conn_request_client_address(creq, &pa) == SWUCX_OK) {
            snprintf(peer, sizeof peer, "%s", (const char *)swucx_bytes_data(pa));
            swucx_bytes_destroy(pa);
        }
        swucx_ep_t *cm_ep = NULL;
        st = swucx_worker_accept(d.worker, creq, &cm_ep);
        if (st != SWUCX_OK) {
            fail_st("accept", st);
            fprintf(stderr, "pingpong server: accept from %s: %s\n", peer, g_error);
            continue;
        }
        served++;
        params_t p;
        memset(&p, 0, sizeof p);
        swucx_ep_t *data_ep = NULL;
        swucx_mem_t *mem = NULL;
        am_rx_t *rx = calloc(1, sizeof *rx);
        bool rx_used = false;
        swucx_request_t *bye = NULL;
        if (rx == NULL) {
            return fail("out of memory");
        }
        if (serve_session(ctx, &d, cm_ep, &p, &data_ep, &mem, rx, &rx_used, &bye, hello) == 0) {
            fprintf(stderr, "pingpong server: client #%" PRIu64 " %s done (%s %s size=%" PRIu64
                    " iters=%" PRIu64 ")\n",
                    served, peer, api_name(p.api), p.mode == MODE_LAT ? "lat" : "bw", p.size,
                    p.iters);
        } else {
            fprintf(stderr, "pingpong server: client #%" PRIu64 " %s: %s\n", served, peer,
                    g_error);
        }
        /* A BYE receive still posted (the session failed): cancel it before its buffer goes. */
        if (bye != NULL) {
            swucx_request_cancel(bye);
            swucx_request_free(bye);
        }
        if (rx_used) {
            am_rx_drain(rx, &d);
        }
        free(rx);
        swucx_mem_unmap(mem);
        /* Non-blocking closes, finished by later progress. */
        swucx_ep_destroy(data_ep);
        swucx_ep_destroy(cm_ep);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Client */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int client_lat(const io_t *io, const params_t *p, char *result, size_t cap)
{
    uint64_t total = p->warmup + p->iters;
    uint64_t *rtts = malloc(p->iters * sizeof *rtts);
    if (rtts == NULL) {
        return fail("out of memory");
    }
    stamps_t stamps = stamps_start();
    uint64_t start = stamp_now(), last = start;
    size_t n = 0;
    swucx_request_t *pending = NULL; /* the last reply, complete, its result not taken yet */
    for (uint64_t i = 1; i <= total; i++) {
        if (i == p->warmup + 1) {
            start = stamp_now();
            last = start;
        }
        /* Send first, then post the receive (as ucx_perftest and the Rust client do): the reply
         * cannot arrive before a round trip, and posting it is then off the critical path. The
         * reply's result is taken after the next send has started, off the path as well. */
        swucx_request_t *send = NULL;
        int rc = start_send(io, &send);
        if (take_received(io, pending) != 0) {
            swucx_request_free(send);
            rc = -1;
        }
        pending = NULL;
        if (rc != 0 || wait_req(io->d, send, io->ep, NULL) != 0 || post_recv(io, &pending) != 0 ||
            until_received(io, pending, i) != 0) {
            free(rtts);
            return -1;
        }
        if (i > p->warmup) {
            uint64_t t = stamp_now();
            rtts[n++] = t - last;
            last = t;
        }
    }
    if (take_received(io, pending) != 0) {
        free(rtts);
        return -1;
    }
    double ns_per_tick = stamps_ns_per_tick(&stamps);
    double elapsed = (double)(last - start) * ns_per_tick;
    qsort(rtts, n, sizeof *rtts, cmp_u64);
    static const size_t q[2] = {50, 99}; /* percentiles */
    double pct[2];
    for (int k = 0; k < 2; k++) {
        size_t idx = (n * q[k] + 99) / 100; /* ceil(n * q / 100) */
        idx = idx < 1 ? 1 : idx > n ? n : idx;
        pct[k] = (double)rtts[idx - 1] * ns_per_tick / 2.0 / 1e3;
    }
    double avg = elapsed / (double)p->iters / 2.0 / 1e3;
    snprintf(result, cap,
             "RESULT mode=lat api=%s size=%" PRIu64 " iters=%" PRIu64
             " lat_us_p50=%.3f lat_us_p99=%.3f lat_us_avg=%.3f",
             api_name(p->api), p->size, p->iters, pct[0], pct[1], avg);
    free(rtts);
    return 0;
}

/* Sends in flight, a ring of `window`. */
typedef struct {
    swucx_request_t **req;
    size_t head, n, cap;
} window_t;

/* Makes room in a full window: completes at least the oldest send, and any that follow it and
 * are already complete. */
static inline int reap_sends(const io_t *io, window_t *w)
{
    while (w->n >= w->cap) {
        if (io->d->engine != NULL) {
            swucx_request_t *r = w->req[w->head];
            w->head = (w->head + 1) % w->cap;
            w->n--;
            TRY(wait_req(io->d, r, io->ep, NULL));
            continue;
        }
        swucx_status_t st;
        while (w->n > 0 && (st = swucx_request_test(w->req[w->head])) != SWUCX_INPROGRESS) {
            swucx_request_free(w->req[w->head]);
            w->head = (w->head + 1) % w->cap;
            w->n--;
            if (st != SWUCX_OK) {
                return fail_st("send", st);
            }
        }
        if (w->n >= w->cap) {
            swucx_worker_progress(io->d->worker);
            swucx_status_t failed = swucx_ep_failure(io->ep);
            if (failed != SWUCX_OK) {
                return fail("peer failed: %s", swucx_status_string(failed));
            }
        }
    }
    return 0;
}

static int client_bw(const io_t *io, const params_t *p, char *result, size_t cap)
{
    window_t w = {calloc(p->window, sizeof(swucx_request_t *)), 0, 0, p->window};
    if (w.req == NULL) {
        return fail("out of memory");
    }
    uint64_t elapsed = 0;
    uint64_t counts[2] = {p->warmup, p->iters};
    int rc = 0;
    for (int k = 0; k < 2 && rc == 0; k++) {
        if (counts[k] == 0) {
            continue;
        }
        swucx_request_t *ack = NULL;
        if ((rc = ctrl_recv(io->d, ACK, NULL, 0, &ack)) != 0) {
            break;
        }
        uint64_t start = now_ns();
        for (uint64_t i = 0; i < counts[k] && rc == 0; i++) {
            if (w.n >= w.cap) {
                rc = reap_sends(io, &w);
            }
            if (rc == 0) {
                swucx_request_t **slot = &w.req[(w.head + w.n) % w.cap];
                rc = start_send(io, slot);
                w.n += rc == 0 && *slot != NULL;
            }
        }
        while (rc == 0 && w.n > 0) {
            swucx_request_t *r = w.req[w.head];
            w.head = (w.head + 1) % w.cap;
            w.n--;
            rc = wait_req(io->d, r, io->ep, NULL);
        }
        if (rc != 0) {
            swucx_request_cancel(ack);
            swucx_request_free(ack);
            break;
        }
        rc = wait_req(io->d, ack, io->ep, NULL);
        if (k == 1) {
            elapsed = now_ns() - start;
        }
    }
    while (w.n > 0) {
        swucx_request_free(w.req[w.head]);
        w.head = (w.head + 1) % w.cap;
        w.n--;
    }
    free(w.req);
    TRY(rc);
    double gbps = (double)p->iters * (double)p->size / ((double)elapsed / 1e9) / 1e9;
    snprintf(result, cap,
             "RESULT mode=bw api=%s size=%" PRIu64 " iters=%" PRIu64 " window=%" PRIu32
             " gbps=%.3f",
             api_name(p->api), p->size, p->iters, p->window, gbps);
    return 0;
}

static double process_cpu_s(void)
{
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return (double)u.ru_utime.tv_sec + (double)u.ru_utime.tv_usec * 1e-6 +
           (double)u.ru_stime.tv_sec + (double)u.ru_stime.tv_usec * 1e-6;
}

/* Everything a client run holds, released in one place. */
typedef struct {
    swucx_context_t *ctx;
    driver_t d;
    swucx_mem_t *mem;
    am_rx_t rx;
    bool rx_used;
    swucx_ep_t *cm_ep, *ep;
    uint8_t *ready_buf;
} client_t;

static int client_session(const args_t *a, client_t *c, char *result, size_t cap)
{
    params_t p = a->p;
    if (!a->warmup_set) {
        p.warmup = p.iters / 10 < 10000 ? p.iters / 10 : 10000;
    }
    TRY(validate(&p));
    char deflt[8];
    snprintf(deflt, sizeof deflt, "t%s%s",
             p.api == API_AM ? "m" : p.api == API_STREAM ? "s" : "", p.front ? "w" : "");
    uint64_t features = 0;
    TRY(parse_features(a->features ? a->features : deflt, &features));
    TRY(build_context(a->transport, features, &c->ctx));
    /* The engine's progress thread is created before pinning, so it keeps the full CPU mask. */
    if (p.front) {
        swucx_status_t st = swucx_engine_create(c->ctx, &c->d.engine);
        if (st != SWUCX_OK) {
            return fail_st("engine", st);
        }
        st = swucx_engine_worker(c->d.engine, &c->d.worker);
        if (st != SWUCX_OK) {
            return fail_st("engine worker", st);
        }
    } else {
        TRY(new_worker(c->ctx, a->multi, &c->d.worker));
    }
    if (a->cpu >= 0) {
        TRY(pin_cpu(a->cpu));
    }
    size_t soff = 0, roff = 0;
    TRY(buffers(c->ctx, p.size, &c->mem, &soff, &roff));
    if (p.api == API_AM) {
        am_rx_init(&c->rx, c->mem, roff, p.size);
        c->rx_used = true;
        swucx_status_t st = swucx_worker_set_am_handler(c->d.worker, AM_DATA, am_handler, &c->rx);
        if (st != SWUCX_OK) {
            return fail_st("set_am_handler", st);
        }
    }
    swucx_status_t st = swucx_worker_connect(c->d.worker, a->connect, &c->cm_ep);
    if (st != SWUCX_OK) {
        return fail_st("connect", st);
    }
    c->ready_buf = malloc(MAX_CTRL);
    if (c->ready_buf == NULL) {
        return fail("out of memory");
    }
    swucx_request_t *ready = NULL;
    TRY(ctrl_recv(&c->d, READY, c->ready_buf, MAX_CTRL, &ready));
    uint8_t *hello = NULL;
    size_t hello_len = HEADER_LEN;
    swucx_bytes_t *own = NULL;
    if (p.wireup == WIREUP_ADDRESS) {
        st = swucx_worker_address(c->d.worker, &own);
        if (st != SWUCX_OK) {
            swucx_request_cancel(ready);
            swucx_request_free(ready);
            return fail_st("worker address", st);
        }
        hello_len += swucx_bytes_length(own);
    }
    hello = malloc(hello_len);
    if (hello == NULL) {
        return fail("out of memory");
    }
    encode(&p, hello);
    if (own != NULL) {
        memcpy(hello + HEADER_LEN, swucx_bytes_data(own), swucx_bytes_length(own));
        swucx_bytes_destroy(own);
    }
    int rc = ctrl_send(&c->d, c->cm_ep, HELLO, hello, hello_len);
    free(hello);
    if (rc != 0) {
        /* Complete the posted receive before its buffer goes. */
        swucx_request_cancel(ready);
        swucx_request_wait(ready, 1000);
        swucx_request_free(ready);
        return fail("handshake with %s: %s", a->connect, g_error);
    }
    size_t ready_len = 0;
    if (wait_req(&c->d, ready, c->cm_ep, &ready_len) != 0) {
        char why[sizeof g_error];
        snprintf(why, sizeof why, "%s", g_error);
        return fail("handshake with %s: %s", a->connect, why);
    }
    c->ep = c->cm_ep;
    if (p.wireup == WIREUP_ADDRESS) {
        swucx_ep_t *data_ep = NULL;
        st = swucx_worker_connect_address(c->d.worker, c->ready_buf, ready_len, &data_ep);
        if (st != SWUCX_OK) {
            return fail_st("connect_address", st);
        }
        swucx_ep_destroy(c->cm_ep);
        c->cm_ep = NULL;
        c->ep = data_ep;
    }
    swucx_bytes_t *tl = NULL;
    if (swucx_ep_transports(c->ep, &tl) == SWUCX_OK) {
        fprintf(stderr, "pingpong: transports %s\n", (const char *)swucx_bytes_data(tl));
        swucx_bytes_destroy(tl);
    } else {
        fprintf(stderr, "pingpong: transports unknown\n");
    }
    io_t io = {&c->d, c->ep, p.api, c->mem, soff, roff, p.size, &c->rx};
    TRY(p.mode == MODE_LAT ? client_lat(&io, &p, result, cap) : client_bw(&io, &p, result, cap));
    if (p.front) {
        size_t len = strlen(result);
        snprintf(result + len, cap - len, " front=1");
        if (a->idle_secs >= 0) {
            double cpu0 = process_cpu_s(), t0 = now_s();
            sleep((unsigned)a->idle_secs);
            double pct = 100.0 * (process_cpu_s() - cpu0) / (now_s() - t0);
            len = strlen(result);
            snprintf(result + len, cap - len, " idle_secs=%" PRId64 " idle_cpu_pct=%.2f",
                     a->idle_secs, pct);
        }
    }
    return ctrl_send(&c->d, c->ep, BYE, NULL, 0);
}

static int run_client(const args_t *a, char *result, size_t cap)
{
    client_t c;
    memset(&c, 0, sizeof c);
    int rc = client_session(a, &c, result, cap);
    if (c.rx_used) {
        am_rx_drain(&c.rx, &c.d);
    }
    /* Destroying the endpoints starts flush closes; destroying the worker finishes them. */
    if (c.ep != c.cm_ep) {
        swucx_ep_destroy(c.ep);
    }
    swucx_ep_destroy(c.cm_ep);
    swucx_mem_unmap(c.mem);
    for (int i = 0; i < 100 && c.d.worker != NULL; i++) {
        swucx_worker_progress(c.d.worker);
    }
    swucx_worker_destroy(c.d.worker);
    swucx_engine_destroy(c.d.engine);
    swucx_context_destroy(c.ctx);
    free(c.ready_buf);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */

static void usage(FILE *out)
{
    fprintf(out,
            "usage: pingpong-c --server [--listen ADDR] [--cpu N] [--multi] [--transport shm|tcp]\n"
            "                  [--features LETTERS]\n"
            "       pingpong-c --connect ADDR [--api tag|am|stream] [--mode lat|bw] [--size N]\n"
            "                  [--iters N] [--warmup N] [--window N] [--front]\n"
            "                  [--front-spin-us N] [--multi] [--idle-secs N]\n"
            "                  [--wireup cm|address] [--transport shm|tcp] [--cpu N]\n"
            "                  [--features LETTERS]\n");
}

static int parse_u64(const char *name, const char *s, uint64_t *v)
{
    char *end = NULL;
    errno = 0;
    unsigned long long x = strtoull(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || s[0] == '-') {
        return fail("--%s: invalid number '%s'", name, s);
    }
    *v = x;
    return 0;
}

static int parse_args(int argc, char **argv, args_t *a)
{
    static const struct option opts[] = {
        {"server", no_argument, NULL, 'S'},       {"listen", required_argument, NULL, 'l'},
        {"connect", required_argument, NULL, 'c'}, {"api", required_argument, NULL, 'a'},
        {"mode", required_argument, NULL, 'm'},   {"size", required_argument, NULL, 's'},
        {"iters", required_argument, NULL, 'n'},  {"warmup", required_argument, NULL, 'w'},
        {"window", required_argument, NULL, 'W'}, {"front", no_argument, NULL, 'f'},
        {"front-spin-us", required_argument, NULL, 'F'},
        {"multi", no_argument, NULL, 'M'},        {"idle-secs", required_argument, NULL, 'i'},
        {"wireup", required_argument, NULL, 'u'}, {"transport", required_argument, NULL, 't'},
        {"cpu", required_argument, NULL, 'C'},    {"features", required_argument, NULL, 'e'},
        {"help", no_argument, NULL, 'h'},         {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    memset(a, 0, sizeof *a);
    a->listen = "0.0.0.0:13337";
    a->p.api = API_TAG;
    a->p.mode = MODE_LAT;
    a->p.size = 8;
    a->p.iters = 100000;
    a->p.window = 32;
    a->p.wireup = WIREUP_CM;
    a->idle_secs = -1;
    a->cpu = -1;
    int c;
    uint64_t v = 0;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'S': a->server = true; break;
        case 'l': a->listen = optarg; break;
        case 'c': a->connect = optarg; break;
        case 'a':
            if (strcmp(optarg, "tag") == 0) {
                a->p.api = API_TAG;
            } else if (strcmp(optarg, "am") == 0) {
                a->p.api = API_AM;
            } else if (strcmp(optarg, "stream") == 0) {
                a->p.api = API_STREAM;
            } else {
                return fail("--api: tag, am or stream, not '%s'", optarg);
            }
            break;
        case 'm':
            if (strcmp(optarg, "lat") == 0) {
                a->p.mode = MODE_LAT;
            } else if (strcmp(optarg, "bw") == 0) {
                a->p.mode = MODE_BW;
            } else {
                return fail("--mode: lat or bw, not '%s'", optarg);
            }
            break;
        case 's': TRY(parse_u64("size", optarg, &a->p.size)); break;
        case 'n': TRY(parse_u64("iters", optarg, &a->p.iters)); break;
        case 'w':
            TRY(parse_u64("warmup", optarg, &a->p.warmup));
            a->warmup_set = true;
            break;
        case 'W':
            TRY(parse_u64("window", optarg, &v));
            if (v > UINT32_MAX) {
                return fail("--window too large");
            }
            a->p.window = (uint32_t)v;
            break;
        case 'f': a->p.front = true; break;
        case 'F': TRY(parse_u64("front-spin-us", optarg, &v)); break;
        case 'M': a->multi = true; break;
        case 'i':
            TRY(parse_u64("idle-secs", optarg, &v));
            a->idle_secs = (int64_t)v;
            break;
        case 'u':
            if (strcmp(optarg, "cm") == 0) {
                a->p.wireup = WIREUP_CM;
            } else if (strcmp(optarg, "address") == 0) {
                a->p.wireup = WIREUP_ADDRESS;
            } else {
                return fail("--wireup: cm or address, not '%s'", optarg);
            }
            break;
        case 't':
            if (strcmp(optarg, "shm") != 0 && strcmp(optarg, "tcp") != 0) {
                return fail("--transport: shm or tcp, not '%s'", optarg);
            }
            a->transport = optarg;
            break;
        case 'C':
            TRY(parse_u64("cpu", optarg, &v));
            a->cpu = v > INT32_MAX ? INT32_MAX : (int)v;
            break;
        case 'e': a->features = optarg; break;
        case 'h': usage(stdout); exit(0);
        case 'V': printf("pingpong-c (swucx %s, UCX %s)\n", swucx_version(), swucx_ucx_version());
            exit(0);
        default: usage(stderr); exit(2);
        }
    }
    if (optind < argc) {
        return fail("unexpected argument '%s'", argv[optind]);
    }
    if (a->server && a->connect != NULL) {
        return fail("--server and --connect exclude each other");
    }
    if (!a->server && a->connect == NULL) {
        usage(stderr);
        return fail("--connect is required unless --server is given");
    }
    return 0;
}

static void watchdog(int sig)
{
    (void)sig;
    static const char msg[] = "pingpong: error: watchdog: still running after 600 s\n";
    ssize_t ignored = write(2, msg, sizeof msg - 1);
    (void)ignored;
    _exit(3);
}

int main(int argc, char **argv)
{
    args_t a;
    if (parse_args(argc, argv, &a) != 0) {
        fprintf(stderr, "pingpong: error: %s\n", g_error);
        return 2;
    }
    if (a.server) {
        run_server(&a);
        fprintf(stderr, "pingpong: error: %s\n", g_error);
        return 1;
    }
    /* A last resort against a hang the busy loops cannot see. */
    signal(SIGALRM, watchdog);
    alarm(600);
    char result[512] = "";
    if (run_client(&a, result, sizeof result) != 0) {
        fprintf(stderr, "pingpong: error: %s\n", g_error);
        return 1;
    }
    printf("%s\n", result);
    return 0;
}
