// Package seaweed is the `weed mount` side of swucx: it reads SeaweedFS needles from volume
// hosts running `swucx serve` (or a volume server embedding swucx) over UCX — RDMA, shared
// memory or TCP, as UCX picks — and falls back to weed's own HTTP GET when a host cannot be
// reached over UCX or does not speak the protocol (docs/protocol.md).
//
// A Client keeps one small pool of UCX connections per volume server, bounds the reads in flight
// to each, reconnects after a server restarts, and counts which path every read took and why
// (Client.Stats). Any goroutine may use a Client.
package seaweed

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	swucx "github.com/swucx/swucx/go"
)

// DefaultPortOffset is added to a volume server's HTTP port to find its swucx listener (weed's
// volume gRPC port is HTTP + 10000; swucx takes HTTP + 20000, e.g. 8080 -> 28080).
const DefaultPortOffset = 20000

// DefaultIdleConnTimeout is Options.IdleConnTimeout's default: below `swucx serve`'s
// 300 s, as net/http's 90 s is below most HTTP servers' keep-alive timeouts.
const DefaultIdleConnTimeout = 120 * time.Second

// Options configure a Client. The zero value is ready to use.
type Options struct {
	// UCXAddress maps a volume server's HTTP address ("host:port", as the master lists it) to
	// the "ip:port" its swucx server listens on. Default: the same host, port + PortOffset.
	UCXAddress func(volumeServer string) (string, error)
	// PortOffset for the default UCXAddress rule (0: DefaultPortOffset).
	PortOffset int
	// MaxInFlight bounds the UCX reads in flight to one volume server (0: 64); more wait.
	MaxInFlight int
	// ConnsPerServer is the number of UCX connections to one volume server (0: 1).
	ConnsPerServer int
	// Engines is the number of UCX workers the client spreads its connections over, each
	// with a thread of its own for the progress nobody waiting drives (0: 1). One worker's
	// progress runs on one thread at a time: more let a host with cores to spare receive over
	// several connections at once (tcp: the kernel's copy of every payload), with
	// ConnsPerServer > 1 or many volume servers, and `swucx serve --threads` on the servers.
	Engines int
	// HTTP is the client for the fallback (nil: one like http.DefaultClient whose connections
	// notice a volume server host that vanished within seconds, as UCX's do: see
	// DefaultHTTPClient).
	HTTP *http.Client
	// NoFallback makes reads fail instead of going over HTTP.
	NoFallback bool
	// RetryUCXAfter is how long reads to a volume server go over HTTP after its UCX listener
	// could not be reached (0: 2 s); then UCX is tried again.
	RetryUCXAfter time.Duration
	// IdleConnTimeout: a UCX connection no read has used for this long is closed instead of
	// used by the next read, which connects anew (0: DefaultIdleConnTimeout; negative: never).
	// Keep it well below the servers' own idle timeout (`swucx serve --idle-timeout-secs`,
	// 300 s by default), which closes connections without asking: a read that crossed that
	// close would fail.
	IdleConnTimeout time.Duration
	// ProbeTimeout bounds the wait for the first reply on a new connection (0: 2 s): a server
	// that does not answer in time is taken as not speaking the protocol.
	ProbeTimeout time.Duration
	// Settings are UCX settings (without the UCX_ prefix) for the client's UCX context, e.g.
	// {"TLS": "tcp"}; UCX's environment applies otherwise.
	Settings map[string]string
	// NoDirectReads turns direct reads off: by default, on a connection UCX put on shared
	// memory (the server is on this host), large payloads are copied straight out of the
	// server's memory once a first one proved that this works (docs/protocol.md).
	NoDirectReads bool
}

