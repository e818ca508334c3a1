/* What the raw-UCX reference programs (ucx_op_cost.c, ucx_am_lat.c) share: a status check that
 * exits, a send callback that does nothing, and a context with one SERIALIZED worker. */
#ifndef SWUCX_EXAMPLES_UCX_RAW_H
#define SWUCX_EXAMPLES_UCX_RAW_H

#include <stdio.h>
#include <stdlib.h>
#include <ucp/api/ucp.h>

/* Exits with "PROGRAM: WHAT: STATUS" unless status is UCS_OK. */
static inline void raw_check(const char *program, ucs_status_t status, const char *what)
{
    if (status != UCS_OK) {
        fprintf(stderr, "%s: %s: %s\n", program, what, ucs_status_string(status));
        exit(1);
    }
}

static inline void raw_sent(void *request, ucs_status_t status, void *user_data)
{
    (void)request; (void)status; (void)user_data;
}

/* A context with `features` (the environment's UCX configuration) and one SERIALIZED worker. */
static inline ucp_worker_h raw_worker(const char *program, uint64_t features,
                                      ucp_context_h *context)
{
    ucp_params_t params = {.field_mask = UCP_PARAM_FIELD_FEATURES, .features = features};
    raw_check(program, ucp_init(&params, NULL, context), "ucp_init");
    ucp_worker_params_t wparams = {.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE,
                                   .thread_mode = UCS_THREAD_MODE_SERIALIZED};
    ucp_worker_h worker;
    raw_check(program, ucp_worker_create(*context, &wparams, &worker), "ucp_worker_create");
    return worker;
}

/* Completes `request` (a status pointer from a *_nbx call), progressing `worker`, and frees it. */
static inline void raw_complete(ucp_worker_h worker, void *request)
{
    if (UCS_PTR_IS_PTR(request)) {
        while (ucp_request_check_status(request) == UCS_INPROGRESS) ucp_worker_progress(worker);
        ucp_request_free(request);
    }
}

/* Closes `ep` (forced) and waits for the close. */
static inline void raw_close(ucp_worker_h worker, ucp_ep_h ep)
{
    ucp_request_param_t param = {.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS,
                                 .flags = UCP_EP_CLOSE_FLAG_FORCE};
    raw_complete(worker, ucp_ep_close_nbx(ep, &param));
}

#endif
