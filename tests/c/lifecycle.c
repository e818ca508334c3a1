/* Lifecycle in every order: parents destroyed before their children, children outliving them
 * and still usable, destroy(NULL) as a no-op, double use detected, version and error strings. */
#include "test_common.h"

static void versions_and_strings(void)
{
    char want[32];
    snprintf(want, sizeof want, "%d.%d.%d", SWUCX_VERSION_MAJOR, SWUCX_VERSION_MINOR,
             SWUCX_VERSION_PATCH);
    CHECK(strcmp(swucx_version(), want) == 0);
    CHECK(strncmp(swucx_ucx_version(), "1.", 2) == 0);

    CHECK(strcmp(swucx_status_string(SWUCX_OK), "Success") == 0);
    CHECK(strcmp(swucx_status_string(SWUCX_ERR_CANCELED), "Request canceled") == 0);
    CHECK(strcmp(swucx_status_string(SWUCX_ERR_NULL_ARG), "NULL argument") == 0);
    CHECK(strcmp(swucx_status_string(SWUCX_ERR_PANIC), "panic inside swucx") == 0);
    CHECK(strcmp(swucx_status_string(-999), "Unknown error") == 0);
    CHECK(strcmp(swucx_status_string(12345), "Unknown error") == 0);
    CHECK(swucx_status_string(-100) != NULL);
    CHECK(swucx_status_is_peer_failure(SWUCX_ERR_CONNECTION_RESET));
    CHECK(swucx_status_is_peer_failure(SWUCX_ERR_ENDPOINT_TIMEOUT));
    CHECK(!swucx_status_is_peer_failure(SWUCX_ERR_CANCELED));
    CHECK(!swucx_status_is_peer_failure(SWUCX_ERR_NULL_ARG));

    /* Last error, snprintf semantics. */
    swucx_context_t *c = NULL;
    CHECK_ST(swucx_context_create(NULL, NULL), SWUCX_ERR_NULL_ARG);
    const char *expect = "argument `context_p` is NULL";
    size_t n = strlen(expect);
    char buf[64];
    CHECK(swucx_last_error_message(NULL, 0) == n);
    CHECK(swucx_last_error_message(buf, sizeof buf) == n && strcmp(buf, expect) == 0);
    memset(buf, 'x', sizeof buf);
    CHECK(swucx_last_error_message(buf, 5) == n && strcmp(buf, "argu") == 0 && buf[5] == 'x');
    CHECK(swucx_last_error_message(buf, 1) == n && buf[0] == '\0');
    buf[0] = 'y';
    CHECK(swucx_last_error_message(buf, 0) == n && buf[0] == 'y');
    (void)c;

    /* Bad configuration: UCX's error with the setting named. */
    swucx_config_entry_t bad = {"RNDV_THRESH", "not-a-size"};
    swucx_context_params_t params;
    memset(&params, 0, sizeof params);
    params.field_mask = SWUCX_CONTEXT_PARAM_FIELD_CONFIG;
    params.config = &bad;
    params.config_count = 1;
    swucx_status_t st = swucx_context_create(&params, &c);
    CHECK(st < 0 && st > -100);
    CHECK(c == NULL);
    CHECK(swucx_last_error_message(buf, sizeof buf) > 0 && strstr(buf, "RNDV_THRESH") != NULL);
    swucx_context_destroy(c);
    c = NULL;
    /* A config array no memory can hold (count times entry size past PTRDIFF_MAX, or
     * overflowing size_t): refused before it is read. */
    params.config_count = SIZE_MAX;
    CHECK_ST(swucx_context_create(&params, &c), SWUCX_ERR_INVALID_PARAM);
    params.config_count = SIZE_MAX / sizeof bad + 1;
    CHECK_ST(swucx_context_create(&params, &c), SWUCX_ERR_INVALID_PARAM);
    params.config_count = (size_t)PTRDIFF_MAX / sizeof bad + 1;
    CHECK_ST(swucx_context_create(&params, &c), SWUCX_ERR_INVALID_PARAM);
    CHECK(c == NULL);
    /* Invalid UTF-8 in a string argument. */
    params.field_mask = SWUCX_CONTEXT_PARAM_FIELD_NAME;
    params.name = "\xff\xfe";
    CHECK_ST(swucx_context_create(&params, &c), SWUCX_ERR_UTF8);
    CHECK(c == NULL);
    /* Bits no version defines, and no features at all, are refused. */
    memset(&params, 0, sizeof params);
    params.field_mask = (uint64_t)1 << 40;
    CHECK_ST(swucx_context_create(&params, &c), SWUCX_ERR_INVALID_PARAM);
    params.field_mask = SWUCX_CONTEXT_PARAM_FIELD_FEATURES;
    params.features = SWUCX_FEATURE_DEFAULT | (uint64_t)1 << 20;
    CHECK_ST(swucx_context_create(&params, &c), SWUCX_ERR_INVALID_PARAM);
    params.features = 0;
    CHECK_ST(swucx_context_create(&params, &c), SWUCX_ERR_INVALID_PARAM);
    params.field_mask = SWUCX_CONTEXT_PARAM_FIELD_FLAGS;
    params.flags = (uint64_t)1 << 9;
    CHECK_ST(swucx_context_create(&params, &c), SWUCX_ERR_INVALID_PARAM);
    CHECK(c == NULL);
}

