/* The embedding API from C: a host serves needles from its own storage (a table here) through
 * swucx_needle_server_*, and a client speaks the wire protocol of docs/protocol.md over the C
 * AM functions: a READ request as the header of AM 0x30, the reply as the header of AM 0x31
 * with the bytes as its payload (eager or rendezvous). */
#include "test_common.h"

#include <stdint.h>

enum { AM_READ = 0x30, AM_READ_REPLY = 0x31, VOLUME = 5, COOKIE = 0xc0ffee, BIG = 300000 };

typedef struct {
    uint32_t cookie;
    size_t length;
    uint8_t *data;
    uint32_t crc; /* CRC-32C of the data, as weed stores it */
} needle_t;

/* The host's storage: needle ids 1..3. Needle 4 makes the host answer inconsistently. */
static needle_t g_needles[4];

static uint32_t crc32c(const uint8_t *p, size_t n)
{
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) {
            c = c >> 1 ^ (0x82f63b78u & (0u - (c & 1)));
        }
    }
    return ~c;
}

/* The server the callback runs for (set before any request is sent). */
static swucx_needle_server_t *g_server;

static void put_le(uint8_t *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static uint64_t get_le(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) {
        v = v << 8 | p[i];
    }
    return v;
}

/* The host callback: look the needle up, check the cookie and range, copy the bytes into the
 * buffer swucx hands out. */
static void host_read(void *user_data, const swucx_read_request_t *req, swucx_read_reply_t *reply)
{
    int *calls = user_data;
    (*calls)++;
    if (req->volume_id != VOLUME) {
        CHECK_OK(swucx_read_reply_set(reply, SWUCX_READ_NO_VOLUME, 0, 0, 0));
        return;
    }
    if (req->needle_id < 1 || req->needle_id > 4) {
        /* The server cannot be destroyed from its own callback (its threads would join
         * themselves): refused, and the server goes on. */
        CHECK_ST(swucx_needle_server_destroy(g_server), SWUCX_ERR_BUSY);
        CHECK_OK(swucx_read_reply_set(reply, SWUCX_READ_NOT_FOUND, 0, 0, 0));
        return;
    }
    if (req->needle_id == 4) {
        uint8_t *buf = NULL;
        CHECK_OK(swucx_read_reply_set(reply, SWUCX_READ_OK, 10, 0, 0));
        /* A length other than the request's is refused before anything is allocated. */
        CHECK_ST(swucx_read_reply_payload(reply, SIZE_MAX / 2 + 1, &buf), SWUCX_ERR_INVALID_PARAM);
        CHECK(buf == NULL);
        CHECK_ST(swucx_read_reply_payload(reply, 3, &buf), SWUCX_ERR_INVALID_PARAM); /* of 5 or 10 */
        return; /* a refused payload leaves the reply INTERNAL */
    }
    const needle_t *n = &g_needles[req->needle_id - 1];
    if (req->cookie != n->cookie) {
        CHECK_OK(swucx_read_reply_set(reply, SWUCX_READ_COOKIE_MISMATCH, 0, 0, 0));
        return;
    }
    uint64_t end = req->size == 0 ? n->length : req->offset + req->size;
    if (req->offset > n->length || end > n->length || end < req->offset) {
        CHECK_OK(swucx_read_reply_set(reply, SWUCX_READ_BAD_RANGE, n->length, 0, 0));
        return;
    }
    uint8_t *buf = NULL;
    CHECK_OK(swucx_read_reply_set(reply, SWUCX_READ_OK, n->length, n->crc, 1700000000));
    CHECK_OK(swucx_read_reply_payload(reply, (size_t)(end - req->offset), &buf));
    if (end > req->offset) {
        memcpy(buf, n->data + req->offset, (size_t)(end - req->offset));
    } else {
        CHECK(buf == NULL); /* an empty payload has no buffer (not a dangling address) */
    }
    CHECK_ST(swucx_read_reply_payload(reply, 1, NULL), SWUCX_ERR_NULL_ARG);
    /* Undefined statuses are refused. */
    CHECK_ST(swucx_read_reply_set(reply, 200, 0, 0, 0), SWUCX_ERR_INVALID_PARAM);
}

/* What the client's AM handler saw of one reply. */
typedef struct {
    int calls;
    uint8_t header[2096];
    size_t header_len;
    uint8_t *buf;
    size_t cap;
    swucx_request_t *recv;
    swucx_status_t recv_st;
} reply_seen_t;

static void on_reply(swucx_am_msg_t *msg, void *user_data)
{
    reply_seen_t *seen = user_data;
    const void *header = NULL;
    seen->calls++;
    CHECK_OK(swucx_am_msg_header(msg, &header, &seen->header_len));
    if (seen->header_len <= sizeof seen->header) {
        memcpy(seen->header, header, seen->header_len);
    }
    size_t n = swucx_am_msg_length(msg);
    seen->recv = NULL;
    seen->recv_st = n <= seen->cap ? swucx_am_msg_recv(msg, seen->buf, n, &seen->recv)
                                   : SWUCX_ERR_MESSAGE_TRUNCATED;
}

