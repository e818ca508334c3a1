/* An 8 B active-message ping-pong written on UCX directly, measured the way the swucx
 * ping-pongs measure (p50 and mean of RTT/2 over every measured round trip, TSC stamps):
 * the floor for `pingpong --api am --mode lat --size 8` with the same UCX setup (TAG and AM
 * features, SERIALIZED worker, peer-failure handling, UCX_TLS from the environment). The two
 * sides swap worker addresses over a TCP connection on 127.0.0.1:PORT, then connect by address.
 *
 *   ucx-am-lat PORT                 server (waits for one client)
 *   ucx-am-lat PORT --connect       client; prints `RESULT mode=lat api=am size=8 iters=N
 *                                   lat_us_p50=X lat_us_avg=Y` (200000 round trips + 20000
 *                                   warm-up) */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <ucp/api/ucp.h>
#include <unistd.h>

#include "ucx_raw.h"
#if defined(__x86_64__)
#include <x86intrin.h>
#endif

enum { AM_ID = 1, ITERS = 200000, WARMUP = 20000 };

static uint64_t arrived;

static ucs_status_t count_arrival(void *arg, const void *header, size_t header_length,
                                  void *data, size_t length, const ucp_am_recv_param_t *param)
{
    (void)arg; (void)header; (void)header_length; (void)data; (void)length; (void)param;
    arrived++;
    return UCS_OK;
}

static void die(const char *what, const char *why)
{
    fprintf(stderr, "ucx-am-lat: %s: %s\n", what, why);
    exit(1);
}

static void check(ucs_status_t status, const char *what)
{
    raw_check("ucx-am-lat", status, what);
}

static void io_all(int fd, void *buf, size_t len, int writing)
{
    for (size_t done = 0; done < len;) {
        ssize_t n = writing ? write(fd, (char *)buf + done, len - done)
                            : read(fd, (char *)buf + done, len - done);
        if (n <= 0) die(writing ? "write" : "read", "the peer went away");
        done += (size_t)n;
    }
}

/* The TCP connection the worker addresses travel over. */
static int rendezvous(int port, int client)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) die("socket", "failed");
    if (client) {
        for (int tries = 0; connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0; tries++) {
            if (tries == 500) die("connect", "no server");
            usleep(10000);
        }
        return fd;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, 1) != 0)
        die("bind", "port in use?");
    int conn = accept(fd, NULL, NULL);
    if (conn < 0) die("accept", "failed");
    close(fd);
    return conn;
}

/* A time stamp in ticks (the TSC on x86-64, as the Rust ping-pong's; else nanoseconds). */
static uint64_t stamp(void)
{
#if defined(__x86_64__)
    return __rdtsc();
#else
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
#endif
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    int port = argc > 1 ? atoi(argv[1]) : 0;
    int client = argc > 2 && strcmp(argv[2], "--connect") == 0;
    if (port <= 0 || port > 65535 || (argc > 2 && !client) || argc > 3) {
        fprintf(stderr, "usage: ucx-am-lat PORT [--connect]\n");
        return 2;
    }
    ucp_context_h context;
    ucp_worker_h worker = raw_worker("ucx-am-lat", UCP_FEATURE_TAG | UCP_FEATURE_AM, &context);
    ucp_am_handler_param_t hparam = {
        .field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_FLAGS |
                      UCP_AM_HANDLER_PARAM_FIELD_CB,
        .id = AM_ID, .flags = UCP_AM_FLAG_WHOLE_MSG, .cb = count_arrival};
    check(ucp_worker_set_am_recv_handler(worker, &hparam), "ucp_worker_set_am_recv_handler");

    ucp_address_t *own;
    size_t own_len, peer_len;
    check(ucp_worker_get_address(worker, &own, &own_len), "ucp_worker_get_address");
    int fd = rendezvous(port, client);
    io_all(fd, &own_len, sizeof own_len, 1);
    io_all(fd, own, own_len, 1);
    io_all(fd, &peer_len, sizeof peer_len, 0);
    if (peer_len == 0 || peer_len > (1 << 20)) die("address", "bad length");
    void *peer = malloc(peer_len);
    if (peer == NULL) die("malloc", "out of memory");
    io_all(fd, peer, peer_len, 0);
    ucp_ep_params_t eparams = {
        .field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE,
        .address = peer, .err_mode = UCP_ERR_HANDLING_MODE_PEER};
    ucp_ep_h ep;
    check(ucp_ep_create(worker, &eparams, &ep), "ucp_ep_create");
    char sync = 0;
    io_all(fd, &sync, 1, 1);
    io_all(fd, &sync, 1, 0);

    char payload[8] = {0};
    ucp_request_param_t sparam = {.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK |
                                                  UCP_OP_ATTR_FIELD_DATATYPE,
                                  .datatype = ucp_dt_make_contig(1)};
    sparam.cb.send = raw_sent;
    uint64_t *rtts = malloc(ITERS * sizeof *rtts);
    if (rtts == NULL) die("malloc", "out of memory");
    uint64_t last = stamp(), first = 0;
    struct timespec t0 = {0}, t1;
    for (uint64_t i = 1; i <= ITERS + WARMUP; i++) {
        if (!client) {
            while (arrived < i) ucp_worker_progress(worker);
        }
        void *req = ucp_am_send_nbx(ep, AM_ID, NULL, 0, payload, sizeof payload, &sparam);
        if (UCS_PTR_IS_ERR(req)) check(UCS_PTR_STATUS(req), "ucp_am_send_nbx");
        raw_complete(worker, req);
        if (client) {
            while (arrived < i) ucp_worker_progress(worker);
            uint64_t now = stamp();
            if (i == WARMUP) {
                first = now;
                clock_gettime(CLOCK_MONOTONIC, &t0);
            } else if (i > WARMUP) {
                rtts[i - WARMUP - 1] = now - last;
            }
            last = now;
        }
    }
    if (client) {
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double ns = (double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec);
        double ns_per_tick = ns / (double)(last - first);
        qsort(rtts, ITERS, sizeof *rtts, cmp_u64);
        printf("RESULT mode=lat api=am size=8 iters=%d lat_us_p50=%.3f lat_us_avg=%.3f\n", ITERS,
               (double)rtts[ITERS / 2] * ns_per_tick / 2e3, ns / ITERS / 2e3);
    }
    io_all(fd, &sync, 1, 1); /* both sides are done before either closes its endpoint */
    io_all(fd, &sync, 1, 0);
    raw_close(worker, ep);
    close(fd);
    free(rtts);
    free(peer);
    ucp_worker_release_address(worker, own);
    ucp_worker_destroy(worker);
    ucp_cleanup(context);
    return 0;
}