static void parents_first(const char *tls)
{
    swucx_context_t *context = test_context(tls);
    swucx_worker_t *worker = NULL;
    REQUIRE_OK(swucx_worker_create(context, &worker));
    swucx_mem_t *mem = NULL;
    REQUIRE_OK(swucx_mem_allocate(context, 4096, &mem));
    swucx_bytes_t *addr = NULL;
    REQUIRE_OK(swucx_worker_address(worker, &addr));
    swucx_ep_t *ep = NULL;
    REQUIRE_OK(swucx_worker_connect_address(worker, swucx_bytes_data(addr),
                                            swucx_bytes_length(addr), &ep));
    swucx_listener_t *listener = NULL;
    if (strcmp(tls, "self") != 0) {
        REQUIRE_OK(swucx_listener_create(worker, "127.0.0.1:0", &listener));
    }
    uint64_t got = 0, v = 99;
    swucx_request_t *rr = NULL, *sr = NULL;
    REQUIRE_OK(swucx_worker_tag_recv(worker, &got, 8, 1, UINT64_MAX, &rr));

    /* Parents go first; children keep them alive and stay usable. */
    swucx_context_destroy(context);
    swucx_worker_destroy(worker);
    swucx_bytes_destroy(addr);
    CHECK(swucx_mem_length(mem) == 4096);
    memset(swucx_mem_address(mem), 1, 4096);
    REQUIRE_OK(swucx_ep_tag_send(ep, &v, 8, 1, &sr));
    CHECK_OK(swucx_request_wait(sr, 10000));
    CHECK_OK(swucx_request_wait(rr, 10000));
    CHECK(got == 99);
    swucx_ep_destroy(ep);
    CHECK_OK(swucx_request_info(sr, NULL, NULL));
    swucx_request_free(sr);
    swucx_listener_destroy(listener);
    swucx_request_free(rr);
    swucx_mem_unmap(mem);
}

static void children_first(const char *tls)
{
    swucx_context_t *context = test_context(tls);
    swucx_worker_t *w1 = NULL, *w2 = NULL;
    REQUIRE_OK(swucx_worker_create(context, &w1));
    REQUIRE_OK(swucx_worker_create(context, &w2));
    swucx_bytes_t *addr = NULL;
    REQUIRE_OK(swucx_worker_address(w1, &addr));
    swucx_ep_t *ep = NULL;
    /* self reaches only its own worker. */
    swucx_worker_t *from = strcmp(tls, "self") == 0 ? w1 : w2;
    REQUIRE_OK(swucx_worker_connect_address(from, swucx_bytes_data(addr),
                                            swucx_bytes_length(addr), &ep));
    swucx_bytes_destroy(addr);
    CHECK_OK(swucx_ep_close(ep, SWUCX_EP_CLOSE_FORCE));
    CHECK_OK(swucx_ep_close(ep, SWUCX_EP_CLOSE_FORCE)); /* closing again: no-op */
    swucx_request_t *req = NULL;
    uint64_t v = 1;
    CHECK_ST(swucx_ep_tag_send(ep, &v, 8, 1, &req), SWUCX_ERR_NOT_CONNECTED);
    CHECK(req == NULL);
    swucx_ep_destroy(ep);
    swucx_worker_destroy(w2);
    swucx_worker_destroy(w1);
    swucx_context_destroy(context);
}