// Stats counts the reads a Client finished, by path, and why reads fell back to HTTP (with
// NoFallback: why reads failed with ErrUCXUnavailable).
type Stats struct {
	// UCX and HTTP count the reads that succeeded over each path.
	UCX, HTTP uint64
	// Failed counts the reads that returned an error (not found and unauthorized included;
	// not io.EOF, a read at or past the end).
	Failed uint64
	// FallbackUnreachable: the UCX listener refused or dropped a new connection.
	FallbackUnreachable uint64
	// FallbackDown: the server's UCX listener failed within RetryUCXAfter.
	FallbackDown uint64
	// FallbackProtocol: no reply to the first request in ProbeTimeout, an unknown protocol
	// version, or a reply that did not decode.
	FallbackProtocol uint64
	// FallbackServer: the server answered INTERNAL (a server-side failure; from a server
	// older than protocol version 3 also a volume it does not hold), TOO_LARGE, or BUSY or
	// STALE after every retry.
	FallbackServer uint64
	// FallbackDeleted: the needle was deleted; weed's HTTP GET with readDeleted=true (as
	// weed mount asks) still returns its bytes until a compaction drops them.
	FallbackDeleted uint64
	// FallbackNoVolume: the UCX server does not hold the volume (on a disk it was not given,
	// erasure-coded, tiered to remote storage); weed's HTTP handler finds it.
	FallbackNoVolume uint64
	// Retries counts requests sent again after BUSY or STALE.
	Retries uint64
	// Direct counts the UCX reads whose payload was copied straight out of the server's
	// memory (direct reads).
	Direct uint64
	// IdleClosed counts the UCX connections closed for going IdleConnTimeout unused.
	IdleClosed uint64
}

// Errors a read returns (test with errors.Is).
var (
	// ErrNotFound: no such needle, wrong cookie, deleted or expired (weed's 404).
	ErrNotFound = errors.New("seaweed: needle not found")
	// ErrUnauthorized: the read JWT was missing or refused (weed's 401).
	ErrUnauthorized = errors.New("seaweed: read JWT refused")
	// ErrCorrupt: the needle's data does not match its stored CRC, found by the client's own
	// check, which covers whole reads of needles over 1 MiB (dst may hold some of the bytes
	// then). Other reads the server checks: it answers a corrupt needle INTERNAL and the read
	// goes over HTTP, where weed refuses it too (an HTTP 500 error; with NoFallback,
	// ErrUCXUnavailable wrapping the *ServerError).
	ErrCorrupt = errors.New("seaweed: needle data fails its CRC")
	// ErrInvalidJWT: the read JWT is longer than the protocol carries (4096 bytes) or holds a
	// byte outside printable ASCII. The read fails at once, on no path: weed's JWTs are far
	// shorter and printable, so such a token is a caller's bug (net/http refuses control
	// characters in a header too).
	ErrInvalidJWT = errors.New("seaweed: invalid read JWT")
	// ErrClosed: the Client was closed before or while the read ran.
	ErrClosed = errors.New("seaweed: client closed")
	// ErrUCXUnavailable: with Options.NoFallback, a read that would have gone over HTTP. The
	// error also wraps the cause: a *ServerError for the server's answer (errors.As), or the
	// connection's failure (a swucx error: errors.Is(err, swucx.ErrPeerFailure), ...).
	ErrUCXUnavailable = errors.New("seaweed: UCX unavailable")
)

// ServerError is a server's answer that sends a read over HTTP (or, with NoFallback, fails
// it): INTERNAL, TOO_LARGE, NO_VOLUME, an unknown version, or BUSY/STALE after every retry.
type ServerError struct {
	Status Status
}

func (e *ServerError) Error() string { return "the UCX server answered " + e.Status.String() }

// Client reads needles from volume servers. Close releases it.
type Client struct {
	opts    Options
	uctx    *swucx.Context
	engines []*engine

	nextID     atomic.Uint64
	nextEngine atomic.Uint32 // new connections go to the engines in turn
	waiters    sync.Map      // request id -> chan *swucx.AMMessage

	// resolve is Options.UCXAddress, with a context for the default rule's DNS lookup.
	resolve func(ctx context.Context, volumeServer string) (string, error)

	mu      sync.Mutex
	servers map[string]*server
	closed  bool
	// watches are the payload receives running (receivePayload), which Close cuts and, with
	// payloads, waits for.
	watches  map[*payloadWatch]struct{}
	payloads sync.WaitGroup

	stats struct {
		ucx, http, failed, unreachable, down, protocol, serverErr, deleted, noVolume, retries, direct, idleClosed atomic.Uint64
	}
}

