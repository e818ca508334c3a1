package seaweed

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"strings"
	"syscall"
	"testing"
)

// The HTTP fallback asks as weed mount does (readDeleted=true, Range, bearer JWT) and tells a
// body that ended as announced (a short read at the end of the needle) from one cut off (an
// error: the volume server died mid-reply), for a range reply and for a whole-needle one.
func TestReadHTTPShortAndCutOff(t *testing.T) {
	const needle = "0123456789abcdefghijklmnopqrstuvwxyz"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("readDeleted") != "true" || r.Header.Get("Authorization") != "Bearer tok" {
			http.Error(w, "not as weed mount asks", http.StatusBadRequest)
			return
		}
		switch r.URL.Path {
		case "/3,cut", "/3,cutwhole":
			// Announce 30 bytes, send 10, then drop the connection.
			conn, buf, _ := w.(http.Hijacker).Hijack()
			status := "206 Partial Content"
			if r.URL.Path == "/3,cutwhole" {
				status = "200 OK"
			}
			buf.WriteString("HTTP/1.1 " + status + "\r\nContent-Length: 30\r\n\r\n" + needle[:10])
			buf.Flush()
			conn.Close()
		case "/3,whole":
			io.WriteString(w, needle) // 200 with the whole needle: the client skips to offset
		default:
			// The range clipped to the needle, as weed answers one running past the end.
			var from, to int
			if _, err := fmt.Sscanf(r.Header.Get("Range"), "bytes=%d-%d", &from, &to); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			to = min(to, len(needle)-1)
			w.WriteHeader(http.StatusPartialContent)
			io.WriteString(w, needle[from:to+1])
		}
	}))
	defer srv.Close()
	c := &Client{opts: Options{HTTP: srv.Client()}}
	host := strings.TrimPrefix(srv.URL, "http://")
	ctx := context.Background()
	dst := make([]byte, 30)
	if n, err := c.readHTTP(ctx, host, "3,range", 20, dst, "tok"); err != nil || string(dst[:n]) != needle[20:] {
		t.Fatalf("range past the end: %q %v, want a short read of the rest", dst[:n], err)
	}
	if n, err := c.readHTTP(ctx, host, "3,whole", 30, dst, "tok"); err != nil || string(dst[:n]) != needle[30:] {
		t.Fatalf("whole needle from 30: %q %v", dst[:n], err)
	}
	if _, err := c.readHTTP(ctx, host, "3,whole", 40, dst, "tok"); err != io.EOF {
		t.Fatalf("whole needle from past its end: %v, want io.EOF", err)
	}
	for _, fid := range []string{"3,cut", "3,cutwhole"} {
		n, err := c.readHTTP(ctx, host, fid, 0, dst, "tok")
		if err == nil || errors.Is(err, io.EOF) {
			t.Fatalf("%s: a body cut off after 10 of 30 bytes gave %d bytes, %v", fid, n, err)
		}
	}
}

// The fallback's default client gives its connections the failure detection it documents
// (keepalive after 2 s idle, 2 probes 1 s apart; TCP_USER_TIMEOUT 10 s), read back from the
// socket of a real request.
func TestDefaultHTTPClientSocketOptions(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	var conn net.Conn
	trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) { conn = info.Conn }}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace),
		http.MethodGet, srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := DefaultHTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	tcp, ok := conn.(*net.TCPConn)
	if !ok {
		t.Fatalf("connection %T, want *net.TCPConn", conn)
	}
	raw, err := tcp.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		name       string
		level, opt int
		value      int
	}{
		{"SO_KEEPALIVE", syscall.SOL_SOCKET, syscall.SO_KEEPALIVE, 1},
		{"TCP_KEEPIDLE", syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE, 2},
		{"TCP_KEEPINTVL", syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL, 1},
		{"TCP_KEEPCNT", syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT, 2},
		{"TCP_USER_TIMEOUT (ms)", syscall.IPPROTO_TCP, tcpUserTimeout, 10_000},
	}
	if err := raw.Control(func(fd uintptr) {
		for _, w := range want {
			got, err := syscall.GetsockoptInt(int(fd), w.level, w.opt)
			if err != nil || got != w.value {
				t.Errorf("%s = %d (%v), want %d", w.name, got, err, w.value)
			}
		}
	}); err != nil {
		t.Fatal(err)
	}
}