static void engines(void)
{
    swucx_context_t *context = test_context("tcp");
    for (int i = 0; i < 3; i++) {
        swucx_engine_t *engine = NULL;
        REQUIRE_OK(swucx_engine_create(context, &engine));
        swucx_worker_t *w = NULL;
        REQUIRE_OK(swucx_engine_worker(engine, &w));
        if (i == 0) {
            swucx_engine_destroy(engine); /* the engine before its worker */
            CHECK(swucx_worker_progress(w) < 1000000);
            swucx_worker_destroy(w);
        } else {
            swucx_worker_destroy(w);
            swucx_engine_destroy(engine);
        }
    }
    swucx_context_destroy(context);
}

static void stale_and_wrong_handles(void)
{
    swucx_context_t *context = test_context("self");
    swucx_worker_t *worker = NULL;
    REQUIRE_OK(swucx_worker_create(context, &worker));
    swucx_bytes_t *addr = NULL;
    REQUIRE_OK(swucx_worker_address(worker, &addr));
    /* A handle of another type where a worker is expected. */
    swucx_ep_t *ep = NULL;
    CHECK_ST(swucx_worker_connect_address((const swucx_worker_t *)context,
                                          swucx_bytes_data(addr), swucx_bytes_length(addr), &ep),
             SWUCX_ERR_BAD_HANDLE);
    /* An empty address (UCX would read past it) is refused; nothing is written out. */
    CHECK_ST(swucx_worker_connect_address(worker, swucx_bytes_data(addr), 0, &ep),
             SWUCX_ERR_INVALID_ADDR);
    CHECK_ST(swucx_worker_connect_address(worker, NULL, 0, &ep), SWUCX_ERR_INVALID_ADDR);
    CHECK(ep == NULL);
    CHECK(swucx_worker_progress((const swucx_worker_t *)addr) == 0);
    /* Misaligned garbage. */
    CHECK_ST(swucx_worker_signal((const swucx_worker_t *)((const char *)worker + 1)),
             SWUCX_ERR_BAD_HANDLE);
    /* Garbage of the right size. */
    static uint64_t junk[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
    CHECK_ST(swucx_worker_arm((const swucx_worker_t *)junk), SWUCX_ERR_BAD_HANDLE);
    swucx_request_free((swucx_request_t *)junk); /* refused, not freed */
    CHECK_ST(swucx_request_test((swucx_request_t *)junk), SWUCX_ERR_BAD_HANDLE);
    /* A request freed twice, after the thread started another: the second free is refused and
     * the new request lives on (freed requests are reused only after many others). */
    uint64_t got = 0;
    swucx_request_t *r1 = NULL, *r2 = NULL;
    REQUIRE_OK(swucx_worker_tag_recv(worker, &got, 8, 0x51, UINT64_MAX, &r1));
    swucx_request_free(r1);
    REQUIRE_OK(swucx_worker_tag_recv(worker, &got, 8, 0x52, UINT64_MAX, &r2));
    swucx_request_free(r1); /* stale: refused */
    char msg[128];
    swucx_last_error_message(msg, sizeof msg);
    CHECK(strstr(msg, "`req` is not a live swucx handle") != NULL);
    CHECK_ST(swucx_request_test(r1), SWUCX_ERR_BAD_HANDLE);
    CHECK_ST(swucx_request_test(r2), SWUCX_INPROGRESS);
    CHECK_OK(swucx_request_cancel(r2));
    CHECK_ST(swucx_request_wait(r2, 10000), SWUCX_ERR_CANCELED);
    swucx_request_free(r2);
    swucx_bytes_destroy(addr);
    swucx_worker_destroy(worker);
    swucx_context_destroy(context);
}

int main(void)
{
    versions_and_strings();
    const char *sets[] = {"self", "shm", "tcp"};
    for (int i = 0; i < 3; i++) {
        parents_first(sets[i]);
        children_first(sets[i]);
    }
    engines();
    stale_and_wrong_handles();
    /* Destroying NULL is a no-op everywhere. */
    swucx_context_destroy(NULL);
    swucx_worker_destroy(NULL);
    swucx_listener_destroy(NULL);
    swucx_conn_request_reject(NULL);
    swucx_ep_destroy(NULL);
    swucx_mem_unmap(NULL);
    swucx_rkey_destroy(NULL);
    swucx_request_free(NULL);
    CHECK_OK(swucx_engine_destroy(NULL));
    swucx_am_desc_destroy(NULL);
    swucx_bytes_destroy(NULL);
    return finish("lifecycle");
}