/* Sends a READ in `version` for (volume, needle, cookie, offset, size) and waits for the
 * reply; returns its status and payload length. */
static int read_in(swucx_worker_t *w, swucx_ep_t *ep, reply_seen_t *seen, uint8_t version,
                   uint32_t volume, uint64_t needle, uint32_t cookie, uint64_t offset,
                   uint64_t size, uint64_t *payload_len)
{
    static uint64_t next_id = 1;
    uint8_t req[48];
    memset(req, 0, sizeof req);
    req[0] = 'S';
    req[1] = 'W';
    req[2] = version;
    req[3] = 1; /* READ request */
    uint64_t id = next_id++;
    put_le(req + 8, id, 8);
    put_le(req + 16, volume, 4);
    put_le(req + 20, cookie, 4);
    put_le(req + 24, needle, 8);
    put_le(req + 32, offset, 8);
    put_le(req + 40, size, 8);
    seen->calls = 0;
    swucx_request_t *send = NULL;
    REQUIRE_OK(swucx_ep_am_send(ep, AM_READ, req, sizeof req, NULL, 0,
                                SWUCX_AM_FLAG_REPLY | SWUCX_AM_FLAG_EAGER, &send));
    CHECK_OK(wait2(send, w, NULL));
    swucx_request_free(send);
    double deadline = now_s() + 30.0;
    while (seen->calls == 0 && now_s() < deadline) {
        swucx_worker_progress(w);
    }
    CHECK(seen->calls == 1);
    CHECK(seen->recv_st == SWUCX_OK || seen->recv_st == SWUCX_INPROGRESS);
    if (seen->recv != NULL) {
        CHECK_OK(wait2(seen->recv, w, NULL));
        swucx_request_free(seen->recv);
        seen->recv = NULL;
    }
    const uint8_t *h = seen->header;
    CHECK(seen->header_len >= 48 && h[0] == 'S' && h[1] == 'W' && h[2] == version && h[3] == 2);
    CHECK(get_le(h + 8, 8) == id);
    *payload_len = get_le(h + 24, 8);
    return h[4];
}

/* read_in in protocol version 1, volume VOLUME. */
static int read_needle(swucx_worker_t *w, swucx_ep_t *ep, reply_seen_t *seen, uint64_t needle,
                       uint32_t cookie, uint64_t offset, uint64_t size, uint64_t *payload_len)
{
    return read_in(w, ep, seen, 1, VOLUME, needle, cookie, offset, size, payload_len);
}