// server is one volume server's pool.
type server struct {
	http string
	sem  chan struct{}

	mu        sync.Mutex
	ucx       string // resolved "ip:port"; "" until needed (again, after markDown)
	conns     []*conn
	next      int
	downUntil time.Time
}

// engine is one of the client's UCX workers and the readers waiting for replies on it.
type engine struct {
	eng      *swucx.Engine
	spinning atomic.Bool  // a reader is driving progress (await)
	waiting  atomic.Int32 // readers waiting for a reply (await)
}

// conn is one UCX connection. answered turns true with its first reply: failures before it
// mean the listener is unreachable (fall back), after it a read in flight failed (an error).
// retired: closed for something other than the read that finds it closed (markDown, the
// idle close, another read's failure on it): that read falls back to HTTP instead of failing.
type conn struct {
	e        *engine // the worker the connection lives on
	ep       *swucx.Endpoint
	answered atomic.Bool
	retired  atomic.Bool
	direct   directState
	// version is the protocol version requests go in: maxVersion, lower once the server
	// answered that it does not speak it.
	version atomic.Uint32
	// users counts the reads using the connection (taken under the pool's lock, so an idle
	// close cannot race a read picking it); lastUsed is when the last one let go of it (or it
	// connected), in Unix nanoseconds.
	users    atomic.Int32
	lastUsed atomic.Int64
	// probeEnd is when a connection that has not answered yet counts as not answering
	// (connected + ProbeTimeout): its sends and waits end then, whatever the reads' contexts.
	probeEnd time.Time
}

// use marks a read using cn; release (called once per use) marks it done.
func (cn *conn) use() *conn {
	cn.users.Add(1)
	return cn
}

func (cn *conn) release() {
	cn.lastUsed.Store(time.Now().UnixNano())
	cn.users.Add(-1)
}

// idleFor is how long no read has used cn, as of now (Unix nanoseconds).
func (cn *conn) idleFor(now int64) time.Duration {
	if cn.users.Load() > 0 {
		return 0
	}
	return time.Duration(now - cn.lastUsed.Load())
}

// NewClient creates a client with its own UCX context and engine.
func NewClient(opts Options) (*Client, error) {
	if opts.PortOffset == 0 {
		opts.PortOffset = DefaultPortOffset
	}
	var resolve func(ctx context.Context, vs string) (string, error)
	if opts.UCXAddress == nil {
		offset := opts.PortOffset
		opts.UCXAddress = func(vs string) (string, error) { return OffsetAddress(vs, offset) }
		resolve = func(ctx context.Context, vs string) (string, error) { return offsetAddress(ctx, vs, offset) }
	} else {
		given := opts.UCXAddress
		resolve = func(_ context.Context, vs string) (string, error) { return given(vs) }
	}
	if opts.MaxInFlight <= 0 {
		opts.MaxInFlight = 64
	}
	if opts.ConnsPerServer <= 0 {
		opts.ConnsPerServer = 1
	}
	if opts.Engines <= 0 {
		opts.Engines = 1
	}
	if opts.HTTP == nil {
		opts.HTTP = DefaultHTTPClient()
	}
	if opts.RetryUCXAfter <= 0 {
		opts.RetryUCXAfter = 2 * time.Second
	}
	if opts.ProbeTimeout <= 0 {
		opts.ProbeTimeout = 2 * time.Second
	}
	if opts.IdleConnTimeout == 0 {
		opts.IdleConnTimeout = DefaultIdleConnTimeout
	}
	uctx, err := swucx.NewContext(swucx.Config{
		Features: swucx.FeatureAM | swucx.FeatureWakeup,
		Name:     "swucx-seaweed-client",
		Settings: opts.Settings,
	})
	if err != nil {
		return nil, err
	}
	c := &Client{opts: opts, uctx: uctx, servers: map[string]*server{}, resolve: resolve,
		watches: map[*payloadWatch]struct{}{}}
	for range opts.Engines {
		eng, err := swucx.NewEngine(uctx)
		if err == nil {
			c.engines = append(c.engines, &engine{eng: eng})
			err = eng.HandleAMFunc(AMReadReply, c.onReply)
		}
		if err != nil {
			c.closeEngines()
			uctx.Close()
			return nil, err
		}
	}
	return c, nil
}

