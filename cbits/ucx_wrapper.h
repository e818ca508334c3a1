/* The one header bindgen reads: the system UCX's UCP API plus swucx's C shims. */
#ifndef SWUCX_UCX_WRAPPER_H
#define SWUCX_UCX_WRAPPER_H

#include <ucp/api/ucp.h>
#include "shims.h"

#endif
