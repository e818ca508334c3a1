package seaweed_test

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"time"

	swucx "github.com/swucx/swucx/go"
	"github.com/swucx/swucx/go/seaweed"
)

// A weed-mount-style read: UCX to the volume server's swucx listener (its HTTP port + 20000),
// HTTP when that cannot be used. (Compiled, not run: it needs a cluster.)
func ExampleClient_ReadNeedle() {
	cl, err := seaweed.NewClient(seaweed.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	buf := make([]byte, 1<<20)
	n, err := cl.ReadNeedle(ctx, "10.0.0.5:8080", "3,01637037d6", 0, buf, "")
	switch {
	case errors.Is(err, seaweed.ErrNotFound):
		fmt.Println("no such needle")
	case err == io.EOF:
		fmt.Println("offset past the end")
	case err != nil:
		fmt.Println(err)
	default:
		fmt.Printf("%d bytes; stats %+v\n", n, cl.Stats())
	}
}

// A volume server written in Go serving its own needles over UCX. (Compiled, not run.)
func Example_serveNeedles() {
	needles := map[seaweed.FileID][]byte{{VolumeID: 3, NeedleID: 1, Cookie: 0x637037d6}: []byte("hello")}
	uctx, err := swucx.NewContext(swucx.Config{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer uctx.Close()
	srv, err := uctx.ServeNeedles("0.0.0.0:28080", "", func(req *swucx.NeedleRequest, reply *swucx.NeedleReply) {
		data, ok := needles[seaweed.FileID{VolumeID: req.VolumeID, NeedleID: req.NeedleID, Cookie: req.Cookie}]
		end := uint64(len(data))
		if req.Size != 0 {
			end = req.Offset + req.Size
		}
		switch {
		case !ok:
			reply.Fail(uint8(seaweed.StatusNotFound), 0)
		case req.Offset > end || end > uint64(len(data)):
			// Past the end: the data's length, and the client asks for what there is.
			reply.Fail(uint8(seaweed.StatusBadRange), uint64(len(data)))
		default:
			// The stored CRC-32C, passed on to the client; a host keeps it with the needle
			// rather than computing it per read.
			crc := crc32.Checksum(data, crc32.MakeTable(crc32.Castagnoli))
			reply.OKBytes(uint64(len(data)), crc, 0, data[req.Offset:end])
		}
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer srv.Close()
	id, _ := seaweed.ParseFileID("3,01637037d6")
	fmt.Println("serving", id, "on port", srv.Port())
}
