package seaweed

import (
	"fmt"
	"strconv"
	"strings"
)

// FileID names a needle: "<volume id>,<needle id hex><cookie 8 hex>".
type FileID struct {
	VolumeID uint32
	NeedleID uint64
	Cookie   uint32
}

// ParseFileID parses "vid,<key>[_delta][.ext]" as weed does (needle.ParsePath): the last 8 hex
// digits of the key are the cookie, the 1 to 16 before them the needle id; an "_<decimal>"
// suffix adds to the needle id and an extension is ignored.
func ParseFileID(s string) (FileID, error) {
	bad := func(why string) (FileID, error) {
		return FileID{}, fmt.Errorf("file id %q: %s", s, why)
	}
	rest := s
	if i := strings.LastIndexByte(rest, '.'); i > 0 {
		rest = rest[:i]
	}
	vid, key, ok := strings.Cut(rest, ",")
	if !ok {
		return bad("missing ',' between volume id and needle key")
	}
	if vid == "" || strings.TrimLeft(vid, "0123456789") != "" {
		return bad("volume id is not a decimal number below 2^32")
	}
	v, err := strconv.ParseUint(vid, 10, 32)
	if err != nil {
		return bad("volume id is not a decimal number below 2^32")
	}
	var delta uint64
	if i := strings.LastIndexByte(key, '_'); i > 0 {
		d := key[i+1:]
		if d == "" || strings.TrimLeft(d, "0123456789") != "" {
			return bad("'_' suffix is not a decimal delta")
		}
		if delta, err = strconv.ParseUint(d, 10, 64); err != nil {
			return bad("'_' suffix is not a decimal delta")
		}
		key = key[:i]
	}
	switch {
	case len(key) <= 8:
		return bad("needle key is too short (needs more than 8 hex digits)")
	case len(key) > 24:
		return bad("needle key is too long (at most 24 hex digits)")
	}
	id, err1 := strconv.ParseUint(key[:len(key)-8], 16, 64)
	cookie, err2 := strconv.ParseUint(key[len(key)-8:], 16, 32)
	if err1 != nil || err2 != nil {
		return bad("needle key is not hexadecimal")
	}
	return FileID{VolumeID: uint32(v), NeedleID: id + delta, Cookie: uint32(cookie)}, nil
}

// String formats the id as weed does: the needle id without leading zero bytes, then the
// cookie as 8 hex digits.
func (f FileID) String() string {
	var b [12]byte
	for i := 0; i < 8; i++ {
		b[i] = byte(f.NeedleID >> (56 - 8*i))
	}
	for i := 0; i < 4; i++ {
		b[8+i] = byte(f.Cookie >> (24 - 8*i))
	}
	skip := 0
	for skip < 8 && b[skip] == 0 {
		skip++
	}
	return fmt.Sprintf("%d,%x", f.VolumeID, b[skip:])
}
