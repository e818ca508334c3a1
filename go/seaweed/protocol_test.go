package seaweed

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"testing"
)

func TestFileIDParseAndFormat(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want FileID
		out  string
	}{
		{"3,01637037d6", FileID{3, 0x01, 0x637037d6}, "3,01637037d6"},
		{"7,0188e07130.jpg", FileID{7, 0x01, 0x88e07130}, "7,0188e07130"},
		{"7,0188e07130_2", FileID{7, 0x03, 0x88e07130}, "7,0388e07130"},
		{"1,ffffffffffffffff00000001", FileID{1, ^uint64(0), 1}, "1,ffffffffffffffff00000001"},
		{"4294967295,1234567890", FileID{4294967295, 0x12, 0x34567890}, "4294967295,1234567890"},
	} {
		got, err := ParseFileID(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseFileID(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
			continue
		}
		if s := got.String(); s != tc.out {
			t.Errorf("%+v.String() = %q, want %q", got, s, tc.out)
		}
	}
	for _, bad := range []string{"", "3", "3,", ",01637037d6", "x,01637037d6", "3,637037d6",
		"3,1000000000000000000000000", "3,0g637037d6", "3,01637037d6_", "3,01637037d6_x",
		"4294967296,01637037d6", "-3,01637037d6", "3,+1637037d6"} {
		if _, err := ParseFileID(bad); err == nil {
			t.Errorf("ParseFileID(%q) accepted", bad)
		}
	}
}

func TestRequestLayout(t *testing.T) {
	r := readRequest{version: 1, id: 0x1122334455667788, fid: FileID{7, 0xabcdef, 0xdeadbeef}, offset: 5, size: 9,
		flags: wantName | wantMime, jwt: "a.b.c"}
	b, err := r.encode()
	if err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	if !bytes.Equal(b[:4], []byte{'S', 'W', 1, 1}) || le.Uint16(b[4:]) != 3 || le.Uint16(b[6:]) != 5 ||
		le.Uint64(b[8:]) != r.id || le.Uint32(b[16:]) != 7 || le.Uint32(b[20:]) != 0xdeadbeef ||
		le.Uint64(b[24:]) != 0xabcdef || le.Uint64(b[32:]) != 5 || le.Uint64(b[40:]) != 9 ||
		string(b[48:]) != "a.b.c" || len(b) != 53 {
		t.Fatalf("request layout: % x", b)
	}
	r.version, r.flags = 2, crcAtClient|wantDirect
	if b, _ := r.encode(); !bytes.Equal(b[:4], []byte{'S', 'W', 2, 1}) || le.Uint16(b[4:]) != 0x18 {
		t.Fatalf("version-2 request: % x", b[:8])
	}
	for _, jwt := range []string{"with space", "tab\t", string(make([]byte, maxJWTLen+1))} {
		if _, err := (&readRequest{jwt: jwt}).encode(); err == nil {
			t.Errorf("encode accepted JWT %q", jwt)
		}
	}
}

// reply builds a reply header for the decoder tests.
func reply(status Status, flags uint8, dataSize, payloadLen, lastMod uint64, crc uint32, name, mime string) []byte {
	b := make([]byte, fixedLen, fixedLen+len(name)+len(mime))
	le := binary.LittleEndian
	b[0], b[1], b[2], b[3], b[4], b[5] = 'S', 'W', 1, 2, byte(status), flags
	le.PutUint16(b[6:], uint16(len(name)))
	le.PutUint64(b[8:], 42)
	le.PutUint64(b[16:], dataSize)
	le.PutUint64(b[24:], payloadLen)
	le.PutUint64(b[32:], lastMod)
	le.PutUint32(b[40:], crc)
	le.PutUint16(b[44:], uint16(len(mime)))
	return append(append(b, name...), mime...)
}

func TestDecodeReply(t *testing.T) {
	ok := reply(StatusOK, replyHasLastModified|replyHasName|replyHasMime, 100, 10, 1700000000, 0xabc, "a.txt", "text/plain")
	r, err := decodeReply(ok)
	if err != nil {
		t.Fatal(err)
	}
	if r.id != 42 || r.status != StatusOK || r.payloadLen != 10 || r.info != (ReplyInfo{100, 0xabc, 1700000000, "a.txt", "text/plain"}) {
		t.Fatalf("decoded %+v", r)
	}
	if _, err := decodeReply(reply(StatusBadRange, 0, 100, 0, 0, 0, "", "")); err != nil {
		t.Fatal(err)
	}
	if r, err := decodeReply(reply(StatusOK, replyCRCUnchecked, 100, 100, 0, 7, "", "")); err != nil || r.flags != replyCRCUnchecked {
		t.Fatalf("whole data left to the client: %+v, %v", r, err)
	}
	bad := map[string][]byte{
		"short":              ok[:47],
		"trailing":           append(append([]byte{}, ok...), 0),
		"undefined status":   reply(14, 0, 0, 0, 0, 0, "", ""),
		"NO_VOLUME in v1":    reply(StatusNoVolume, 0, 0, 0, 0, 0, "", ""),
		"undefined flag":     reply(StatusOK, 0x20, 1, 1, 0, 0, "", ""),
		"unchecked part":     reply(StatusOK, replyCRCUnchecked, 2, 1, 0, 0, "", ""),
		"name without flag":  reply(StatusOK, 0, 1, 1, 0, 0, "n", ""),
		"mod without flag":   reply(StatusOK, 0, 1, 1, 5, 0, "", ""),
		"payload > data":     reply(StatusOK, 0, 1, 2, 0, 0, "", ""),
		"error with payload": reply(StatusNotFound, 0, 1, 1, 0, 0, "", ""),
		"error with crc":     reply(StatusNotFound, 0, 0, 0, 0, 1, "", ""),
		"error with flags":   reply(StatusNotFound, replyHasLastModified, 0, 0, 5, 0, "", ""),
	}
	reserved := append([]byte{}, ok...)
	reserved[46] = 1
	bad["reserved"] = reserved
	request := append([]byte{}, ok...)
	request[3] = kindRequest
	bad["request kind"] = request
	for name, b := range bad {
		if _, err := decodeReply(b); !errors.Is(err, errMalformed) {
			t.Errorf("%s: decoded (%v)", name, err)
		}
	}
}

