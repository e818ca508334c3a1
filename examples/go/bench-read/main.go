// Command bench-read measures SeaweedFS needle reads through swucx (the Go client of
// github.com/swucx/swucx/go/seaweed) against weed's own HTTP GET, on the same needles in the
// same run, alternating rounds of each path.
//
//	bench-read --server IP:PORT --http URL --fids FILE [--transport shm|tcp]
//	           [--concurrency 1,16] [--duration 1s] [--rounds 3] [--ucx-pid N] [--http-pid N]
//	           [--conns N] [--engines N]
//	bench-read --cluster [--quick] [--sizes 4096,65536,1048576] [--transport shm|tcp]
//	           [--conns N] [--engines N] [--serve-threads N]
//
// FILE holds one needle per line: "fid size crc32c" (crc32c in hex, Castagnoli, over the whole
// needle). Every byte read is checked against it; a mismatch fails the run. --cluster starts a
// throwaway weed master + volume and `swucx serve` on 127.0.0.1 (package testcluster), uploads
// needles of each size, and measures both UCX transports (shm and tcp, or the one --transport
// names) against HTTP: this is `make demo` (with --quick) and the needle-read part of
// `make bench`.
//
// Output: for each (path, transport, size, concurrency) one line
//
//	RESULT path=ucx transport=shm size=4096 conc=1 reads=... lat_us_p50=... lat_us_p99=... gbps=... server_cpu_us_per_read=...
//
// with the median over the rounds of each figure (server CPU from /proc/PID/stat of the process
// serving that path: `swucx serve` for ucx, `weed volume` for http; "-" when no PID is known),
// after each transport a line `READS transport=shm ucx=N direct=M` (how many UCX reads, warm-up
// included, were direct reads from the server's memory), then a table of the ratios.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"math/rand"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/swucx/swucx/go/seaweed"
	"github.com/swucx/swucx/go/seaweed/testcluster"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// needle is one fid to read and what it must hold.
type needle struct {
	fid  string
	size int
	crc  uint32
}

// reader reads one needle into dst.
type reader func(ctx context.Context, n needle, dst []byte) (int, error)

// figures are one round's measurements.
type figures struct {
	reads               int
	p50, p99, gbps, cpu float64
}

func main() {
	server := flag.String("server", "", "the swucx server, IP:PORT")
	httpURL := flag.String("http", "", "the weed volume server, http://HOST:PORT")
	fidsFile := flag.String("fids", "", `needles to read, "fid size crc32c-hex" per line`)
	transport := flag.String("transport", "", "UCX transports for the client: shm or tcp (default: UCX's choice; with --cluster: both, one after the other)")
	concList := flag.String("concurrency", "1,16", "reader counts, comma-separated")
	duration := flag.Duration("duration", time.Second, "length of one round of one path")
	rounds := flag.Int("rounds", 3, "rounds per path (alternating ucx, http)")
	ucxPID := flag.Int("ucx-pid", 0, "PID of the swucx server, for its CPU time")
	httpPID := flag.Int("http-pid", 0, "PID of weed volume, for its CPU time")
	cluster := flag.Bool("cluster", false, "start weed and swucx serve on 127.0.0.1 and measure shm and tcp")
	sizes := flag.String("sizes", "4096,65536,1048576", "needle sizes uploaded with --cluster")
	quick := flag.Bool("quick", false, "with --cluster: one short round (the demo)")
	svg := flag.String("svg", "", "also draw the results as an SVG chart into this file")
	conns := flag.Int("conns", 1, "UCX connections from the client to the server (the client's ConnsPerServer)")
	engines := flag.Int("engines", 1, "UCX workers of the client (its Engines)")
	serveThreads := flag.Int("serve-threads", 1, "with --cluster: threads of swucx serve (its --threads)")
	flag.Parse()
	concs, err := ints(*concList)
	if err != nil {
		fail(err)
	}
	var results []result
	if *cluster {
		if *quick {
			*rounds, *duration = 1, 300*time.Millisecond
		}
		sz, err := ints(*sizes)
		if err != nil {
			fail(err)
		}
		transports := []string{"shm", "tcp"}
		if *transport != "" {
			transports = []string{*transport}
		}
		results, err = runCluster(sz, transports, concs, *duration, *rounds, client{*conns, *engines}, *serveThreads)
		if err != nil {
			fail(err)
		}
	} else {
		if *server == "" || *httpURL == "" || *fidsFile == "" {
			fail(errors.New("need --server, --http and --fids (or --cluster)"))
		}
		needles, err := readFids(*fidsFile)
		if err != nil {
			fail(err)
		}
		b := bench{server: *server, http: strings.TrimSuffix(*httpURL, "/"), ucxPID: *ucxPID, httpPID: *httpPID,
			duration: *duration, rounds: *rounds, client: client{*conns, *engines}}
		results, err = b.run(needles, []string{*transport}, concs)
		if err != nil {
			fail(err)
		}
	}
	printTable(results)
	if *svg != "" {
		if err := os.WriteFile(*svg, []byte(chart(results)), 0o644); err != nil {
			fail(err)
		}
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "bench-read:", err)
	os.Exit(1)
}

