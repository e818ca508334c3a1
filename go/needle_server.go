package swucx

/*
#include "swucx_go.h"

extern void swucxGoNeedleRead(void *, swucx_read_request_t *, swucx_read_reply_t *);

static inline swx_res swx_needle_server_create(const swucx_context_t *ctx, const char *addr,
                                               uintptr_t handle, const char *key, uint32_t threads)
{
    swucx_needle_server_t *s = NULL;
    swucx_status_t st = swucx_needle_server_create(ctx, addr, (swucx_needle_read_cb)swucxGoNeedleRead,
                                                   (void *)handle, key, threads, &s);
    return swx_handle(st, s);
}

// Sets an OK reply and gives it a payload buffer of n bytes (r.out), in one call.
static inline swx_res swx_read_reply_ok(swucx_read_reply_t *reply, uint64_t data_size, uint32_t crc,
                                        uint64_t last_modified, size_t n)
{
    uint8_t *p = NULL;
    swucx_status_t st = swucx_read_reply_set(reply, SWUCX_READ_OK, data_size, crc, last_modified);
    if (st == SWUCX_OK) st = swucx_read_reply_payload(reply, n, &p);
    return swx_handle(st, p);
}

static inline swx_res swx_needle_server_stats(const swucx_needle_server_t *s,
                                              swucx_needle_server_stats_t *out)
{
    return swx_status(swucx_needle_server_stats(s, out, sizeof *out));
}
*/
import "C"

import (
	"fmt"
	"log"
	"runtime/cgo"
	"sync"
	"unsafe"
)

// NeedleRequest is a READ request (docs/protocol.md) as a NeedleHandler sees it.
type NeedleRequest struct {
	// VolumeID, NeedleID and Cookie are the file id's; the handler must check the cookie.
	VolumeID uint32
	NeedleID uint64
	Cookie   uint32
	// Offset is the first byte of the data to return; Size how many (0: to the end).
	Offset, Size uint64
	// Flags are the request flags (bit 0 name, 1 mime, 2 stored bytes).
	Flags uint16
	// JWT is the read JWT; already checked when the server has a read key.
	JWT string
}

// NeedleReply is how a NeedleHandler answers, during the handler call: once the handler
// returned, its methods do nothing (OK returns nil, OKBytes an error), so a reply kept past
// the call (answered from another goroutine) cannot touch what swucx already sent or freed.
// A handler that answers neither way answers INTERNAL.
type NeedleReply struct {
	mu sync.Mutex
	r  *C.swucx_read_reply_t // nil once the handler returned
}

// Fail answers with a non-OK status of docs/protocol.md (1 not found ... 10 internal, 13 a
// volume the host does not hold; see seaweed.Status); dataSize is the data length for
// BAD_RANGE and TOO_LARGE, else 0.
func (w *NeedleReply) Fail(status uint8, dataSize uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.r != nil {
		C.swucx_read_reply_set(w.r, C.uint8_t(status), C.uint64_t(dataSize), 0, 0)
	}
}

// OK answers with n bytes of data and returns the buffer to write them into, for hosts that
// read from disk straight into it: swucx's memory, sent from directly. Write it before the
// handler returns and never after: it is freed once the reply is sent (like memory from
// unsafe.Slice, a write after that corrupts memory). Hosts that hold the bytes in a []byte
// already use OKBytes, which copies them (one copy either way). dataSize is the length of the
// whole data, crc the needle's stored CRC-32C (passed on to the client, not checked: the host
// read the needle, and weed checks a needle's CRC as it reads it), lastModified unix seconds
// (0: none). n must be the requested size (for Size 0: dataSize-Offset, the data from Offset to
// the end), within the data: any other n, or a call after the handler returned, gives nil (and
// the request is answered INTERNAL).
func (w *NeedleReply) OK(dataSize uint64, crc uint32, lastModified uint64, n int) []byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.r == nil || n < 0 {
		return nil
	}
	buf, err := w.ok(dataSize, crc, lastModified, n)
	if err != nil {
		return nil
	}
	return buf
}

// OKBytes answers with data (as OK, copying data into the reply): the safe way for hosts that
// hold the bytes in Go memory. It returns an error (ErrInvalidParam) when len(data) is not
// what OK's n must be or the handler already returned; the request is then answered INTERNAL.
func (w *NeedleReply) OKBytes(dataSize uint64, crc uint32, lastModified uint64, data []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.r == nil {
		return &Error{Status: StatusInvalidParam, Op: "needle_reply", Msg: "the handler already returned"}
	}
	buf, err := w.ok(dataSize, crc, lastModified, len(data))
	if err == nil {
		copy(buf, data)
	}
	return err
}

