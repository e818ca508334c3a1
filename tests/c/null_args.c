/* Every exported function with NULL for each of its pointer arguments (one at a time, the
 * others valid): a SWUCX_ERR_NULL_ARG status or the documented default, and the process keeps
 * running. tests/c_api.rs checks that every function of the header is called here. */
#include "test_common.h"

static void dummy_am_cb(swucx_am_msg_t *msg, void *user_data)
{
    (void)msg;
    (void)user_data;
}

static void dummy_ep_cb(swucx_status_t status, void *user_data)
{
    (void)status;
    (void)user_data;
}

static void dummy_read_cb(void *user_data, const swucx_read_request_t *req, swucx_read_reply_t *reply)
{
    (void)user_data;
    (void)req;
    (void)reply;
}

static uint8_t buf[64];
static uint8_t *u8p;
static swucx_needle_server_t *out_swucx_needle_server_t;
static const void *cvp;
static int fd;
static uint16_t u16;
static swucx_needle_server_stats_t server_stats;
static size_t sz;
static uint64_t u64;
static swucx_worker_t *out_swucx_worker_t;
static swucx_listener_t *out_swucx_listener_t;
static swucx_conn_request_t *out_swucx_conn_request_t;
static swucx_ep_t *out_swucx_ep_t;
static swucx_mem_t *out_swucx_mem_t;
static swucx_rkey_t *out_swucx_rkey_t;
static swucx_request_t *out_swucx_request_t;
static swucx_engine_t *out_swucx_engine_t;
static swucx_bytes_t *out_swucx_bytes_t;
static swucx_am_desc_t *out_swucx_am_desc_t;
static swucx_am_desc_t *desc, *desc2; /* kept by the first and the second message */
static int handled;
static swucx_mem_t *msg_mem;
static swucx_engine_t *msg_engine; /* for waits the handler must be refused */
static swucx_request_t *msg_request;

/* The active-message accessors, with a live message. */
static void null_msg_handler(swucx_am_msg_t *msg, void *user_data)
{
    (void)user_data;
    CHECK_ST(swucx_am_msg_header(NULL, &cvp, &sz), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_am_msg_header(msg, NULL, &sz), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_am_msg_header(msg, &cvp, NULL), SWUCX_ERR_NULL_ARG);
    CHECK(swucx_am_msg_length(NULL) == 0);
    CHECK(!swucx_am_msg_is_rndv(NULL));
    CHECK_ST(swucx_am_msg_data(NULL, &cvp), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_am_msg_data(msg, NULL), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_am_msg_reply_ep(NULL, &out_swucx_ep_t), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_am_msg_reply_ep(msg, NULL), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_am_msg_recv(NULL, buf, sizeof buf, &out_swucx_request_t), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_am_msg_recv(msg, NULL, sizeof buf, &out_swucx_request_t), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_am_msg_recv(msg, buf, sizeof buf, NULL), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_am_msg_recv_mem(NULL, msg_mem, 0, 16, &out_swucx_request_t), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_am_msg_recv_mem(msg, NULL, 0, 16, &out_swucx_request_t), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_am_msg_recv_mem(msg, msg_mem, 0, 16, NULL), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_am_msg_keep(NULL, &out_swucx_am_desc_t), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_am_msg_keep(msg, NULL), SWUCX_ERR_NULL_ARG);
    /* No wait inside a callback: refused at once, not held up or deadlocked. */
    CHECK_ST(swucx_engine_wait(msg_engine, msg_request, 1000), SWUCX_ERR_BUSY);
    CHECK_ST(swucx_engine_wait_signals(msg_engine, msg_request, 1000, 0, NULL, 0), SWUCX_ERR_BUSY);
    CHECK_OK(swucx_am_msg_keep(msg, handled == 0 ? &desc : &desc2));
    handled++;
}

