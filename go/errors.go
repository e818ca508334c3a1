package swucx

/*
#include "swucx_go.h"
*/
import "C"

import (
	"context"
	"unsafe"
)

// Status is a swucx status code (swucx_status_t): 0 is OK, negative values are errors. UCX's
// codes keep their values; swucx's own start at -1000.
type Status int32

// The status codes of include/swucx.h.
const (
	StatusOK                 Status = C.SWUCX_OK
	StatusInProgress         Status = C.SWUCX_INPROGRESS
	StatusNoMessage          Status = C.SWUCX_ERR_NO_MESSAGE
	StatusNoResource         Status = C.SWUCX_ERR_NO_RESOURCE
	StatusIOError            Status = C.SWUCX_ERR_IO_ERROR
	StatusNoMemory           Status = C.SWUCX_ERR_NO_MEMORY
	StatusInvalidParam       Status = C.SWUCX_ERR_INVALID_PARAM
	StatusUnreachable        Status = C.SWUCX_ERR_UNREACHABLE
	StatusInvalidAddr        Status = C.SWUCX_ERR_INVALID_ADDR
	StatusNotImplemented     Status = C.SWUCX_ERR_NOT_IMPLEMENTED
	StatusMessageTruncated   Status = C.SWUCX_ERR_MESSAGE_TRUNCATED
	StatusNoProgress         Status = C.SWUCX_ERR_NO_PROGRESS
	StatusBufferTooSmall     Status = C.SWUCX_ERR_BUFFER_TOO_SMALL
	StatusNoElem             Status = C.SWUCX_ERR_NO_ELEM
	StatusSomeConnectsFailed Status = C.SWUCX_ERR_SOME_CONNECTS_FAILED
	StatusNoDevice           Status = C.SWUCX_ERR_NO_DEVICE
	StatusBusy               Status = C.SWUCX_ERR_BUSY
	StatusCanceled           Status = C.SWUCX_ERR_CANCELED
	StatusShmemSegment       Status = C.SWUCX_ERR_SHMEM_SEGMENT
	StatusAlreadyExists      Status = C.SWUCX_ERR_ALREADY_EXISTS
	StatusOutOfRange         Status = C.SWUCX_ERR_OUT_OF_RANGE
	StatusTimedOut           Status = C.SWUCX_ERR_TIMED_OUT
	StatusExceedsLimit       Status = C.SWUCX_ERR_EXCEEDS_LIMIT
	StatusUnsupported        Status = C.SWUCX_ERR_UNSUPPORTED
	StatusRejected           Status = C.SWUCX_ERR_REJECTED
	StatusNotConnected       Status = C.SWUCX_ERR_NOT_CONNECTED
	StatusConnectionReset    Status = C.SWUCX_ERR_CONNECTION_RESET
	StatusEndpointTimeout    Status = C.SWUCX_ERR_ENDPOINT_TIMEOUT
	StatusNullArg            Status = C.SWUCX_ERR_NULL_ARG
	StatusPanic              Status = C.SWUCX_ERR_PANIC
	StatusInvalidState       Status = C.SWUCX_ERR_INVALID_STATE
	StatusUTF8               Status = C.SWUCX_ERR_UTF8
	StatusBadHandle          Status = C.SWUCX_ERR_BAD_HANDLE
)

// String is swucx_status_string: a static text (UCX's own for UCX codes).
func (s Status) String() string {
	return C.GoString(C.swucx_status_string(C.swucx_status_t(s)))
}

// IsPeerFailure reports whether the status means the peer or the connection to it failed
// (connection reset, endpoint timeout, unreachable, not connected, I/O error, ...).
func (s Status) IsPeerFailure() bool {
	return bool(C.swucx_status_is_peer_failure(C.swucx_status_t(s)))
}

// Error is a failed swucx call: its status, the operation, and the detail message swucx
// recorded for it (taken in the same cgo call, on the thread that failed).
type Error struct {
	Status   Status
	Op       string // the operation, e.g. "tag_send" or "connect"
	Msg      string // swucx_last_error_message of the failed call ("" if none)
	cause    error  // the context error, for operations ended by their context.Context
	closed   bool   // the Go object was closed (matches ErrClosed)
	retained bool   // UCX may still use the operation's buffer (matches ErrBufferRetained)
}

