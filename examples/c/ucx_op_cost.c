/* The loops of examples/op_cost.rs written on UCX directly, in one process over UCX_TLS=self
 * (set here unless the environment sets it), SERIALIZED worker, no peer-failure handling. `tag`
 * (the default): a tag receive posted, a matching 8 B send, both completed. `am`: an 8 B active
 * message sent, completed and counted by its handler. The reference for what swucx adds per
 * operation. Prints `RESULT impl=ucx op=tag|am pairs=N ns_per_pair=X`.
 *
 *   ucx-op-cost [PAIRS [tag|am]]     (default 5000000, plus 10% warm-up) */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <ucp/api/ucp.h>

#include "ucx_raw.h"

static void received(void *request, ucs_status_t status, const ucp_tag_recv_info_t *info,
                     void *user_data)
{
    (void)request; (void)status; (void)info;
    *(int *)user_data = 1;
}

static ucs_status_t counted(void *arg, const void *header, size_t header_length, void *data,
                            size_t length, const ucp_am_recv_param_t *param)
{
    (void)header; (void)header_length; (void)data; (void)length; (void)param;
    ++*(long *)arg;
    return UCS_OK;
}

static void check(ucs_status_t status, const char *what)
{
    raw_check("ucx-op-cost", status, what);
}

int main(int argc, char **argv)
{
    long pairs = argc > 1 ? atol(argv[1]) : 5000000;
    int am = argc > 2 && strcmp(argv[2], "am") == 0;
    if (pairs <= 0 || (argc > 2 && !am && strcmp(argv[2], "tag") != 0)) {
        fprintf(stderr, "usage: ucx-op-cost [PAIRS [tag|am]]\n");
        return 2;
    }
    setenv("UCX_TLS", "self", 0);
    ucp_context_h context;
    ucp_worker_h worker =
        raw_worker("ucx-op-cost", am ? UCP_FEATURE_AM : UCP_FEATURE_TAG, &context);
    ucp_address_t *address;
    size_t address_len;
    check(ucp_worker_get_address(worker, &address, &address_len), "ucp_worker_get_address");
    ucp_ep_params_t eparams = {.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS, .address = address};
    ucp_ep_h ep;
    check(ucp_ep_create(worker, &eparams, &ep), "ucp_ep_create");
    char send_buf[8] = {0}, recv_buf[8];
    long arrived = 0;
    if (am) {
        ucp_am_handler_param_t hparam = {
            .field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_FLAGS |
                          UCP_AM_HANDLER_PARAM_FIELD_CB | UCP_AM_HANDLER_PARAM_FIELD_ARG,
            .id = 1, .flags = UCP_AM_FLAG_WHOLE_MSG, .cb = counted, .arg = &arrived};
        check(ucp_worker_set_am_recv_handler(worker, &hparam), "ucp_worker_set_am_recv_handler");
    }
    struct timespec start = {0}, end;
    for (long i = 0; i < pairs + pairs / 10; i++) {
        if (i == pairs / 10) clock_gettime(CLOCK_MONOTONIC, &start);
        if (am) {
            ucp_request_param_t sparam = {.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK |
                                                          UCP_OP_ATTR_FIELD_DATATYPE,
                                          .datatype = ucp_dt_make_contig(1)};
            sparam.cb.send = raw_sent;
            void *send = ucp_am_send_nbx(ep, 1, NULL, 0, send_buf, sizeof send_buf, &sparam);
            if (UCS_PTR_IS_ERR(send)) check(UCS_PTR_STATUS(send), "ucp_am_send_nbx");
            raw_complete(worker, send);
            while (arrived <= i) ucp_worker_progress(worker);
            continue;
        }
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
        sparam.cb.send = raw_sent;
        void *send = ucp_tag_send_nbx(ep, send_buf, sizeof send_buf, 1, &sparam);
        if (UCS_PTR_IS_ERR(send) || UCS_PTR_IS_ERR(recv)) check(UCS_ERR_IO_ERROR, "operation");
        raw_complete(worker, send);
        if (UCS_PTR_IS_PTR(recv)) {
            while (!done) ucp_worker_progress(worker);
            ucp_request_free(recv);
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &end);
    double ns = ((end.tv_sec - start.tv_sec) * 1e9 + (end.tv_nsec - start.tv_nsec)) / pairs;
    printf("RESULT impl=ucx op=%s pairs=%ld ns_per_pair=%.1f\n", am ? "am" : "tag", pairs, ns);
    raw_close(worker, ep);
    ucp_worker_release_address(worker, address);
    ucp_worker_destroy(worker);
    ucp_cleanup(context);
    return 0;
}