func (c *Client) closeEngines() {
	for _, e := range c.engines {
		e.eng.Close()
	}
}

// OffsetAddress is the default UCXAddress rule: volumeServer's host resolved to an IP, and its
// port plus offset.
func OffsetAddress(volumeServer string, offset int) (string, error) {
	return offsetAddress(context.Background(), volumeServer, offset)
}

// offsetAddress is OffsetAddress with the lookup bounded by ctx (the read's).
func offsetAddress(ctx context.Context, volumeServer string, offset int) (string, error) {
	host, port, err := net.SplitHostPort(volumeServer)
	if err != nil {
		return "", err
	}
	p, err := strconv.Atoi(port)
	if err != nil || p+offset <= 0 || p+offset > 65535 {
		return "", fmt.Errorf("volume server %q: no UCX port at offset %d", volumeServer, offset)
	}
	ips, err := net.DefaultResolver.LookupIP(ctx, "ip", host)
	if err != nil {
		return "", err
	}
	return net.JoinHostPort(ips[0].String(), strconv.Itoa(p+offset)), nil
}

// Close closes every connection and the engines. Reads still running fail with ErrClosed (one
// receiving its payload: once its connection is cut, so that dst is not written after it
// returns), as do reads started later, never going over HTTP. Idempotent.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	servers := c.servers
	c.servers = nil
	// No payload receive starts from here on (receivePayload checks closed under c.mu): cut
	// the connections of those running and wait until UCX let go of their buffers.
	watches := make([]*payloadWatch, 0, len(c.watches))
	for w := range c.watches {
		watches = append(watches, w)
	}
	c.mu.Unlock()
	for _, w := range watches {
		w.cutNow(ErrClosed)
	}
	c.payloads.Wait()
	for _, s := range servers {
		s.mu.Lock()
		for _, cn := range s.conns {
			cn.close()
		}
		s.conns = nil
		s.mu.Unlock()
	}
	c.closeEngines()
	return c.uctx.Close()
}

// Stats returns the counters so far.
func (c *Client) Stats() Stats {
	s := &c.stats
	return Stats{
		UCX: s.ucx.Load(), HTTP: s.http.Load(), Failed: s.failed.Load(),
		FallbackUnreachable: s.unreachable.Load(), FallbackDown: s.down.Load(),
		FallbackProtocol: s.protocol.Load(), FallbackServer: s.serverErr.Load(),
		FallbackDeleted: s.deleted.Load(), FallbackNoVolume: s.noVolume.Load(),
		Retries: s.retries.Load(), Direct: s.direct.Load(), IdleClosed: s.idleClosed.Load(),
	}
}

