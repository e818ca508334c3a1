#include "shims.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Layout facts the Rust side relies on. */
_Static_assert(sizeof(ucs_status_t) == 1, "ucs_status_t is one signed byte");
_Static_assert((ucs_status_t)-1 < 0, "ucs_status_t is signed");
_Static_assert(sizeof(ucp_tag_t) == 8, "ucp_tag_t is 64 bits");
_Static_assert(sizeof(ucp_datatype_t) == 8, "ucp_datatype_t is 64 bits");

ucs_status_t swucx_shim_ucp_init(const ucp_params_t *params, const ucp_config_t *config,
                                 ucp_context_h *context_p)
{
    return ucp_init(params, config, context_p);
}

int swucx_shim_ptr_is_err(const void *ptr)
{
    return UCS_PTR_IS_ERR(ptr);
}

int swucx_shim_ptr_is_ptr(const void *ptr)
{
    return UCS_PTR_IS_PTR(ptr);
}

ucs_status_t swucx_shim_ptr_status(const void *ptr)
{
    return UCS_PTR_STATUS(ptr);
}

/* UCX 1.14 removed the limit (openucx/ucx#8112) and the field with it. */
#if (UCP_API_MAJOR == 1) && (UCP_API_MINOR < 14)
unsigned swucx_shim_async_max_events(void)
{
    return ucs_global_opts.async_max_events;
}

void swucx_shim_set_async_max_events(unsigned max_events)
{
    ucs_global_opts.async_max_events = max_events;
}
#else
unsigned swucx_shim_async_max_events(void)
{
    return 0;
}

void swucx_shim_set_async_max_events(unsigned max_events)
{
    (void)max_events;
}
#endif

ucp_datatype_t swucx_shim_dt_contig_bytes(void)
{
    return ucp_dt_make_contig(1);
}

long swucx_shim_ep_print_info(ucp_ep_h ep, char *buf, size_t len)
{
    char *text = NULL;
    size_t text_len = 0;
    FILE *stream = open_memstream(&text, &text_len);
    if (stream == NULL) {
        return -1;
    }
    ucp_ep_print_info(ep, stream);
    fclose(stream);
    if (len > 0) {
        size_t n = text_len < len - 1 ? text_len : len - 1;
        memcpy(buf, text, n);
        buf[n] = '\0';
    }
    free(text);
    return (long)text_len;
}

size_t swucx_shim_sizeof_ucp_params(void) { return sizeof(ucp_params_t); }
size_t swucx_shim_sizeof_ucp_worker_params(void) { return sizeof(ucp_worker_params_t); }
size_t swucx_shim_sizeof_ucp_ep_params(void) { return sizeof(ucp_ep_params_t); }
size_t swucx_shim_sizeof_ucp_listener_params(void) { return sizeof(ucp_listener_params_t); }
size_t swucx_shim_sizeof_ucp_request_param(void) { return sizeof(ucp_request_param_t); }
size_t swucx_shim_sizeof_ucp_mem_map_params(void) { return sizeof(ucp_mem_map_params_t); }
size_t swucx_shim_sizeof_ucp_am_handler_param(void) { return sizeof(ucp_am_handler_param_t); }
size_t swucx_shim_sizeof_ucp_am_recv_param(void) { return sizeof(ucp_am_recv_param_t); }
