package swucx_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"strings"
	"testing"
	"time"

	swucx "github.com/swucx/swucx/go"
)

// A tag message over TCP loopback between two engines of one process, and an error that
// matches both a swucx sentinel and the context's error. README.md shows this function's body
// as a complete program (TestReadmeExample checks that they agree).
func Example() {
	uc, err := swucx.NewContext(swucx.Config{Settings: map[string]string{"TLS": "tcp,self"}})
	if err != nil {
		log.Fatal(err)
	}
	defer uc.Close()
	server, err := swucx.NewEngine(uc) // a thread-safe worker; any goroutine may use it
	if err != nil {
		log.Fatal(err)
	}
	defer server.Close()
	client, err := swucx.NewEngine(uc)
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	ln, err := server.Listen("127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	ep, err := client.Connect(fmt.Sprintf("127.0.0.1:%d", ln.Port()))
	if err != nil {
		log.Fatal(err)
	}
	defer ep.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	go func() {
		// The buffer belongs to UCX until TagSend returns (it is pinned meanwhile).
		if err := ep.TagSend(ctx, []byte("hello over UCX"), 7); err != nil {
			log.Print(err)
		}
	}()
	sep, err := ln.Accept(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer sep.Close()
	buf := make([]byte, 64)
	n, tag, err := server.TagRecv(ctx, buf, 7, ^uint64(0)) // tag 7, every bit compared
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("received %q (tag %d)\n", buf[:n], tag)

	// Errors carry the status and swucx's message, and match sentinels with errors.Is.
	short, cancel2 := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel2()
	_, _, err = server.TagRecv(short, buf, 8, ^uint64(0))
	fmt.Println(errors.Is(err, swucx.ErrTimedOut), errors.Is(err, context.DeadlineExceeded))
	// Output:
	// received "hello over UCX" (tag 7)
	// true true
}

// README.md's complete Go program is Example as a main function: same imports, same body.
func TestReadmeExample(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, program, ok := strings.Cut(string(readme), "```go\npackage main\n")
	if !ok {
		t.Fatal("README.md has no ```go block starting with package main")
	}
	program, _, _ = strings.Cut(program, "```")
	imports, body, ok := strings.Cut(program, "func main() {\n")
	if !ok {
		t.Fatal("README.md's program has no func main")
	}
	source, err := os.ReadFile("example_test.go")
	if err != nil {
		t.Fatal(err)
	}
	_, want, _ := strings.Cut(string(source), "func Example() {\n")
	want, _, _ = strings.Cut(want, "\t// Output:\n")
	if got := strings.TrimSuffix(strings.TrimSpace(body), "}"); strings.TrimSpace(got) != strings.TrimSpace(want) {
		t.Errorf("README.md's main differs from Example's body:\n%s\nwant:\n%s", got, want)
	}
	for _, imp := range []string{`"context"`, `"errors"`, `"fmt"`, `"log"`, `"time"`,
		`swucx "github.com/swucx/swucx/go"`} {
		if !strings.Contains(imports, imp) {
			t.Errorf("README.md's program does not import %s", imp)
		}
	}
}