static void run(const char *tls)
{
    int calls = 0;
    swucx_needle_server_t *srv = NULL;
    /* A context with streams is refused: any client could abort the process (UCX 1.13). */
    swucx_context_t *with_streams = test_context(tls);
    CHECK_ST(swucx_needle_server_create(with_streams, "127.0.0.1:0", host_read, &calls, NULL, 1, &srv),
             SWUCX_ERR_INVALID_PARAM);
    CHECK(srv == NULL);
    swucx_context_destroy(with_streams);
    swucx_context_t *ctx = test_context_with(tls, SWUCX_FEATURE_DEFAULT);
    /* Two serving threads: the one connection below is served by the first (the second idles,
     * and both stop at destroy). */
    REQUIRE_OK(swucx_needle_server_create(ctx, "127.0.0.1:0", host_read, &calls, NULL, 2, &srv));
    g_server = srv;
    swucx_needle_server_t *too_many = NULL;
    CHECK_ST(swucx_needle_server_create(ctx, "127.0.0.1:0", host_read, &calls, NULL, 100000, &too_many),
             SWUCX_ERR_INVALID_PARAM);
    CHECK(too_many == NULL);
    uint16_t port = 0;
    CHECK_OK(swucx_needle_server_port(srv, &port));
    CHECK(port != 0);

    swucx_worker_t *w = NULL;
    REQUIRE_OK(swucx_worker_create(ctx, &w));
    reply_seen_t seen;
    memset(&seen, 0, sizeof seen);
    seen.cap = BIG;
    seen.buf = malloc(BIG);
    CHECK_OK(swucx_worker_set_am_handler(w, AM_READ_REPLY, on_reply, &seen));
    char where[64];
    snprintf(where, sizeof where, "127.0.0.1:%u", (unsigned)port);
    swucx_ep_t *ep = NULL;
    REQUIRE_OK(swucx_worker_connect(w, where, &ep));

    uint64_t len = 0;
    for (int i = 0; i < 3; i++) {
        const needle_t *n = &g_needles[i];
        memset(seen.buf, 0, BIG);
        CHECK(read_needle(w, ep, &seen, (uint64_t)i + 1, COOKIE, 0, 0, &len) == SWUCX_READ_OK);
        CHECK(len == n->length && memcmp(seen.buf, n->data, n->length) == 0);
        if (n->length > 100) {
            CHECK(read_needle(w, ep, &seen, (uint64_t)i + 1, COOKIE, 7, 90, &len) == SWUCX_READ_OK);
            CHECK(len == 90 && memcmp(seen.buf, n->data + 7, 90) == 0);
            CHECK(read_needle(w, ep, &seen, (uint64_t)i + 1, COOKIE, 7, n->length, &len) ==
                  SWUCX_READ_BAD_RANGE);
            CHECK(get_le(seen.header + 16, 8) == n->length);
        }
    }
    CHECK(read_needle(w, ep, &seen, 2, COOKIE + 1, 0, 0, &len) == SWUCX_READ_COOKIE_MISMATCH);
    CHECK(read_needle(w, ep, &seen, 9, COOKIE, 0, 0, &len) == SWUCX_READ_NOT_FOUND);
    /* A volume the host does not hold: NO_VOLUME from version 3, INTERNAL before. */
    CHECK(read_in(w, ep, &seen, 3, VOLUME + 1, 1, COOKIE, 0, 0, &len) == SWUCX_READ_NO_VOLUME);
    CHECK(read_in(w, ep, &seen, 1, VOLUME + 1, 1, COOKIE, 0, 0, &len) == SWUCX_READ_INTERNAL);
    /* An inconsistent host answer goes out as INTERNAL, without a payload: for a range, and for
     * a read to the end (size 0). */
    CHECK(read_needle(w, ep, &seen, 4, COOKIE, 0, 5, &len) == SWUCX_READ_INTERNAL && len == 0);
    CHECK(read_needle(w, ep, &seen, 4, COOKIE, 0, 0, &len) == SWUCX_READ_INTERNAL && len == 0);
    CHECK(calls == 13);
    swucx_needle_server_stats_t stats;
    memset(&stats, 0xff, sizeof stats);
    CHECK_OK(swucx_needle_server_stats(srv, &stats, sizeof stats));
    CHECK(stats.replies[SWUCX_READ_OK] == 5 && stats.replies[SWUCX_READ_BAD_RANGE] == 2);
    CHECK(stats.replies[SWUCX_READ_COOKIE_MISMATCH] == 1 && stats.replies[SWUCX_READ_NOT_FOUND] == 1);
    CHECK(stats.replies[SWUCX_READ_NO_VOLUME] == 1 && stats.replies[SWUCX_READ_INTERNAL] == 3);
    CHECK(stats.replies[SWUCX_READ_STATUS_SLOTS - 1] == 0);
    CHECK(stats.payload_bytes == 5000 + BIG + 2 * 90);
    CHECK(stats.open_connections == 1 && stats.connections_accepted == 1);
    CHECK(stats.connections_rejected == 0 && stats.requests_dropped == 0);
    CHECK_ST(swucx_needle_server_stats(srv, NULL, sizeof stats), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_needle_server_stats(srv, &stats, 4), SWUCX_ERR_INVALID_PARAM);
    /* A caller built against a shorter structure: only its bytes are written. */
    uint64_t older[2] = {0, 0xfeedfacecafebeefULL};
    CHECK_OK(swucx_needle_server_stats(srv, (swucx_needle_server_stats_t *)older, sizeof older[0]));
    CHECK(older[0] == 5 && older[1] == 0xfeedfacecafebeefULL);

    CHECK_OK(swucx_ep_close(ep, SWUCX_EP_CLOSE_FLUSH));
    swucx_ep_destroy(ep);
    swucx_worker_destroy(w);
    CHECK_OK(swucx_needle_server_destroy(srv));
    free(seen.buf);
    swucx_context_destroy(ctx);
    fprintf(stderr, "needle_server %s: done\n", tls);
}

int main(int argc, char **argv)
{
    static const size_t lengths[3] = {0, 5000, BIG};
    for (int i = 0; i < 3; i++) {
        g_needles[i].cookie = COOKIE;
        g_needles[i].length = lengths[i];
        g_needles[i].data = malloc(lengths[i] + 1);
        for (size_t j = 0; j < lengths[i]; j++) {
            g_needles[i].data[j] = (uint8_t)(j * 7 + (size_t)i);
        }
        g_needles[i].crc = crc32c(g_needles[i].data, lengths[i]);
    }
    if (argc > 1) {
        for (int i = 1; i < argc; i++) {
            run(argv[i]);
        }
    } else {
        run("shm");
        run("tcp");
    }
    for (int i = 0; i < 3; i++) {
        free(g_needles[i].data);
    }
    return finish("needle_server");
}