func ints(list string) ([]int, error) {
	var out []int
	for _, s := range strings.Split(list, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("bad number %q in %q", s, list)
		}
		out = append(out, n)
	}
	return out, nil
}

func readFids(path string) ([]needle, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []needle
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		if len(fields) != 3 {
			return nil, fmt.Errorf("%s: want \"fid size crc32c\", got %q", path, sc.Text())
		}
		size, err1 := strconv.Atoi(fields[1])
		crc, err2 := strconv.ParseUint(fields[2], 16, 32)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("%s: bad line %q", path, sc.Text())
		}
		out = append(out, needle{fields[0], size, uint32(crc)})
	}
	return out, sc.Err()
}

// runCluster starts weed and swucx serve, uploads 32 needles of each size and measures them over
// each of transports.
func runCluster(sizes []int, transports []string, concs []int, duration time.Duration, rounds int, cl client, serveThreads int) ([]result, error) {
	c, err := testcluster.Start(testcluster.Options{ServerArgs: []string{"--threads", strconv.Itoa(serveThreads)}})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	var needles []needle
	rng := rand.New(rand.NewSource(1))
	for _, size := range sizes {
		for i := 0; i < 32; i++ {
			data := make([]byte, size)
			rng.Read(data)
			fid, err := c.Upload(fmt.Sprintf("n%d-%d.bin", size, i), data)
			if err != nil {
				return nil, err
			}
			needles = append(needles, needle{fid, size, crc32.Checksum(data, castagnoli)})
		}
	}
	fmt.Printf("cluster: weed volume %s (pid %d), swucx serve %s (pid %d), %d needles\n",
		c.VolumeServer, c.VolumePID(), c.UCXAddr, c.ServerPID(), len(needles))
	b := bench{server: c.UCXAddr, http: "http://" + c.VolumeServer, ucxPID: c.ServerPID(), httpPID: c.VolumePID(),
		duration: duration, rounds: rounds, client: cl}
	out, err := b.run(needles, transports, concs)
	if err != nil {
		return nil, err
	}
	// The server's own count (its Prometheus metrics) must agree with the clients'.
	served, err := c.ServerMetric(`swucx_serve_replies_total{status="ok"}`)
	if err != nil {
		return nil, err
	}
	bytesServed, err := c.ServerMetric("swucx_serve_payload_bytes_total")
	if err != nil {
		return nil, err
	}
	fmt.Printf("SERVER metrics=%s reads_ok=%.0f payload_gb=%.3f clients_ucx_reads=%d\n",
		c.MetricsURL, served, bytesServed/1e9, b.ucxReads)
	if uint64(served) != b.ucxReads {
		return nil, fmt.Errorf("swucx serve counted %.0f reads, its clients %d", served, b.ucxReads)
	}
	return out, nil
}