int main(void)
{
    /* UCX 1.13 can trip its own keepalive assertion (ucp_worker.c:3241) when endpoints go away
     * while keepalive walks them, which valgrind's slowness makes likely here: no keepalive. */
    setenv("UCX_KEEPALIVE_INTERVAL", "inf", 1);
    swucx_context_t *ctx = test_context("tcp");
    swucx_worker_t *w = NULL;
    REQUIRE_OK(swucx_worker_create(ctx, &w));
    swucx_bytes_t *bytes = NULL;
    REQUIRE_OK(swucx_worker_address(w, &bytes));
    swucx_ep_t *ep = NULL;
    REQUIRE_OK(swucx_worker_connect_address(w, swucx_bytes_data(bytes), swucx_bytes_length(bytes),
                                            &ep));
    swucx_listener_t *lst = NULL;
    REQUIRE_OK(swucx_listener_create(w, "127.0.0.1:0", &lst));
    uint16_t port = 0;
    REQUIRE_OK(swucx_listener_port(lst, &port));
    char where[64];
    snprintf(where, sizeof where, "127.0.0.1:%u", (unsigned)port);
    /* Two connection requests: swucx_worker_accept consumes one even when it fails. */
    swucx_ep_t *ep2 = NULL, *ep3 = NULL;
    REQUIRE_OK(swucx_worker_connect(w, where, &ep2));
    swucx_conn_request_t *creq = NULL, *creq2 = NULL;
    REQUIRE_OK(swucx_listener_accept(lst, 10000, &creq));
    REQUIRE_OK(swucx_worker_connect(w, where, &ep3));
    REQUIRE_OK(swucx_listener_accept(lst, 10000, &creq2));
    swucx_mem_t *mem = NULL;
    REQUIRE_OK(swucx_mem_allocate(ctx, 4096, &mem));
    swucx_bytes_t *exported = NULL;
    REQUIRE_OK(swucx_mem_export(mem, &exported));
    swucx_rkey_t *rkey = NULL;
    REQUIRE_OK(swucx_rkey_unpack(ep, swucx_bytes_data(exported), swucx_bytes_length(exported),
                                 &rkey));
    swucx_request_t *req = NULL;
    REQUIRE_OK(swucx_ep_tag_send(ep, buf, 8, 99, &req));
    swucx_engine_t *eng = NULL;
    REQUIRE_OK(swucx_engine_create(ctx, &eng));
    swucx_signal_t *sig = NULL;
    REQUIRE_OK(swucx_signal_create(&sig));

    msg_mem = mem;
    msg_engine = eng;
    msg_request = req;
    REQUIRE_OK(swucx_worker_set_am_handler(w, 3, null_msg_handler, NULL));
    /* Two messages kept: swucx_am_desc_recv consumes its descriptor even when it fails. */
    swucx_request_t *am = NULL, *am2 = NULL;
    REQUIRE_OK(swucx_ep_am_send(ep, 3, buf, 4, buf, 16, 0, &am));
    REQUIRE_OK(swucx_ep_am_send(ep, 3, buf, 4, buf, 16, 0, &am2));
    double deadline = now_s() + 30.0;
    while (handled < 2 && now_s() < deadline) {
        swucx_worker_progress(w);
    }
    CHECK(handled == 2 && desc != NULL && desc2 != NULL);

    CHECK(swucx_bytes_data(NULL) == NULL);
    CHECK(swucx_bytes_length(NULL) == 0);
    swucx_bytes_destroy(NULL); /* NULL is a no-op */
    CHECK_ST(swucx_worker_set_am_handler(NULL, 1, dummy_am_cb, buf), SWUCX_ERR_NULL_ARG);
    /* A NULL callback is no error: it removes the handler. */
    CHECK_ST(swucx_worker_set_am_handler((const struct swucx_worker_t *)w, 1, NULL, buf), SWUCX_OK);
    CHECK(swucx_am_desc_length(NULL) == 0);
    CHECK(!swucx_am_desc_is_rndv(NULL));
    swucx_am_desc_destroy(NULL); /* NULL is a no-op */
    CHECK_ST(swucx_am_desc_header(NULL, &cvp, &sz), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_am_desc_header(desc, NULL, &sz), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_am_desc_header(desc, &cvp, NULL), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_am_desc_reply_ep(NULL, &out_swucx_ep_t), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_am_desc_reply_ep(desc, NULL), SWUCX_ERR_NULL_ARG);
    /* Consumed also on failure (released): each call takes its own descriptor. */
    CHECK_ST(swucx_am_desc_recv(NULL, buf, sizeof buf, &out_swucx_request_t), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_am_desc_recv(desc, NULL, sizeof buf, &out_swucx_request_t), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_am_desc_recv(desc2, buf, sizeof buf, NULL), SWUCX_ERR_NULL_ARG);
    swucx_am_queue_t *queue = NULL;
    CHECK_ST(swucx_am_queue_create(NULL, 5, &queue), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_am_queue_create((const struct swucx_worker_t *)w, 5, NULL), SWUCX_ERR_NULL_ARG);
    REQUIRE_OK(swucx_am_queue_create(w, 5, &queue));
    CHECK_ST(swucx_am_queue_try_recv(NULL, &out_swucx_am_desc_t), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_am_queue_try_recv(queue, NULL), SWUCX_ERR_NULL_ARG);
    CHECK(swucx_am_queue_length(NULL) == 0);
    CHECK_ST(swucx_engine_am_recv(NULL, queue, 0, 0, NULL, 0, &out_swucx_am_desc_t), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_engine_am_recv((const struct swucx_engine_t *)eng, NULL, 0, 0, NULL, 0, &out_swucx_am_desc_t), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_engine_am_recv((const struct swucx_engine_t *)eng, queue, 0, 0, NULL, 1, &out_swucx_am_desc_t), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_engine_am_recv((const struct swucx_engine_t *)eng, queue, 0, 0, NULL, 0, NULL), SWUCX_ERR_NULL_ARG);
    swucx_am_recv_info_t info;
    CHECK_ST(swucx_engine_tag_recv(NULL, buf, 1, 0, 0, 0, 0, NULL, 0, NULL, NULL, NULL), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_engine_tag_recv((const struct swucx_engine_t *)eng, NULL, 1, 0, 0, 0, 0, NULL, 0, NULL, NULL, NULL), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_engine_tag_recv((const struct swucx_engine_t *)eng, buf, 1, 0, 0, 0, 0, NULL, 1, NULL, NULL, NULL), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_engine_am_recv_into(NULL, queue, 0, 0, NULL, 0, buf, 1, buf, 1, &info), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_engine_am_recv_into((const struct swucx_engine_t *)eng, NULL, 0, 0, NULL, 0, buf, 1, buf, 1, &info), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_engine_am_recv_into((const struct swucx_engine_t *)eng, queue, 0, 0, NULL, 1, buf, 1, buf, 1, &info), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_engine_am_recv_into((const struct swucx_engine_t *)eng, queue, 0, 0, NULL, 0, NULL, 1, buf, 1, &info), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_engine_am_recv_into((const struct swucx_engine_t *)eng, queue, 0, 0, NULL, 0, buf, 1, NULL, 1, &info), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_engine_am_recv_into((const struct swucx_engine_t *)eng, queue, 0, 0, NULL, 0, buf, 1, buf, 1, NULL), SWUCX_ERR_NULL_ARG);
    /* Lengths past PTRDIFF_MAX (no object is that large): refused, nothing posted. */
    CHECK_ST(swucx_engine_am_recv_into((const struct swucx_engine_t *)eng, queue, 0, 0, NULL, 0, buf, SIZE_MAX, buf, 1, &info), SWUCX_ERR_INVALID_PARAM);
    CHECK_ST(swucx_engine_am_recv_into((const struct swucx_engine_t *)eng, queue, 0, 0, NULL, 0, buf, 1, buf, (size_t)PTRDIFF_MAX + 1, &info), SWUCX_ERR_INVALID_PARAM);
    CHECK_ST(swucx_engine_tag_recv((const struct swucx_engine_t *)eng, buf, SIZE_MAX, 0, 0, 0, 0, NULL, 0, NULL, NULL, NULL), SWUCX_ERR_INVALID_PARAM);
    swucx_am_queue_destroy(queue);
    swucx_am_queue_destroy(NULL); /* NULL is a no-op */
    CHECK_ST(swucx_ep_am_send_now(NULL, 1, buf, sizeof buf, buf, sizeof buf, 0), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_ep_am_send_now((const struct swucx_ep_t *)ep, 1, NULL, sizeof buf, buf, sizeof buf, 0), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_ep_am_send_now((const struct swucx_ep_t *)ep, 1, buf, sizeof buf, NULL, sizeof buf, 0), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_ep_am_send(NULL, 1, buf, sizeof buf, buf, sizeof buf, 0, &out_swucx_request_t), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_ep_am_send((const struct swucx_ep_t *)ep, 1, NULL, sizeof buf, buf, sizeof buf, 0, &out_swucx_request_t), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_ep_am_send((const struct swucx_ep_t *)ep, 1, buf, sizeof buf, NULL, sizeof buf, 0, &out_swucx_request_t), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_ep_am_send((const struct swucx_ep_t *)ep, 1, buf, sizeof buf, buf, sizeof buf, 0, NULL), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_ep_am_send_mem(NULL, 1, buf, 4, mem, 0, 16, 0, &out_swucx_request_t), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_ep_am_send_mem((const struct swucx_ep_t *)ep, 1, NULL, 4, mem, 0, 16, 0, &out_swucx_request_t), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_ep_am_send_mem((const struct swucx_ep_t *)ep, 1, buf, 4, NULL, 0, 16, 0, &out_swucx_request_t), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_ep_am_send_mem((const struct swucx_ep_t *)ep, 1, buf, 4, mem, 0, 16, 0, NULL), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_context_create(NULL, NULL), SWUCX_ERR_NULL_ARG);
    swucx_context_destroy(NULL); /* NULL is a no-op */
    CHECK(swucx_context_features(NULL) == 0);
    swucx_ep_destroy(NULL); /* NULL is a no-op */
    CHECK_ST(swucx_ep_close(NULL, 0), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_ep_failure(NULL), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_ep_set_error_handler(NULL, dummy_ep_cb, buf), SWUCX_ERR_NULL_ARG);
    /* A NULL callback is no error: it removes the handler. */
    CHECK_ST(swucx_ep_set_error_handler((const struct swucx_ep_t *)ep, NULL, buf), SWUCX_OK);
    CHECK_ST(swucx_ep_transports(NULL, &out_swucx_bytes_t), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_ep_transports((const struct swucx_ep_t *)ep, NULL), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_ep_flush(NULL), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_ep_tag_send_now(NULL, buf, sizeof buf, 1), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_ep_tag_send_now((const struct swucx_ep_t *)ep, NULL, sizeof buf, 1), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_ep_tag_send(NULL, buf, sizeof buf, 1, &out_swucx_request_t), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_ep_tag_send((const struct swucx_ep_t *)ep, NULL, sizeof buf, 1, &out_swucx_request_t), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_ep_tag_send((const struct swucx_ep_t *)ep, buf, sizeof buf, 1, NULL), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_ep_tag_send_mem(NULL, mem, 0, 8, 1, &out_swucx_request_t), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_ep_tag_send_mem((const struct swucx_ep_t *)ep, NULL, 0, 8, 1, &out_swucx_request_t), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_ep_tag_send_mem((const struct swucx_ep_t *)ep, mem, 0, 8, 1, NULL), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_ep_stream_send_mem(NULL, mem, 0, 8, &out_swucx_request_t), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_ep_stream_send_mem((const struct swucx_ep_t *)ep, NULL, 0, 8, &out_swucx_request_t), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_ep_stream_send_mem((const struct swucx_ep_t *)ep, mem, 0, 8, NULL), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_ep_stream_recv_mem(NULL, mem, 0, 8, &out_swucx_request_t), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_ep_stream_recv_mem((const struct swucx_ep_t *)ep, NULL, 0, 8, &out_swucx_request_t), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_ep_stream_recv_mem((const struct swucx_ep_t *)ep, mem, 0, 8, NULL), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_ep_stream_send(NULL, buf, sizeof buf, &out_swucx_request_t), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_ep_stream_send((const struct swucx_ep_t *)ep, NULL, sizeof buf, &out_swucx_request_t), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_ep_stream_send((const struct swucx_ep_t *)ep, buf, sizeof buf, NULL), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_ep_stream_recv(NULL, buf, sizeof buf, &out_swucx_request_t), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_ep_stream_recv((const struct swucx_ep_t *)ep, NULL, sizeof buf, &out_swucx_request_t), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_ep_stream_recv((const struct swucx_ep_t *)ep, buf, sizeof buf, NULL), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_ep_stream_recv_some(NULL, buf, sizeof buf, &out_swucx_request_t), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_ep_stream_recv_some((const struct swucx_ep_t *)ep, NULL, sizeof buf, &out_swucx_request_t), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_ep_stream_recv_some((const struct swucx_ep_t *)ep, buf, sizeof buf, NULL), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_ep_put(NULL, buf, sizeof buf, (const struct swucx_rkey_t *)rkey, 0, &out_swucx_request_t), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_ep_put((const struct swucx_ep_t *)ep, NULL, sizeof buf, (const struct swucx_rkey_t *)rkey, 0, &out_swucx_request_t), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_ep_put((const struct swucx_ep_t *)ep, buf, sizeof buf, NULL, 0, &out_swucx_request_t), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_ep_put((const struct swucx_ep_t *)ep, buf, sizeof buf, (const struct swucx_rkey_t *)rkey, 0, NULL), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_ep_get(NULL, buf, sizeof buf, (const struct swucx_rkey_t *)rkey, 0, &out_swucx_request_t), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_ep_get((const struct swucx_ep_t *)ep, NULL, sizeof buf, (const struct swucx_rkey_t *)rkey, 0, &out_swucx_request_t), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_ep_get((const struct swucx_ep_t *)ep, buf, sizeof buf, NULL, 0, &out_swucx_request_t), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_ep_get((const struct swucx_ep_t *)ep, buf, sizeof buf, (const struct swucx_rkey_t *)rkey, 0, NULL), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_engine_create(NULL, &out_swucx_engine_t), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_engine_create((const struct swucx_context_t *)ctx, NULL), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_engine_worker(NULL, &out_swucx_worker_t), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_engine_worker((const struct swucx_engine_t *)eng, NULL), SWUCX_ERR_NULL_ARG);
    CHECK(swucx_engine_progress(NULL) == 0);
    CHECK_ST(swucx_engine_spin_begin(NULL), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_engine_spin_end(NULL), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_engine_hand_over(NULL), SWUCX_ERR_NULL_ARG);
    swucx_engine_destroy(NULL); /* NULL is a no-op */
    CHECK_ST(swucx_listener_create(NULL, "127.0.0.1:0", &out_swucx_listener_t), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_listener_create((const struct swucx_worker_t *)w, NULL, &out_swucx_listener_t), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_listener_create((const struct swucx_worker_t *)w, "127.0.0.1:0", NULL), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_listener_create_sockaddr(NULL, buf, sizeof buf, &out_swucx_listener_t), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_listener_create_sockaddr((const struct swucx_worker_t *)w, NULL, sizeof buf, &out_swucx_listener_t), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_listener_create_sockaddr((const struct swucx_worker_t *)w, buf, sizeof buf, NULL), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_listener_port(NULL, &u16), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_listener_port((const struct swucx_listener_t *)lst, NULL), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_listener_address(NULL, &out_swucx_bytes_t), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_listener_address((const struct swucx_listener_t *)lst, NULL), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_listener_accept(NULL, 0, &out_swucx_conn_request_t), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_listener_accept((const struct swucx_listener_t *)lst, 0, NULL), SWUCX_ERR_NULL_ARG);
    swucx_listener_destroy(NULL); /* NULL is a no-op */
    CHECK_ST(swucx_conn_request_client_address(NULL, &out_swucx_bytes_t), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_conn_request_client_address((const struct swucx_conn_request_t *)creq, NULL), SWUCX_ERR_NULL_ARG);
    swucx_conn_request_reject(NULL); /* NULL is a no-op */
    CHECK_ST(swucx_needle_server_create(NULL, "127.0.0.1:0", dummy_read_cb, NULL, NULL, 1, &out_swucx_needle_server_t), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_needle_server_create((const struct swucx_context_t *)ctx, NULL, dummy_read_cb, NULL, NULL, 1, &out_swucx_needle_server_t), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_needle_server_create((const struct swucx_context_t *)ctx, "127.0.0.1:0", NULL, NULL, NULL, 1, &out_swucx_needle_server_t), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_needle_server_create((const struct swucx_context_t *)ctx, "127.0.0.1:0", dummy_read_cb, NULL, NULL, 1, NULL), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_needle_server_port(NULL, &u16), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_needle_server_stats(NULL, &server_stats, sizeof server_stats), SWUCX_ERR_NULL_ARG);
    swucx_needle_server_destroy(NULL); /* NULL is a no-op */
    CHECK_ST(swucx_read_reply_set(NULL, SWUCX_READ_OK, 0, 0, 0), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_read_reply_payload(NULL, 1, &u8p), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_mem_map(NULL, buf, sizeof buf, &out_swucx_mem_t), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_mem_map((const struct swucx_context_t *)ctx, NULL, sizeof buf, &out_swucx_mem_t), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_mem_map((const struct swucx_context_t *)ctx, buf, sizeof buf, NULL), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_mem_allocate(NULL, sizeof buf, &out_swucx_mem_t), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_mem_allocate((const struct swucx_context_t *)ctx, sizeof buf, NULL), SWUCX_ERR_NULL_ARG);
    CHECK(swucx_mem_address(NULL) == NULL);
    CHECK(swucx_mem_length(NULL) == 0);
    CHECK_ST(swucx_mem_export(NULL, &out_swucx_bytes_t), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_mem_export((const struct swucx_mem_t *)mem, NULL), SWUCX_ERR_NULL_ARG);
    swucx_mem_unmap(NULL); /* NULL is a no-op */
    CHECK_ST(swucx_rkey_unpack(NULL, buf, sizeof buf, &out_swucx_rkey_t), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_rkey_unpack((const struct swucx_ep_t *)ep, NULL, sizeof buf, &out_swucx_rkey_t), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_rkey_unpack((const struct swucx_ep_t *)ep, buf, sizeof buf, NULL), SWUCX_ERR_NULL_ARG);
    CHECK(swucx_rkey_length(NULL) == 0);
    swucx_rkey_destroy(NULL); /* NULL is a no-op */
    CHECK_ST(swucx_request_test(NULL), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_request_poll(NULL), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_request_wait(NULL, 0), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_engine_wait(NULL, (struct swucx_request_t *)req, 0), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_engine_wait((const struct swucx_engine_t *)eng, NULL, 0), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_engine_wait_signals(NULL, (struct swucx_request_t *)req, 0, 0, NULL, 0), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_engine_wait_signals((const struct swucx_engine_t *)eng, NULL, 0, 0, NULL, 0), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_engine_wait_signals((const struct swucx_engine_t *)eng, (struct swucx_request_t *)req, 0, 0, NULL, 1), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_engine_accept(NULL, (const struct swucx_listener_t *)lst, 0, NULL, 0, &out_swucx_conn_request_t), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_engine_accept((const struct swucx_engine_t *)eng, NULL, 0, NULL, 0, &out_swucx_conn_request_t), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_engine_accept((const struct swucx_engine_t *)eng, (const struct swucx_listener_t *)lst, 0, NULL, 1, &out_swucx_conn_request_t), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_engine_accept((const struct swucx_engine_t *)eng, (const struct swucx_listener_t *)lst, 0, NULL, 0, NULL), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_signal_create(NULL), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_signal_raise(NULL), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_signal_reset(NULL), SWUCX_ERR_NULL_ARG);
    CHECK(!swucx_signal_is_raised(NULL));
    swucx_signal_destroy(NULL); /* NULL is a no-op */
    CHECK_ST(swucx_ep_raise_on_failure(NULL, (const struct swucx_signal_t *)sig), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_ep_raise_on_failure((const struct swucx_ep_t *)ep, NULL), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_request_info(NULL, &sz, &u64), SWUCX_ERR_NULL_ARG);
    CHECK(!swucx_request_is_detached(NULL));
    CHECK_ST(swucx_request_cancel(NULL), SWUCX_ERR_NULL_ARG);
    swucx_request_free(NULL); /* NULL is a no-op */
    CHECK(swucx_last_error_message(NULL, sizeof buf) > 0); /* snprintf: NULL buffer writes nothing */
    CHECK_ST(swucx_worker_create(NULL, &out_swucx_worker_t), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_worker_create((const struct swucx_context_t *)ctx, NULL), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_worker_create_serialized(NULL, &out_swucx_worker_t), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_worker_create_serialized((const struct swucx_context_t *)ctx, NULL), SWUCX_ERR_NULL_ARG);
    swucx_worker_destroy(NULL); /* NULL is a no-op */
    CHECK(swucx_worker_progress(NULL) == 0);
    CHECK_ST(swucx_worker_efd(NULL, &fd), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_worker_efd((const struct swucx_worker_t *)w, NULL), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_worker_arm(NULL), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_worker_signal(NULL), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_worker_wait(NULL), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_worker_address(NULL, &out_swucx_bytes_t), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_worker_address((const struct swucx_worker_t *)w, NULL), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_worker_flush(NULL), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_worker_connect(NULL, "127.0.0.1:0", &out_swucx_ep_t), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_worker_connect((const struct swucx_worker_t *)w, NULL, &out_swucx_ep_t), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_worker_connect((const struct swucx_worker_t *)w, "127.0.0.1:0", NULL), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_worker_connect_sockaddr(NULL, buf, sizeof buf, &out_swucx_ep_t), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_worker_connect_sockaddr((const struct swucx_worker_t *)w, NULL, sizeof buf, &out_swucx_ep_t), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_worker_connect_sockaddr((const struct swucx_worker_t *)w, buf, sizeof buf, NULL), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_worker_connect_address(NULL, buf, sizeof buf, &out_swucx_ep_t), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_worker_connect_address((const struct swucx_worker_t *)w, NULL, sizeof buf, &out_swucx_ep_t), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_worker_connect_address((const struct swucx_worker_t *)w, buf, sizeof buf, NULL), SWUCX_ERR_NULL_ARG);
    /* Consumed also on failure (rejected): each call takes its own request. */
    CHECK_ST(swucx_worker_accept(NULL, (struct swucx_conn_request_t *)creq, &out_swucx_ep_t), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_worker_accept((const struct swucx_worker_t *)w, NULL, &out_swucx_ep_t), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_worker_accept((const struct swucx_worker_t *)w, (struct swucx_conn_request_t *)creq2, NULL), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_worker_tag_recv(NULL, buf, sizeof buf, 1, 1, &out_swucx_request_t), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_worker_tag_recv((const struct swucx_worker_t *)w, NULL, sizeof buf, 1, 1, &out_swucx_request_t), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_worker_tag_recv((const struct swucx_worker_t *)w, buf, sizeof buf, 1, 1, NULL), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_worker_tag_recv_mem(NULL, mem, 0, 8, 1, 1, &out_swucx_request_t), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_worker_tag_recv_mem((const struct swucx_worker_t *)w, NULL, 0, 8, 1, 1, &out_swucx_request_t), SWUCX_ERR_NULL_ARG);
    CHECK_ST(swucx_worker_tag_recv_mem((const struct swucx_worker_t *)w, mem, 0, 8, 1, 1, NULL), SWUCX_ERR_NULL_ARG);
    /* Garbage handle and out-of-range slices. */
    CHECK_ST(swucx_ep_tag_send_mem(ep, (const swucx_mem_t *)(const void *)buf, 0, 8, 1, &out_swucx_request_t), SWUCX_ERR_BAD_HANDLE);
    CHECK_ST(swucx_ep_tag_send_mem(ep, mem, 4090, 8, 1, &out_swucx_request_t), SWUCX_ERR_OUT_OF_RANGE);
    CHECK_ST(swucx_worker_tag_recv_mem(w, mem, SIZE_MAX, 2, 1, 1, &out_swucx_request_t), SWUCX_ERR_OUT_OF_RANGE);
    /* Lengths past PTRDIFF_MAX (no object is that large): SWUCX_ERR_INVALID_PARAM, before any
     * byte is read or anything posted. */
    out_swucx_rkey_t = NULL;
    CHECK_ST(swucx_rkey_unpack(ep, buf, SIZE_MAX, &out_swucx_rkey_t), SWUCX_ERR_INVALID_PARAM);
    CHECK_ST(swucx_rkey_unpack(ep, buf, (size_t)PTRDIFF_MAX + 1, &out_swucx_rkey_t), SWUCX_ERR_INVALID_PARAM);
    /* An empty descriptor is not an intact one, whether its pointer is NULL or not. */
    CHECK_ST(swucx_rkey_unpack(ep, NULL, 0, &out_swucx_rkey_t), SWUCX_ERR_INVALID_PARAM);
    CHECK_ST(swucx_rkey_unpack(ep, buf, 0, &out_swucx_rkey_t), SWUCX_ERR_INVALID_PARAM);
    CHECK(out_swucx_rkey_t == NULL);
    CHECK_ST(swucx_worker_connect_address(w, buf, SIZE_MAX, &out_swucx_ep_t), SWUCX_ERR_INVALID_PARAM);
    CHECK_ST(swucx_worker_tag_recv(w, buf, SIZE_MAX, 0x5a5a, UINT64_MAX, &out_swucx_request_t), SWUCX_ERR_INVALID_PARAM);
    CHECK_ST(swucx_ep_tag_send(ep, buf, SIZE_MAX, 0x5a5a, &out_swucx_request_t), SWUCX_ERR_INVALID_PARAM);
    CHECK_ST(swucx_ep_tag_send_now(ep, buf, SIZE_MAX, 0x5a5a), SWUCX_ERR_INVALID_PARAM);
    CHECK_ST(swucx_ep_am_send(ep, 1, buf, SIZE_MAX, buf, 1, 0, &out_swucx_request_t), SWUCX_ERR_INVALID_PARAM);
    /* An out-pointer not aligned for its type (no valid pointer to it): refused, nothing
     * written, nothing made. */
    uint64_t outs[2] = {0, 0};
    CHECK_ST(swucx_worker_address(w, (swucx_bytes_t **)(void *)((char *)outs + 1)), SWUCX_ERR_INVALID_PARAM);
    CHECK_ST(swucx_request_info(req, (size_t *)(void *)((char *)outs + 3), NULL), SWUCX_ERR_INVALID_PARAM);
    CHECK(outs[0] == 0 && outs[1] == 0);

    wait2(am, w, NULL);
    wait2(am2, w, NULL);
    swucx_request_free(am);
    swucx_request_free(am2);
    uint8_t sink[8];
    swucx_request_t *drain = NULL;
    REQUIRE_OK(swucx_worker_tag_recv(w, sink, 8, 99, UINT64_MAX, &drain));
    wait2(drain, w, NULL);
    wait2(req, w, NULL);
    swucx_request_free(drain);
    swucx_request_free(req);
    swucx_engine_destroy(eng);
    swucx_signal_destroy(sig);
    swucx_rkey_destroy(rkey);
    swucx_bytes_destroy(exported);
    swucx_mem_unmap(mem);
    swucx_ep_destroy(ep2);
    swucx_ep_destroy(ep3);
    swucx_listener_destroy(lst);
    swucx_ep_destroy(ep);
    swucx_bytes_destroy(bytes);
    for (int i = 0; i < 100; i++) {
        swucx_worker_progress(w);
    }
    swucx_worker_destroy(w);
    swucx_context_destroy(ctx);
    return finish("null_args");
}
