/* The loop of examples/op_cost.rs through swucx's C API: a tag receive posted, a matching 8 B
 * send, both completed, in one process over UCX_TLS=self, SERIALIZED worker, no peer-failure
 * handling, buffers in one registered region (the `_mem` functions). With
 * target/release/examples/op_cost (Rust) and target/examples/ucx-op-cost (raw UCX) it shows
 * what each layer adds per operation. `tag-now`: the send made within the call
 * (swucx_ep_tag_send_now, no request). Prints `RESULT impl=c op=tag|tag-now pairs=N
 * ns_per_pair=X`.
 *
 *   op-cost-c [PAIRS [tag|tag-now]]     (default 5000000, plus 10% warm-up) */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "swucx.h"

static void check(swucx_status_t st, const char *what)
{
    if (st != SWUCX_OK && st != SWUCX_INPROGRESS) {
        char detail[256];
        swucx_last_error_message(detail, sizeof detail);
        fprintf(stderr, "op-cost-c: %s: %s (%s)\n", what, swucx_status_string(st), detail);
        exit(1);
    }
}

int main(int argc, char **argv)
{
    long pairs = argc > 1 ? atol(argv[1]) : 5000000;
    const char *op = argc > 2 ? argv[2] : "tag";
    int now = strcmp(op, "tag-now") == 0;
    if (pairs <= 0 || (!now && strcmp(op, "tag") != 0)) {
        fprintf(stderr, "usage: op-cost-c [PAIRS [tag|tag-now]]\n");
        return 2;
    }
    const swucx_config_entry_t config[] = {{"TLS", "self"}};
    const swucx_context_params_t params = {
        .field_mask = SWUCX_CONTEXT_PARAM_FIELD_FEATURES | SWUCX_CONTEXT_PARAM_FIELD_CONFIG |
                      SWUCX_CONTEXT_PARAM_FIELD_FLAGS,
        .features = SWUCX_FEATURE_TAG,
        .config = config,
        .config_count = 1,
        .flags = SWUCX_CONTEXT_FLAG_NO_PEER_FAILURE,
    };
    swucx_context_t *context;
    check(swucx_context_create(&params, &context), "swucx_context_create");
    swucx_worker_t *worker;
    check(swucx_worker_create_serialized(context, &worker), "swucx_worker_create_serialized");
    swucx_bytes_t *address;
    check(swucx_worker_address(worker, &address), "swucx_worker_address");
    swucx_ep_t *ep;
    check(swucx_worker_connect_address(worker, swucx_bytes_data(address),
                                       swucx_bytes_length(address), &ep),
          "swucx_worker_connect_address");
    swucx_mem_t *mem;
    check(swucx_mem_allocate(context, 128, &mem), "swucx_mem_allocate");
    struct timespec start = {0}, end;
    for (long i = 0; i < pairs + pairs / 10; i++) {
        if (i == pairs / 10) clock_gettime(CLOCK_MONOTONIC, &start);
        swucx_request_t *recv, *send;
        check(swucx_worker_tag_recv_mem(worker, mem, 64, 8, 1, ~(uint64_t)0, &recv), "recv");
        swucx_status_t st;
        if (now) {
            check(swucx_ep_tag_send_now(ep, swucx_mem_address(mem), 8, 1), "send_now");
        } else {
            check(swucx_ep_tag_send_mem(ep, mem, 0, 8, 1, &send), "send");
            while ((st = swucx_request_poll(send)) == SWUCX_INPROGRESS) {}
            check(st, "send completion");
            swucx_request_free(send);
        }
        while ((st = swucx_request_poll(recv)) == SWUCX_INPROGRESS) {}
        check(st, "receive completion");
        swucx_request_free(recv);
    }
    clock_gettime(CLOCK_MONOTONIC, &end);
    double ns = ((end.tv_sec - start.tv_sec) * 1e9 + (end.tv_nsec - start.tv_nsec)) / pairs;
    printf("RESULT impl=c op=%s pairs=%ld ns_per_pair=%.1f\n", op, pairs, ns);
    swucx_mem_unmap(mem);
    check(swucx_ep_close(ep, SWUCX_EP_CLOSE_FORCE), "swucx_ep_close");
    swucx_ep_destroy(ep);
    swucx_bytes_destroy(address);
    swucx_worker_destroy(worker);
    swucx_context_destroy(context);
    return 0;
}