// bench measures one server pair.
type bench struct {
	server, http    string
	ucxPID, httpPID int
	duration        time.Duration
	rounds          int
	client          client
	// ucxReads counts the reads the swucx clients made over UCX, every transport together.
	ucxReads uint64
}

// client is how the UCX client spreads its reads: connections to the server, and workers.
type client struct{ conns, engines int }

// result is the median figures of one (path, transport, size, concurrency).
type result struct {
	path, transport string
	size, conc      int
	figures
}

func (b *bench) run(needles []needle, transports []string, concs []int) ([]result, error) {
	bySize := map[int][]needle{}
	var sizes []int
	for _, n := range needles {
		if bySize[n.size] == nil {
			sizes = append(sizes, n.size)
		}
		bySize[n.size] = append(bySize[n.size], n)
	}
	sort.Ints(sizes)
	maxConc := 1
	for _, c := range concs {
		maxConc = max(maxConc, c)
	}
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: maxConc, DisableCompression: true}}
	httpRead := func(ctx context.Context, n needle, dst []byte) (int, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.http+"/"+n.fid, nil)
		if err != nil {
			return 0, err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return 0, fmt.Errorf("GET %s: %s", n.fid, resp.Status)
		}
		k, err := io.ReadFull(resp.Body, dst)
		if err == io.ErrUnexpectedEOF {
			err = nil
		}
		return k, err
	}
	var out []result
	for _, transport := range transports {
		var settings map[string]string
		switch transport {
		case "shm":
			settings = map[string]string{"TLS": "posix,sysv,cma,tcp,self"}
		case "tcp":
			settings = map[string]string{"TLS": "tcp"}
		}
		cl, err := seaweed.NewClient(seaweed.Options{
			Settings: settings, NoFallback: true, MaxInFlight: maxConc,
			ConnsPerServer: b.client.conns, Engines: b.client.engines,
			UCXAddress: func(string) (string, error) { return b.server, nil },
		})
		if err != nil {
			return nil, err
		}
		volume := strings.TrimPrefix(b.http, "http://")
		ucxRead := func(ctx context.Context, n needle, dst []byte) (int, error) {
			return cl.ReadNeedle(ctx, volume, n.fid, 0, dst, "")
		}
		// Warm up (connections, page cache) outside the measured rounds: every needle once per
		// path, checked.
		for _, size := range sizes {
			for _, read := range []reader{ucxRead, httpRead} {
				if err := each(read, bySize[size]); err != nil {
					cl.Close()
					return nil, fmt.Errorf("warm-up: %w", err)
				}
			}
		}
		for _, size := range sizes {
			for _, conc := range concs {
				var ucxRounds, httpRounds []figures
				for r := 0; r < b.rounds; r++ {
					f, err := b.round(ucxRead, b.ucxPID, bySize[size], conc)
					if err != nil {
						cl.Close()
						return nil, fmt.Errorf("ucx %s size %d conc %d: %w", transport, size, conc, err)
					}
					ucxRounds = append(ucxRounds, f)
					if f, err = b.round(httpRead, b.httpPID, bySize[size], conc); err != nil {
						cl.Close()
						return nil, fmt.Errorf("http size %d conc %d: %w", size, conc, err)
					}
					httpRounds = append(httpRounds, f)
				}
				for _, r := range []result{{"ucx", transport, size, conc, median(ucxRounds)}, {"http", transport, size, conc, median(httpRounds)}} {
					out = append(out, r)
					fmt.Printf("RESULT path=%s transport=%s size=%d conc=%d reads=%d lat_us_p50=%.2f lat_us_p99=%.2f gbps=%.3f server_cpu_us_per_read=%s\n",
						r.path, orDash(r.transport), r.size, r.conc, r.reads, r.p50, r.p99, r.gbps, cpuText(r.cpu))
				}
			}
		}
		st := cl.Stats()
		cl.Close()
		if st.HTTP != 0 || st.Failed != 0 {
			return nil, fmt.Errorf("the swucx client fell back or failed: %+v", st)
		}
		// Direct reads (same host, payloads of 8 KiB and more): how many UCX reads were.
		fmt.Printf("READS transport=%s ucx=%d direct=%d\n", orDash(transport), st.UCX, st.Direct)
		b.ucxReads += st.UCX
	}
	return out, nil
}

