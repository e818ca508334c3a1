package seaweed

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"syscall"
	"time"
)

// tcpUserTimeout is Linux's TCP_USER_TIMEOUT socket option (<linux/tcp.h>; package syscall
// lacks it on amd64).
const tcpUserTimeout = 18

// DefaultHTTPClient is the fallback's client when Options.HTTP is nil: net/http's default
// transport (proxy settings, HTTP/2, its pool), with the failure detection swucx gives UCX's
// tcp connections, so that a read from a volume server whose host vanished (powered off,
// partitioned: nothing resets the connection) fails within seconds instead of waiting for
// TCP's retransmissions to give up (~15 minutes) or forever for a reply: connections are made
// within 10 s, keepalive probes an idle connection after 2 s (2 probes 1 s apart, as UCX's
// defaults in swucx), and a request sent and not acknowledged for 10 s drops its connection
// (TCP_USER_TIMEOUT, as swucx's UCX_TCP_USER_TIMEOUT). It keeps up to 64 idle connections per
// server (net/http's default keeps 2, which concurrent readers would churn through).
func DefaultHTTPClient() *http.Client {
	dialer := &net.Dialer{
		Timeout:   10 * time.Second,
		KeepAlive: -1, // set below, with the rest (net.KeepAliveConfig needs go1.23)
		Control: func(_, _ string, c syscall.RawConn) error {
			var opErr error
			err := c.Control(func(fd uintptr) {
				for _, o := range []struct{ level, name, value int }{
					{syscall.SOL_SOCKET, syscall.SO_KEEPALIVE, 1},
					{syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE, 2},
					{syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL, 1},
					{syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT, 2},
					{syscall.IPPROTO_TCP, tcpUserTimeout, 10_000}, // ms
				} {
					if opErr = syscall.SetsockoptInt(int(fd), o.level, o.name, o.value); opErr != nil {
						return
					}
				}
			})
			if err != nil {
				return err
			}
			return opErr
		},
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = dialer.DialContext
	t.MaxIdleConnsPerHost = 64
	return &http.Client{Transport: t}
}

// readHTTP is the fallback: GET http://<volume server>/<fid>?readDeleted=true with a Range
// header and the read JWT as a bearer token, as weed mount does (it reads a chunk even if the
// needle was deleted after the filer listed it, until a compaction drops its bytes).
func (c *Client) readHTTP(ctx context.Context, volumeServer, fid string, offset int64, dst []byte, jwt string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+volumeServer+"/"+fid+"?readDeleted=true", nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", offset, offset+int64(len(dst))-1))
	if jwt != "" {
		req.Header.Set("Authorization", "Bearer "+jwt)
	}
	resp, err := c.opts.HTTP.Do(req)
	if err != nil {
		return 0, fmt.Errorf("read %s over HTTP: %w", fid, err)
	}
	defer func() {
		// Leave the connection reusable: drain a little of what was not read.
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
	}()
	switch resp.StatusCode {
	case http.StatusPartialContent:
	case http.StatusOK: // the whole needle: skip to offset
		if _, err := io.CopyN(io.Discard, resp.Body, offset); err == io.EOF {
			return 0, io.EOF
		} else if err != nil {
			return 0, fmt.Errorf("read %s over HTTP: %w", fid, err)
		}
	case http.StatusNotFound:
		return 0, fmt.Errorf("read %s over HTTP: %w", fid, ErrNotFound)
	case http.StatusUnauthorized:
		return 0, fmt.Errorf("read %s over HTTP: %w", fid, ErrUnauthorized)
	case http.StatusRequestedRangeNotSatisfiable:
		return 0, io.EOF
	default:
		return 0, fmt.Errorf("read %s over HTTP: %s", fid, resp.Status)
	}
	n, err := readBody(resp.Body, dst)
	switch {
	case err != nil:
		return 0, fmt.Errorf("read %s over HTTP: %w", fid, err)
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// readBody reads body into dst until dst is full or the body ends. Only a body that ended
// as announced (io.EOF: its Content-Length or last chunk reached) makes a short read; one cut
// off (net/http's io.ErrUnexpectedEOF, a reset) is an error, never a short needle.
func readBody(body io.Reader, dst []byte) (int, error) {
	n := 0
	for n < len(dst) {
		k, err := body.Read(dst[n:])
		n += k
		if err == io.EOF {
			break
		}
		if err != nil {
			return n, err
		}
	}
	return n, nil
}
