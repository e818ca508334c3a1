package seaweed

import (
	"context"
	"fmt"
	"io"
	"net/http"
)

// readHTTP is the fallback: GET http://<volume server>/<fid> with a Range header and the read
// JWT as a bearer token, as weed mount does.
func (c *Client) readHTTP(ctx context.Context, volumeServer, fid string, offset int64, dst []byte, jwt string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+volumeServer+"/"+fid, nil)
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
		if _, err := io.CopyN(io.Discard, resp.Body, offset); err != nil {
			return 0, io.EOF
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
	n, err := io.ReadFull(resp.Body, dst)
	switch {
	case err == io.EOF:
		return 0, io.EOF
	case err == io.ErrUnexpectedEOF:
		return n, nil
	case err != nil:
		return n, fmt.Errorf("read %s over HTTP: %w", fid, err)
	}
	return n, nil
}