// each reads every needle once and checks it.
func each(read reader, needles []needle) error {
	dst := make([]byte, needles[0].size)
	for _, n := range needles {
		if err := check(read, n, dst); err != nil {
			return err
		}
	}
	return nil
}

// check reads n into dst and verifies its length and CRC.
func check(read reader, n needle, dst []byte) error {
	k, err := read(context.Background(), n, dst)
	if err == nil && (k != n.size || crc32.Checksum(dst[:k], castagnoli) != n.crc) {
		err = fmt.Errorf("%s: %d bytes read, CRC mismatch or short read", n.fid, k)
	}
	return err
}

// round runs conc readers for b.duration, each reading random needles of one size and checking
// every byte's CRC.
func (b *bench) round(read reader, pid int, needles []needle, conc int) (figures, error) {
	cpu0 := cpuTime(pid)
	start := time.Now()
	end := start.Add(b.duration)
	var (
		mu    sync.Mutex
		lats  []time.Duration
		bytes int64
		first error
		wg    sync.WaitGroup
	)
	for g := 0; g < conc; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			rng := rand.New(rand.NewSource(int64(g)))
			dst := make([]byte, needles[0].size)
			var mine []time.Duration
			var moved int64
			var err error
			for time.Now().Before(end) {
				n := needles[rng.Intn(len(needles))]
				t0 := time.Now()
				err = check(read, n, dst)
				mine = append(mine, time.Since(t0))
				if err != nil {
					break
				}
				moved += int64(n.size)
			}
			mu.Lock()
			lats = append(lats, mine...)
			bytes += moved
			if first == nil {
				first = err
			}
			mu.Unlock()
		}(g)
	}
	wg.Wait()
	elapsed := time.Since(start)
	if first != nil {
		return figures{}, first
	}
	if len(lats) == 0 {
		return figures{}, errors.New("no read finished in the round")
	}
	sort.Slice(lats, func(i, j int) bool { return lats[i] < lats[j] })
	us := func(q float64) float64 { return float64(lats[int(q*float64(len(lats)-1))]) / 1e3 }
	f := figures{reads: len(lats), p50: us(0.5), p99: us(0.99), gbps: float64(bytes) / elapsed.Seconds() / 1e9, cpu: -1}
	if cpu1 := cpuTime(pid); cpu0 >= 0 && cpu1 >= 0 {
		f.cpu = float64(cpu1-cpu0) / float64(len(lats))
	}
	return f, nil
}

// cpuTime is a process's user+system CPU time in microseconds (-1 if unknown).
func cpuTime(pid int) int64 {
	if pid <= 0 {
		return -1
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return -1
	}
	// Fields after the command name (which may hold spaces) start after the last ')'.
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 13 {
		return -1
	}
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	const ticksPerSecond = 100 // USER_HZ on Linux
	return (utime + stime) * 1e6 / ticksPerSecond
}

// median takes each figure's median over the rounds.
func median(rounds []figures) figures {
	pick := func(get func(figures) float64) float64 {
		v := make([]float64, len(rounds))
		for i, r := range rounds {
			v[i] = get(r)
		}
		sort.Float64s(v)
		return v[len(v)/2]
	}
	reads := 0
	for _, r := range rounds {
		reads += r.reads
	}
	return figures{
		reads: reads,
		p50:   pick(func(f figures) float64 { return f.p50 }),
		p99:   pick(func(f figures) float64 { return f.p99 }),
		gbps:  pick(func(f figures) float64 { return f.gbps }),
		cpu:   pick(func(f figures) float64 { return f.cpu }),
	}
}