// A version-2 reply with the direct-read trailer (offsets as in src/seaweed/protocol.rs).
func TestDecodeReplyDirect(t *testing.T) {
	v2 := func(status Status, flags uint8, payloadLen uint64, trailer []byte) []byte {
		b := reply(status, flags|replyHasName, 100, payloadLen, 0, 0, "a.txt", "")
		b[2] = 2
		return append(b, trailer...)
	}
	trailer := make([]byte, directLen)
	binary.LittleEndian.PutUint64(trailer, 0x7f0012345678)
	binary.LittleEndian.PutUint32(trailer[8:], 4242)
	r, err := decodeReply(v2(StatusOK, replyDirect, 64, trailer))
	if err != nil || r.version != 2 || r.direct == nil || *r.direct != (peerRange{0x7f0012345678, 4242}) || r.info.Name != "a.txt" {
		t.Fatalf("decoded %+v, %v", r, err)
	}
	if r, err := decodeReply(v2(StatusOK, 0, 64, nil)); err != nil || r.direct != nil {
		t.Fatalf("version 2 without the trailer: %+v, %v", r, err)
	}
	noVolume := reply(StatusNoVolume, 0, 0, 0, 0, 0, "", "")
	noVolume[2] = 3
	if r, err := decodeReply(noVolume); err != nil || r.status != StatusNoVolume {
		t.Fatalf("version 3 NO_VOLUME: %+v, %v", r, err)
	}
	reserved := append([]byte{}, trailer...)
	reserved[15] = 1
	v1 := v2(StatusOK, replyDirect, 64, trailer)
	v1[2] = 1
	v4 := v2(StatusOK, 0, 64, nil)
	v4[2] = 4
	for name, b := range map[string][]byte{
		"reserved":           v2(StatusOK, replyDirect, 64, reserved),
		"no payload":         v2(StatusOK, replyDirect, 0, trailer),
		"error status":       v2(StatusNotFound, replyDirect, 0, trailer),
		"trailer missing":    v2(StatusOK, replyDirect, 64, trailer[:15]),
		"trailer, no flag":   v2(StatusOK, 0, 64, trailer),
		"trailer in v1":      v1,
		"unknown version 4":  v4,
		"undefined v2 flags": v2(StatusOK, 0x40, 64, nil),
	} {
		if _, err := decodeReply(b); !errors.Is(err, errMalformed) {
			t.Errorf("%s: decoded (%v)", name, err)
		}
	}
}

// TestCheckCRC: both forms of the stored CRC that weed writes pass; anything else is ErrCorrupt.
func TestCheckCRC(t *testing.T) {
	data := []byte("needle data")
	c := crc32.Checksum(data, crc32.MakeTable(crc32.Castagnoli))
	legacy := (c>>15 | c<<17) + 0xa282ead8
	for _, stored := range []uint32{c, legacy} {
		if err := checkCRC(data, stored); err != nil {
			t.Errorf("%08x: %v", stored, err)
		}
	}
	if err := checkCRC(data, c^1); !errors.Is(err, ErrCorrupt) {
		t.Errorf("wrong CRC: %v", err)
	}
}

// FuzzDecodeReply: the decoder never panics, and what it accepts is consistent. `go test` runs
// the seeds; `go test -fuzz FuzzDecodeReply ./seaweed` explores.
func FuzzDecodeReply(f *testing.F) {
	f.Add(reply(StatusOK, replyHasName, 10, 10, 0, 1, "x", ""))
	f.Add(reply(StatusStale, 0, 0, 0, 0, 0, "", ""))
	f.Add(reply(StatusOK, replyCRCUnchecked, 9, 9, 0, 3, "", ""))
	f.Add([]byte("SW\x01\x02"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeReply(b)
		if err != nil {
			return
		}
		trailer := 0
		if r.direct != nil {
			trailer = directLen
		}
		if len(b) != fixedLen+len(r.info.Name)+len(r.info.Mime)+trailer || r.payloadLen > r.info.DataSize && r.status == StatusOK ||
			r.flags&replyCRCUnchecked != 0 && r.payloadLen != r.info.DataSize {
			t.Fatalf("accepted an inconsistent reply % x", b)
		}
	})
}