// ok sets an OK reply with a payload buffer of n >= 0 bytes and returns it (swucx's memory).
// Under w.mu, with w.r set.
func (w *NeedleReply) ok(dataSize uint64, crc uint32, lastModified uint64, n int) ([]byte, error) {
	r := C.swx_read_reply_ok(w.r, C.uint64_t(dataSize), C.uint32_t(crc), C.uint64_t(lastModified), C.size_t(n))
	if r.st != C.SWUCX_OK {
		return nil, resErr("needle_reply", r)
	}
	if n == 0 {
		return []byte{}, nil
	}
	return unsafe.Slice((*byte)(r.out), n), nil
}

// end makes the reply inert: the handler returned.
func (w *NeedleReply) end() {
	w.mu.Lock()
	w.r = nil
	w.mu.Unlock()
}

// NeedleHandler answers one READ request. It runs on one of the server's threads, one request
// at a time per thread (several at once with NeedleServerConfig.Threads > 1), and may block on
// disk.
type NeedleHandler func(req *NeedleRequest, reply *NeedleReply)

// NeedleServer serves SeaweedFS needle reads over UCX (docs/protocol.md) with the bytes from
// a NeedleHandler: the embedding API for a volume server written in Go. Clients are the Go
// package seaweed, `swucx read` and the Rust NeedleClient.
type NeedleServer struct {
	h       handle // *C.swucx_needle_server_t
	handler NeedleHandler
	cgo     cgo.Handle
	port    int
}

// ServeNeedles starts a needle server listening on addr ("ip:port"; port 0 picks one) that
// answers through handler on a thread of its own. With readKey set, every request must carry a
// read JWT signed with it (weed's `[jwt.signing.read] key`); refused requests never reach the
// handler. The context needs FeatureAM and must not have FeatureStream (ErrInvalidParam: any
// client could abort the process, see FeatureDefault); the default features are right.
func (c *Context) ServeNeedles(addr string, readKey string, handler NeedleHandler) (*NeedleServer, error) {
	return c.ServeNeedlesWith(NeedleServerConfig{Addr: addr, ReadKey: readKey}, handler)
}

// NeedleServerConfig configures ServeNeedlesWith.
type NeedleServerConfig struct {
	// Addr is where to listen, "ip:port" (port 0 picks one: NeedleServer.Port).
	Addr string
	// ReadKey, when set, requires a read JWT signed with it on every request (weed's
	// `[jwt.signing.read] key`).
	ReadKey string
	// Threads is the number of serving threads (0: 1; at most 256), each with a UCX worker of
	// its own; new connections are dealt to them in turn (as `swucx serve --threads`). With
	// more than one, the handler is called from several goroutines at once.
	Threads int
}

// ServeNeedlesWith is ServeNeedles configured by cfg.
func (c *Context) ServeNeedlesWith(cfg NeedleServerConfig, handler NeedleHandler) (*NeedleServer, error) {
	addr, readKey := cfg.Addr, cfg.ReadKey
	if handler == nil {
		return nil, &Error{Status: StatusInvalidParam, Op: "needle_server_create", Msg: "nil handler"}
	}
	if cfg.Threads < 0 || cfg.Threads > 1<<16 { // the library refuses more than 256 itself
		return nil, &Error{Status: StatusInvalidParam, Op: "needle_server_create", Msg: fmt.Sprintf("%d threads", cfg.Threads)}
	}
	cp := c.h.acquire()
	if cp == nil {
		return nil, closedErr("needle_server_create")
	}
	defer c.h.release()
	s := &NeedleServer{handler: handler}
	s.cgo = cgo.NewHandle(s)
	caddr, ckey := C.CString(addr), C.CString(readKey)
	defer C.free(unsafe.Pointer(caddr))
	defer C.free(unsafe.Pointer(ckey))
	r := C.swx_needle_server_create((*C.swucx_context_t)(cp), caddr, C.uintptr_t(s.cgo), ckey, C.uint32_t(cfg.Threads))
	if r.st != C.SWUCX_OK {
		s.cgo.Delete()
		return nil, resErr("needle_server_create", r)
	}
	s.h.p = r.out
	var port C.uint16_t
	C.swucx_needle_server_port((*C.swucx_needle_server_t)(r.out), &port)
	s.port = int(port)
	return s, nil
}

