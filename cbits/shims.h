/*
 * C shims for the parts of the UCX API that are macros or static inline functions and so have no
 * symbol to link against. Each is a one-line forward to the real UCX definition; none of them is
 * re-implemented in Rust.
 */
#ifndef SWUCX_SHIMS_H
#define SWUCX_SHIMS_H

#include <stddef.h>
#include <stdio.h>
#include <ucp/api/ucp.h>
#include <ucs/config/global_opts.h>

/* ucp_init() is static inline in ucp.h: it passes this header's UCP_API_MAJOR/MINOR. */
ucs_status_t swucx_shim_ucp_init(const ucp_params_t *params, const ucp_config_t *config,
                                 ucp_context_h *context_p);

/* UCS_PTR_IS_ERR / UCS_PTR_IS_PTR / UCS_PTR_STATUS. */
int swucx_shim_ptr_is_err(const void *ptr);
int swucx_shim_ptr_is_ptr(const void *ptr);
ucs_status_t swucx_shim_ptr_status(const void *ptr);

/*
 * UCS's limit on async event handlers, ucs_global_opts.async_max_events (UCX_ASYNC_MAX_EVENTS,
 * read once when libucs loads; each connection's sockets take handlers): read and raise it.
 * Raised only before the process's first worker exists (missed-event queues are sized by it).
 * UCX 1.14 and later have no such limit: 0, and setting it does nothing.
 */
unsigned swucx_shim_async_max_events(void);
void swucx_shim_set_async_max_events(unsigned max_events);

/* ucp_dt_make_contig(1): the byte datatype. */
ucp_datatype_t swucx_shim_dt_contig_bytes(void);

/*
 * Writes ucp_ep_print_info() into buf (NUL-terminated, truncated to len - 1 bytes) through an
 * in-memory FILE. Returns the number of bytes the full report has, or -1 if no stream could be
 * opened.
 */
long swucx_shim_ep_print_info(ucp_ep_h ep, char *buf, size_t len);

/* Sizes of the structures Rust builds and passes to UCX, checked against bindgen's at build time. */
size_t swucx_shim_sizeof_ucp_params(void);
size_t swucx_shim_sizeof_ucp_worker_params(void);
size_t swucx_shim_sizeof_ucp_ep_params(void);
size_t swucx_shim_sizeof_ucp_listener_params(void);
size_t swucx_shim_sizeof_ucp_request_param(void);
size_t swucx_shim_sizeof_ucp_mem_map_params(void);
size_t swucx_shim_sizeof_ucp_am_handler_param(void);
size_t swucx_shim_sizeof_ucp_am_recv_param(void);

#endif
