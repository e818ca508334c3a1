/* The loop of examples/op_cost.rs written on UCX directly: a tag receive posted, a matching 8 B
 * send, both completed, in one process over UCX_TLS=self (set here unless the environment sets
 * it), SERIALIZED worker, no peer-failure handling. The reference for what swucx adds per
 * operation. Prints `RESULT impl=ucx pairs=N ns_per_pair=X`.
 *
 *   ucx-op-cost [PAIRS]     (default 5000000, plus 10% warm-up) */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <ucp/api/ucp.h>

static void sent(void *request, ucs_status_t status, void *user_data)
{
    (void)request; (void)status; (void)user_data;
}

static void received(void *request, ucs_status_t status, const ucp_tag_recv_info_t *info,
                     void *user_data)
{
    (void)request; (void)status; (void)info;
    *(int *)user_data = 1;
}

static void check(ucs_status_t status, const char *what)
{
    if (status != UCS_OK) {
        fprintf(stderr, "ucx-op-cost: %s: %s\n", what, ucs_status_string(status));
        exit(1);
    }
}

int main(int argc, char **argv)
{
    long pairs = argc > 1 ? atol(argv[1]) : 5000000;
    if (pairs <= 0) {
        fprintf(stderr, "usage: ucx-op-cost [PAIRS]\n");
        return 2;
    }
    setenv("UCX_TLS", "self", 0);
    ucp_params_t params = {.field_mask = UCP_PARAM_FIELD_FEATURES, .features = UCP_FEATURE_TAG};
    ucp_context_h context;
    check(ucp_init(&params, NULL, &context), "ucp_init");
    ucp_worker_params_t wparams = {.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE,
                                   .thread_mode = UCS_THREAD_MODE_SERIALIZED};
    ucp_worker_h worker;
    check(ucp_worker_create(context, &wparams, &worker), "ucp_worker_create");
    ucp_address_t *address;
    size_t address_len;
    check(ucp_worker_get_address(worker, &address, &address_len), "ucp_worker_get_address");
    ucp_ep_params_t eparams = {.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS, .address = address};
    ucp_ep_h ep;
    check(ucp_ep_create(worker, &eparams, &ep), "ucp_ep_create");
    char send_buf[8] = {0}, recv_buf[8];
    struct timespec start = {0}, end;
    for (long i = 0; i < pairs + pairs / 10; i++) {
        if (i == pairs / 10) clock_gettime(CLOCK_MONOTONIC, &start);
        int done = 0;
        ucp_request_param_t rparam = {.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK |
                                                      UCP_OP_ATTR_FIELD_DATATYPE |
                                                      UCP_OP_ATTR_FIELD_USER_DATA,
                                      .datatype = ucp_dt_make_contig(1),
                                      .user_data = &done};
        rparam.cb.recv = received;
        void *recv = ucp_tag_recv_nbx(worker, recv_buf, sizeof recv_buf, 1, ~0ull, &rparam);
        ucp_request_param_t sparam = {.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK |
                                                      UCP_OP_ATTR_FIELD_DATATYPE,
                                      .datatype = ucp_dt_make_contig(1)};
        sparam.cb.send = sent;
        void *send = ucp_tag_send_nbx(ep, send_buf, sizeof send_buf, 1, &sparam);
        if (UCS_PTR_IS_ERR(send) || UCS_PTR_IS_ERR(recv)) check(UCS_ERR_IO_ERROR, "operation");
        if (UCS_PTR_IS_PTR(send)) {
            while (ucp_request_check_status(send) == UCS_INPROGRESS) ucp_worker_progress(worker);
            ucp_request_free(send);
        }
        if (UCS_PTR_IS_PTR(recv)) {
            while (!done) ucp_worker_progress(worker);
            ucp_request_free(recv);
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &end);
    double ns = ((end.tv_sec - start.tv_sec) * 1e9 + (end.tv_nsec - start.tv_nsec)) / pairs;
    printf("RESULT impl=ucx pairs=%ld ns_per_pair=%.1f\n", pairs, ns);
    ucp_ep_h closing = ep;
    ucp_request_param_t cparam = {.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS,
                                  .flags = UCP_EP_CLOSE_FLAG_FORCE};
    void *close = ucp_ep_close_nbx(closing, &cparam);
    if (UCS_PTR_IS_PTR(close)) {
        while (ucp_request_check_status(close) == UCS_INPROGRESS) ucp_worker_progress(worker);
        ucp_request_free(close);
    }
    ucp_worker_release_address(worker, address);
    ucp_worker_destroy(worker);
    ucp_cleanup(context);
    return 0;
}