// Port is the port the server listens on.
func (s *NeedleServer) Port() int { return s.port }

// NeedleStatusSlots is the length of NeedleServerStats.Replies: room for every status code.
const NeedleStatusSlots = C.SWUCX_READ_STATUS_SLOTS

// NeedleServerStats are a NeedleServer's counters since it started (NeedleServer.Stats),
// e.g. for the host's metrics.
type NeedleServerStats struct {
	// Replies counts the requests answered by status code (docs/protocol.md; seaweed.Status):
	// Replies[0] (OK) are the reads served. Codes no status has stay 0.
	Replies [NeedleStatusSlots]uint64
	// PayloadBytes is the payload bytes of the OK replies; DirectReplies the OK replies
	// announced for a direct read (the client copies the payload out of this process itself).
	PayloadBytes, DirectReplies uint64
	// RequestsDropped counts requests dropped without a reply (no readable request id, or a
	// connection past its limit of unfinished replies).
	RequestsDropped uint64
	// OpenConnections is the client connections open now; ConnectionsAccepted those accepted,
	// ConnectionsRejected those rejected at a connection limit (4096 open, 512 from one
	// client host), ConnectionsClosed those the server closed (replies not taken in time, idle
	// for 300 s, or at a stop).
	OpenConnections, ConnectionsAccepted, ConnectionsRejected, ConnectionsClosed uint64
}

// Stats returns the server's counters. Any goroutine may call it; after Close it fails with
// ErrClosed.
func (s *NeedleServer) Stats() (NeedleServerStats, error) {
	p := s.h.acquire()
	if p == nil {
		return NeedleServerStats{}, closedErr("needle_server_stats")
	}
	defer s.h.release()
	var cs C.swucx_needle_server_stats_t
	if r := C.swx_needle_server_stats((*C.swucx_needle_server_t)(p), &cs); r.st != C.SWUCX_OK {
		return NeedleServerStats{}, resErr("needle_server_stats", r)
	}
	st := NeedleServerStats{
		PayloadBytes: uint64(cs.payload_bytes), DirectReplies: uint64(cs.direct_replies),
		RequestsDropped: uint64(cs.requests_dropped), OpenConnections: uint64(cs.open_connections),
		ConnectionsAccepted: uint64(cs.connections_accepted),
		ConnectionsRejected: uint64(cs.connections_rejected),
		ConnectionsClosed:   uint64(cs.connections_closed),
	}
	for i := range st.Replies {
		st.Replies[i] = uint64(cs.replies[i])
	}
	return st, nil
}

// Close stops the server: requests in flight are answered, then its thread ends and the
// handler is not called again. Idempotent. Not from inside the handler, which runs on a thread
// Close waits for: there it returns an error (status StatusBusy) and the server goes on
// serving; close it from another goroutine.
func (s *NeedleServer) Close() error {
	p := s.h.take()
	if p == nil {
		return nil
	}
	if st := C.swucx_needle_server_destroy((*C.swucx_needle_server_t)(p)); st != C.SWUCX_OK {
		s.h.mu.Lock()
		s.h.p = p // still serving: a later Close (from elsewhere) stops it
		s.h.mu.Unlock()
		return &Error{Status: Status(st), Op: "needle_server_destroy", Msg: "Close called from the needle handler; call it from another goroutine"}
	}
	s.cgo.Delete()
	return nil
}

func (s *NeedleServer) serve(req *C.swucx_read_request_t, reply *C.swucx_read_reply_t) {
	r := NeedleRequest{
		VolumeID: uint32(req.volume_id), NeedleID: uint64(req.needle_id), Cookie: uint32(req.cookie),
		Offset: uint64(req.offset), Size: uint64(req.size), Flags: uint16(req.flags),
	}
	if req.jwt_length > 0 {
		r.JWT = C.GoStringN((*C.char)(unsafe.Pointer(req.jwt)), C.int(req.jwt_length))
	}
	w := &NeedleReply{r: reply}
	defer func() {
		// A panicking handler must not unwind into C: answer INTERNAL and say why.
		if p := recover(); p != nil {
			log.Printf("swucx: needle handler panicked: %v", p)
			w.Fail(10, 0)
		}
		w.end()
	}()
	s.handler(&r, w)
}