func cpuText(v float64) string {
	if v < 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f", v)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// printTable prints UCX next to HTTP for every cell, with the ratios.
func printTable(results []result) {
	fmt.Println()
	fmt.Println("| transport | size | readers | UCX p50 us | HTTP p50 us | p50 HTTP/UCX | UCX GB/s | HTTP GB/s | GB/s UCX/HTTP | server CPU us/read UCX | HTTP |")
	fmt.Println("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for i := 0; i+1 < len(results); i += 2 {
		u, h := results[i], results[i+1]
		fmt.Printf("| %s | %s | %d | %.1f | %.1f | %.1fx | %.3f | %.3f | %.2fx | %s | %s |\n",
			orDash(u.transport), sizeText(u.size), u.conc, u.p50, h.p50, h.p50/u.p50, u.gbps, h.gbps, u.gbps/h.gbps,
			cpuText(u.cpu), cpuText(h.cpu))
	}
}

func sizeText(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d B", n)
}

// chart draws two bar charts side by side, UCX next to HTTP for every cell: p50 latency (log
// scale, lower is better) and throughput (higher is better).
func chart(results []result) string {
	const cellW, barW, plotH, top, left = 44, 16, 220, 40, 60
	n := len(results) / 2
	panelW := left + n*cellW + 20
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="10">`+"\n", 2*panelW, top+plotH+90)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	panel := func(x0 int, title string, value func(figures) float64, log bool) {
		maxV := 0.0
		for _, r := range results {
			maxV = max(maxV, value(r.figures))
		}
		scale := func(v float64) float64 {
			if log {
				// 1 us .. maxV on a log axis.
				if v <= 1 {
					return 0
				}
				return math.Log10(v) / math.Log10(maxV) * plotH
			}
			return v / maxV * plotH
		}
		fmt.Fprintf(&b, `<text x="%d" y="20" font-size="13">%s</text>`+"\n", x0+left, title)
		fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n", x0+left, top+plotH, x0+left+n*cellW, top+plotH)
		for i := 0; i+1 < len(results); i += 2 {
			x := x0 + left + (i/2)*cellW + 4
			for j, r := range results[i : i+2] {
				h := scale(value(r.figures))
				color := map[string]string{"ucx": "#1f77b4", "http": "#ff7f0e"}[r.path]
				fmt.Fprintf(&b, `<rect x="%d" y="%.1f" width="%d" height="%.1f" fill="%s"><title>%s %s %s x%d: %.3g</title></rect>`+"\n",
					x+j*barW, float64(top+plotH)-h, barW, h, color, r.path, orDash(r.transport), sizeText(r.size), r.conc, value(r.figures))
			}
			u := results[i]
			fmt.Fprintf(&b, `<text x="%d" y="%d" transform="rotate(60 %d %d)">%s %s x%d</text>`+"\n",
				x, top+plotH+12, x, top+plotH+12, orDash(u.transport), sizeText(u.size), u.conc)
		}
		fmt.Fprintf(&b, `<text x="%d" y="%d">max %.3g</text>`+"\n", x0+4, top+8, maxV)
	}
	panel(0, "p50 latency, us (log scale; lower is better)", func(f figures) float64 { return f.p50 }, true)
	panel(panelW, "throughput, GB/s (higher is better)", func(f figures) float64 { return f.gbps }, false)
	fmt.Fprintf(&b, `<rect x="%d" y="%d" width="10" height="10" fill="#1f77b4"/><text x="%d" y="%d">swucx (UCX)</text>`+"\n", left, top+plotH+75, left+14, top+plotH+84)
	fmt.Fprintf(&b, `<rect x="%d" y="%d" width="10" height="10" fill="#ff7f0e"/><text x="%d" y="%d">weed HTTP GET</text>`+"\n", left+110, top+plotH+75, left+124, top+plotH+84)
	b.WriteString("</svg>\n")
	return b.String()
}