// ReadNeedle reads up to len(dst) bytes at offset of the needle fid (e.g. "3,01637037d6") from
// volumeServer (its HTTP address, "host:port") into dst and returns how many it read: fewer
// than len(dst) only at the end of the needle (0 and io.EOF at or past the end). jwt is the
// read JWT, "" when the cluster does not sign reads; one the protocol cannot carry fails the
// read with ErrInvalidJWT.
//
// The bytes go over UCX, straight into dst for large reads; over HTTP when the server's UCX
// listener cannot be reached or does not speak the protocol (unless Options.NoFallback; a
// listener that accepts and never answers counts after Options.ProbeTimeout, whatever ctx
// says). When a connection fails after the server answered on it, the read that finds the
// failure returns it (wrapping a swucx error such as swucx.ErrConnectionReset); the other
// reads in flight on that connection go over HTTP; later reads reconnect or fall back. ctx
// bounds the wait for the reply. Once the bytes are moving into dst the read waits for them even past
// ctx's end, for at most 10 s more: a server that stalls mid-transfer without failing
// (stopped, its socket alive) then has its connection cut, and the read returns ctx's error
// once UCX let go of dst. dst is never written after ReadNeedle returns. After Close, reads
// fail with ErrClosed.
func (c *Client) ReadNeedle(ctx context.Context, volumeServer, fid string, offset int64, dst []byte, jwt string) (int, error) {
	n, err := c.read(ctx, volumeServer, fid, offset, dst, jwt)
	if err != nil && err != io.EOF {
		c.stats.failed.Add(1)
	}
	return n, err
}

func (c *Client) read(ctx context.Context, volumeServer, fid string, offset int64, dst []byte, jwt string) (int, error) {
	id, err := ParseFileID(fid)
	if err != nil {
		return 0, err
	}
	// Before any connection is chosen: a JWT UCX cannot carry is the caller's, not the
	// connection's, failure (and HTTP would refuse a control character too).
	if err := checkJWT(jwt); err != nil {
		return 0, fmt.Errorf("read %s: %w", fid, err)
	}
	if offset < 0 {
		return 0, fmt.Errorf("read %s: negative offset %d", fid, offset)
	}
	if len(dst) == 0 {
		return 0, nil
	}
	// weed's volume location "url" is host:port; a URL here would become http://http//...
	if _, _, err := net.SplitHostPort(volumeServer); err != nil {
		return 0, fmt.Errorf("read %s: volume server %q: want host:port, as weed's lookup gives it: %w", fid, volumeServer, err)
	}
	s, err := c.server(volumeServer)
	if err != nil {
		return 0, err
	}
	why, cause := &c.stats.down, errDown
	if !s.isDown() {
		n, fallback, err := c.readUCX(ctx, s, id, uint64(offset), dst, jwt)
		if fallback == nil {
			if err == nil {
				c.stats.ucx.Add(1)
			}
			return n, err
		}
		why, cause = fallback, err
	}
	if c.isClosed() {
		return 0, fmt.Errorf("read %s from %s: %w", fid, volumeServer, ErrClosed)
	}
	why.Add(1)
	if c.opts.NoFallback {
		return 0, fmt.Errorf("read %s from %s: %w (HTTP fallback disabled): %w", fid, volumeServer, ErrUCXUnavailable, cause)
	}
	n, err := c.readHTTP(ctx, volumeServer, fid, offset, dst, jwt)
	if err == nil {
		c.stats.http.Add(1)
	}
	return n, err
}

// server returns the pool for a volume server, creating it.
func (c *Client) server(volumeServer string) (*server, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, fmt.Errorf("read from %s: %w", volumeServer, ErrClosed)
	}
	s := c.servers[volumeServer]
	if s == nil {
		s = &server{http: volumeServer, sem: make(chan struct{}, c.opts.MaxInFlight)}
		c.servers[volumeServer] = s
	}
	return s, nil
}

func (s *server) isDown() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return time.Now().Before(s.downUntil)
}

func (c *Client) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// markDown sends reads over HTTP for RetryUCXAfter and forgets the server's UCX address (it is
// resolved again after). It closes the connection that failed (failed, if any) and those that
// never answered; the ones that answered stay, so that reads in flight on them go on. Reads on
// a connection closed here fall back to HTTP (retired) instead of failing.
func (s *server) markDown(c *Client, failed *conn) {
	s.mu.Lock()
	s.downUntil = time.Now().Add(c.opts.RetryUCXAfter)
	s.ucx = ""
	var gone []*conn
	if failed != nil {
		gone = append(gone, failed)
	}
	keep := s.conns[:0]
	for _, cn := range s.conns {
		switch {
		case cn == failed:
		case cn.answered.Load():
			keep = append(keep, cn)
		default:
			gone = append(gone, cn)
		}
	}
	clear(s.conns[len(keep):])
	s.conns = keep
	s.mu.Unlock()
	for _, cn := range gone {
		cn.retired.Store(true)
		cn.close()
	}
}

