/* Helpers shared by the C tests: CHECK macros, contexts per transport set, bounded waits. */
#ifndef SWUCX_TEST_COMMON_H
#define SWUCX_TEST_COMMON_H

#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "swucx.h"

static int g_failures = 0;

#define CHECK(cond)                                                                    \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            char msg_[512];                                                            \
            swucx_last_error_message(msg_, sizeof msg_);                               \
            fprintf(stderr, "%s:%d: CHECK failed: %s (last error: %s)\n", __FILE__,    \
                    __LINE__, #cond, msg_);                                            \
            g_failures++;                                                              \
        }                                                                              \
    } while (0)

/* A call that must return `want`. */
#define CHECK_ST(call, want)                                                           \
    do {                                                                               \
        swucx_status_t st_ = (call);                                                   \
        if (st_ != (want)) {                                                           \
            char msg_[512];                                                            \
            swucx_last_error_message(msg_, sizeof msg_);                               \
            fprintf(stderr, "%s:%d: %s returned %d (%s), want %d (last error: %s)\n",  \
                    __FILE__, __LINE__, #call, (int)st_, swucx_status_string(st_),     \
                    (int)(want), msg_);                                                \
            g_failures++;                                                              \
        }                                                                              \
    } while (0)

#define CHECK_OK(call) CHECK_ST(call, SWUCX_OK)

/* A call that must succeed for the test to go on. */
/* A condition the rest of the test cannot go on without. */
#define REQUIRE(cond)                                                                  \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            fprintf(stderr, "%s:%d: REQUIRE failed: %s\n", __FILE__, __LINE__, #cond);  \
            exit(2);                                                                   \
        }                                                                              \
    } while (0)

#define REQUIRE_OK(call)                                                               \
    do {                                                                               \
        swucx_status_t st_ = (call);                                                   \
        if (st_ != SWUCX_OK && st_ != SWUCX_INPROGRESS) {                              \
            char msg_[512];                                                            \
            swucx_last_error_message(msg_, sizeof msg_);                               \
            fprintf(stderr, "%s:%d: %s failed: %d (%s): %s\n", __FILE__, __LINE__,     \
                    #call, (int)st_, swucx_status_string(st_), msg_);                  \
            exit(2);                                                                   \
        }                                                                              \
    } while (0)

static inline double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A context for a transport set: "self", "shm" or "tcp". */
/* A context on the transports `tls` ("self", "shm" or "tcp") with `features`
 * (SWUCX_FEATURE_*; "self" never gets wakeup, which it lacks). */
static inline swucx_context_t *test_context_with(const char *tls, uint64_t features)
{
    swucx_config_entry_t config[2];
    swucx_context_params_t params;
    swucx_context_t *context = NULL;
    memset(&params, 0, sizeof params);
    params.field_mask = SWUCX_CONTEXT_PARAM_FIELD_CONFIG | SWUCX_CONTEXT_PARAM_FIELD_NAME |
                        SWUCX_CONTEXT_PARAM_FIELD_FEATURES;
    params.name = "swucx-c-test";
    params.config = config;
    params.features = features;
    if (strcmp(tls, "self") == 0) {
        config[0].key = "TLS";
        config[0].value = "self";
        params.config_count = 1;
        params.field_mask |= SWUCX_CONTEXT_PARAM_FIELD_FLAGS;
        params.flags = SWUCX_CONTEXT_FLAG_NO_PEER_FAILURE;
        params.features = features & ~(uint64_t)SWUCX_FEATURE_WAKEUP;
    } else if (strcmp(tls, "shm") == 0) {
        config[0].key = "TLS";
        config[0].value = "posix,sysv,cma,self,tcp";
        params.config_count = 1;
    } else {
        config[0].key = "TLS";
        config[0].value = "tcp,self";
        config[1].key = "NET_DEVICES";
        config[1].value = "lo";
        params.config_count = 2;
    }
    REQUIRE_OK(swucx_context_create(&params, &context));
    return context;
}

/* A context with every feature, streams included (the tests' peers are their own). */
static inline swucx_context_t *test_context(const char *tls)
{
    return test_context_with(tls, SWUCX_FEATURE_ALL);
}

/* Progresses both workers (b may be NULL) until the request completes; returns its status. */
static inline swucx_status_t wait2(swucx_request_t *req, swucx_worker_t *a, swucx_worker_t *b)
{
    double deadline = now_s() + 30.0;
    swucx_status_t st;
    while ((st = swucx_request_test(req)) == SWUCX_INPROGRESS) {
        swucx_worker_progress(a);
        if (b != NULL) {
            swucx_worker_progress(b);
        }
        if (now_s() > deadline) {
            fprintf(stderr, "wait2: timed out\n");
            exit(3);
        }
    }
    return st;
}

static inline int finish(const char *name)
{
    if (g_failures != 0) {
        fprintf(stderr, "%s: %d check(s) failed\n", name, g_failures);
        return 1;
    }
    printf("%s: ok\n", name);
    return 0;
}

#endif