func (e *Error) Error() string {
	s := "swucx"
	if e.Op != "" {
		s += ": " + e.Op
	}
	s += ": " + e.Status.String()
	if e.Msg != "" && e.Msg != e.Status.String() {
		s += " (" + e.Msg + ")"
	}
	return s
}

// Unwrap returns context.Canceled or context.DeadlineExceeded for an operation its context
// ended, nil otherwise.
func (e *Error) Unwrap() error { return e.cause }

// Is makes errors.Is(err, ErrTimedOut) and the like match on the status. ErrPeerFailure
// matches every status for which Status.IsPeerFailure is true.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	if !ok {
		return false
	}
	if t == ErrClosed {
		return e.closed
	}
	if t == ErrBufferRetained {
		return e.retained
	}
	if t.Op != "" || t.Msg != "" {
		return false
	}
	if t == ErrPeerFailure {
		return e.Status.IsPeerFailure()
	}
	return t.Status == e.Status
}

// Sentinels for errors.Is. Each matches every *Error with its status.
var (
	ErrConnectionReset  = &Error{Status: StatusConnectionReset}
	ErrEndpointTimeout  = &Error{Status: StatusEndpointTimeout}
	ErrTimedOut         = &Error{Status: StatusTimedOut}
	ErrCanceled         = &Error{Status: StatusCanceled}
	ErrUnreachable      = &Error{Status: StatusUnreachable}
	ErrRejected         = &Error{Status: StatusRejected}
	ErrNotConnected     = &Error{Status: StatusNotConnected}
	ErrIO               = &Error{Status: StatusIOError}
	ErrMessageTruncated = &Error{Status: StatusMessageTruncated}
	ErrInvalidAddr      = &Error{Status: StatusInvalidAddr}
	ErrInvalidParam     = &Error{Status: StatusInvalidParam}
	ErrOutOfRange       = &Error{Status: StatusOutOfRange}
	ErrNoMemory         = &Error{Status: StatusNoMemory}
	ErrBadHandle        = &Error{Status: StatusBadHandle}
	ErrInvalidState     = &Error{Status: StatusInvalidState}
	// ErrClosed: the Go object (context, engine, listener, endpoint, region, queue, request)
	// was closed, before or while the operation ran. It matches the *Error the operation
	// returns (with its Op), and that error matches ErrBadHandle too.
	ErrClosed = &Error{Status: StatusBadHandle, Msg: closedMsg, closed: true}
	// ErrBufferRetained: the operation's peer failed while UCX still held the operation
	// (UCX 1.13 keeps some, e.g. rendezvous sends over shared memory). UCX may still touch its
	// buffer, so swucx keeps it pinned for the life of the process: never reuse it. The error
	// also matches the peer failure (ErrPeerFailure, ...).
	ErrBufferRetained = &Error{Status: StatusIOError, Msg: "buffer retained: UCX may still use it", retained: true}
	// ErrPeerFailure matches any error whose status means the peer or the connection failed.
	ErrPeerFailure = &Error{Status: StatusIOError}
)

// resErr turns a failed helper result into an *Error, freeing the C message.
func resErr(op string, r C.swx_res) error {
	e := &Error{Status: Status(r.st), Op: op}
	if r.msg != nil {
		e.Msg = C.GoString(r.msg)
		C.free(unsafe.Pointer(r.msg))
	}
	return e
}

// ctxErr is the error of an operation whose context ended: ErrCanceled or ErrTimedOut, and
// the context's own error.
func ctxErr(op string, ctx context.Context) error {
	err := ctx.Err()
	st := StatusCanceled
	if err == context.DeadlineExceeded {
		st = StatusTimedOut
	}
	return &Error{Status: st, Op: op, Msg: err.Error(), cause: err}
}

const closedMsg = "use of a closed swucx object"

// closedErr is the error of operation op on a closed object: an *Error matching ErrClosed.
func closedErr(op string) error { return closedError(op) }

func closedError(op string) *Error {
	return &Error{Status: StatusBadHandle, Op: op, Msg: closedMsg, closed: true}
}