// drop removes one connection from the pool and closes it, for one read's failure on it: the
// other reads in flight on it end (canceled, or on a closed endpoint) and fall back to HTTP
// (retired), where they had failed with errors that did not say the server went.
func (s *server) drop(cn *conn) {
	s.mu.Lock()
	for i, x := range s.conns {
		if x == cn {
			s.conns = append(s.conns[:i], s.conns[i+1:]...)
			break
		}
	}
	s.mu.Unlock()
	cn.retired.Store(true)
	cn.close()
}

// close closes the connection at once (CloseForce): its operations in flight end, and UCX is
// done with their buffers when it returns. Never gracefully: a graceful close first would
// leave a later forced one nothing to do, and a payload receive from a server that stalls
// would then never end (receivePayload). Connections are closed only when they failed, are
// given up (markDown) or the client closes, so there is nothing to flush.
func (cn *conn) close() { cn.ep.CloseForce() }

// conn picks a connection round-robin for a read (which releases it when done with it),
// connecting while the pool is not full. Connections UCX knows have failed (the server
// restarted while the client was idle) or unused for IdleConnTimeout are dropped first.
// The server's UCX address is resolved (bounded by ctx) without holding s.mu.
func (s *server) conn(ctx context.Context, c *Client) (*conn, error) {
	s.mu.Lock()
	if cn := s.pooled(c); cn != nil {
		cn.use() // under s.mu: an idle close (pooled) cannot take it now
		s.mu.Unlock()
		return cn, nil
	}
	addr := s.ucx
	s.mu.Unlock()
	if addr == "" {
		var err error
		if addr, err = c.resolve(ctx, s.http); err != nil {
			return nil, err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if cn := s.pooled(c); cn != nil {
		return cn.use(), nil // filled meanwhile
	}
	// Not after Close went through this pool (it takes s.mu after setting closed), so a
	// connection made here is always closed by it.
	if c.isClosed() {
		return nil, ErrClosed
	}
	if s.ucx == "" {
		s.ucx = addr
	}
	e := c.engines[int(c.nextEngine.Add(1)-1)%len(c.engines)]
	ep, err := e.eng.Connect(addr)
	if err != nil {
		return nil, err
	}
	cn := &conn{e: e, ep: ep, probeEnd: time.Now().Add(c.opts.ProbeTimeout)}
	cn.version.Store(maxVersion)
	cn.lastUsed.Store(time.Now().UnixNano())
	if c.opts.NoDirectReads {
		cn.direct.disable()
	}
	s.conns = append(s.conns, cn)
	return cn.use(), nil
}

// pooled drops the connections UCX knows have failed or no read used for IdleConnTimeout,
// and returns the next one round-robin once the pool is full, nil while it is not. Under s.mu.
func (s *server) pooled(c *Client) *conn {
	var now int64
	if c.opts.IdleConnTimeout > 0 {
		now = time.Now().UnixNano()
	}
	live := s.conns[:0]
	for _, cn := range s.conns {
		switch {
		case cn.ep.Failure() != nil:
			cn.close()
		case now != 0 && cn.idleFor(now) >= c.opts.IdleConnTimeout:
			c.stats.idleClosed.Add(1)
			cn.retired.Store(true) // a read on it after all falls back instead of failing
			cn.close()
		default:
			live = append(live, cn)
		}
	}
	clear(s.conns[len(live):])
	s.conns = live
	if len(s.conns) < c.opts.ConnsPerServer {
		return nil
	}
	s.next++
	return s.conns[s.next%len(s.conns)]
}
