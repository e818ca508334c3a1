// Package testcluster starts a throwaway SeaweedFS cluster on 127.0.0.1 — a real `weed master`
// and `weed volume` with data in a temporary directory — and `swucx serve` on the volume
// directory, for tests, the demo and the needle-read benchmark. It stops only the processes it
// started, by PID.
package testcluster

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"net/textproto"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Options configure Start. Empty paths are looked up relative to the repository (the
// project-local venv's weed, target/release/swucx) or through $SWUCX_WEED / $SWUCX_BIN.
type Options struct {
	// Weed is the weed binary.
	Weed string
	// Swucx is the swucx binary (for `swucx serve`).
	Swucx string
	// Repo is the repository root used to find the binaries (default: found from the working
	// directory upwards).
	Repo string
	// NoServer skips starting `swucx serve`.
	NoServer bool
	// ServerEnv is added to `swucx serve`'s environment (e.g. "UCX_TLS=tcp").
	ServerEnv []string
	// ServerArgs are added to `swucx serve`'s arguments (e.g. "--threads", "2").
	ServerArgs []string
	// ServerDir is the directory `swucx serve` serves (default: VolumeDir, weed's). Another
	// one stands for volumes the server does not hold (on a disk it was not given).
	ServerDir string
}

// Cluster is a running weed master + volume and, usually, a swucx server.
type Cluster struct {
	// Dir is the temporary directory holding everything (removed by Close).
	Dir string
	// VolumeDir is `weed volume -dir`.
	VolumeDir string
	// MasterPort and VolumePort are weed's HTTP ports (gRPC at +10000).
	MasterPort, VolumePort int
	// VolumeServer is the volume server's HTTP address, "127.0.0.1:port".
	VolumeServer string
	// UCXAddr is where the swucx server listens: the volume port + 20000 (the client's default
	// rule).
	UCXAddr string
	// MetricsURL is the swucx server's Prometheus endpoint (`--metrics-listen` on a port it
	// picked), set by StartServer.
	MetricsURL string

	weed, swucx string
	serverDir   string
	serverEnv   []string
	serverArgs  []string
	master      *exec.Cmd
	volume      *exec.Cmd
	server      *exec.Cmd
}

// Start starts weed master and volume, waits until the master assigns file ids, and starts
// `swucx serve` unless opts.NoServer.
func Start(opts Options) (*Cluster, error) {
	weed, swucx, err := binaries(opts)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "swucx-cluster-")
	if err != nil {
		return nil, err
	}
	c := &Cluster{Dir: dir, VolumeDir: filepath.Join(dir, "v"), weed: weed, swucx: swucx, serverDir: opts.ServerDir,
		serverEnv: opts.ServerEnv, serverArgs: opts.ServerArgs}
	if c.serverDir == "" {
		c.serverDir = c.VolumeDir
	}
	if err := c.start(opts); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func (c *Cluster) start(opts Options) error {
	// A port found free can be taken before weed binds it (another test's connection gets it
	// as its local port): weed then exits, and the cluster starts again on other ports.
	for attempt := 1; ; attempt++ {
		err := c.startWeed()
		if err == nil {
			break
		}
		if !errors.Is(err, errPortTaken) || attempt == 5 {
			return err
		}
		c.stopWeed()
	}
	if opts.NoServer {
		return nil
	}
	return c.StartServer()
}

// errPortTaken: weed could not bind a port it was given.
var errPortTaken = errors.New("testcluster: a port was taken before weed bound it")

// startWeed starts weed master and volume on free ports, with empty data directories, and
// waits until the master assigns file ids.
func (c *Cluster) startWeed() error {
	mdir := filepath.Join(c.Dir, "m")
	for _, d := range []string{mdir, c.VolumeDir} {
		if err := os.RemoveAll(d); err != nil {
			return err
		}
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	var err error
	if c.MasterPort, err = freePorts(nil, 10000); err != nil {
		return err
	}
	if c.VolumePort, err = freePorts([]int{c.MasterPort, c.MasterPort + 10000}, 10000, 20000); err != nil {
		return err
	}
	c.VolumeServer = fmt.Sprintf("127.0.0.1:%d", c.VolumePort)
	c.UCXAddr = fmt.Sprintf("127.0.0.1:%d", c.VolumePort+20000)
	mp, vp := c.MasterPort, c.VolumePort
	if c.master, err = c.spawn("master", c.weed, nil, "master", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
		fmt.Sprintf("-port=%d", mp), fmt.Sprintf("-port.grpc=%d", mp+10000), "-mdir="+mdir,
		"-peers=none", "-volumeSizeLimitMB=256", "-defaultReplication=000"); err != nil {
		return err
	}
	if c.volume, err = c.spawn("volume", c.weed, nil, "volume", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
		fmt.Sprintf("-port=%d", vp), fmt.Sprintf("-port.grpc=%d", vp+10000), "-dir="+c.VolumeDir,
		fmt.Sprintf("-mserver=127.0.0.1:%d", mp), "-max=8"); err != nil {
		return err
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := c.Assign(); err == nil {
			return nil
		}
		for _, name := range []string{"master", "volume"} {
			if bytes.Contains(c.log(name), []byte("address already in use")) {
				return fmt.Errorf("%w: %s log:\n%s", errPortTaken, name, c.log(name))
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("weed did not become ready in 60 s; volume log:\n%s", c.log("volume"))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// stopWeed kills weed master and volume (those running) and reaps them.
func (c *Cluster) stopWeed() {
	for _, p := range []*exec.Cmd{c.volume, c.master} {
		if p != nil {
			p.Process.Signal(syscall.SIGKILL)
			p.Wait()
		}
	}
	c.volume, c.master = nil, nil
}

// StartServer starts `swucx serve --dir ServerDir --listen UCXAddr --metrics-listen
// 127.0.0.1:0 [ServerArgs...]` and waits until it listens.
func (c *Cluster) StartServer() error {
	if c.server != nil {
		return errors.New("testcluster: swucx serve is already running")
	}
	// A restarted server must bind its port again while the old connections linger.
	env := append([]string{"RUST_LOG=info", "UCX_CM_REUSEADDR=y"}, c.serverEnv...)
	args := append([]string{"serve", "--dir", c.serverDir, "--listen", c.UCXAddr,
		"--metrics-listen", "127.0.0.1:0"}, c.serverArgs...)
	cmd, err := c.spawn("swucx-serve", c.swucx, env, args...)
	if err != nil {
		return err
	}
	c.server = cmd
	deadline := time.Now().Add(30 * time.Second)
	for !bytes.Contains(c.log("swucx-serve"), []byte("listening on")) {
		if time.Now().After(deadline) {
			return fmt.Errorf("swucx serve did not start listening in 30 s:\n%s", c.log("swucx-serve"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	// "... metrics on http://127.0.0.1:PORT/metrics" on the listening line.
	banner := c.log("swucx-serve")
	at := bytes.LastIndex(banner, []byte("metrics on "))
	if at < 0 {
		return fmt.Errorf("swucx serve printed no metrics address:\n%s", banner)
	}
	c.MetricsURL = strings.Fields(string(banner[at+len("metrics on "):]))[0]
	return nil
}

// ServerMetric is the value of one sample of the swucx server's metrics, named as exported,
// e.g. `swucx_serve_replies_total{status="ok"}` (README.md, "Metrics").
func (c *Cluster) ServerMetric(sample string) (float64, error) {
	resp, err := http.Get(c.MetricsURL)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(body), "\n") {
		if value, ok := strings.CutPrefix(line, sample+" "); ok {
			return strconv.ParseFloat(value, 64)
		}
	}
	return 0, fmt.Errorf("%s: no sample %s in:\n%s", c.MetricsURL, sample, body)
}

// KillServer kills `swucx serve` with SIGKILL (a crash, for fault tests) and reaps it.
func (c *Cluster) KillServer() {
	if c.server != nil {
		c.server.Process.Signal(syscall.SIGKILL)
		c.server.Wait()
		c.server = nil
	}
}

// ServerPID is the PID of `swucx serve` (0 when not running).
func (c *Cluster) ServerPID() int {
	if c.server == nil {
		return 0
	}
	return c.server.Process.Pid
}

// Close stops every process it started and removes Dir.
func (c *Cluster) Close() {
	c.KillServer()
	c.stopWeed()
	os.RemoveAll(c.Dir)
}

// Assign asks the master for a new file id.
func (c *Cluster) Assign() (string, error) {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/dir/assign", c.MasterPort))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var a struct {
		Fid   string `json:"fid"`
		Error string `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
		return "", err
	}
	if a.Fid == "" {
		return "", fmt.Errorf("assign: %s", a.Error)
	}
	return a.Fid, nil
}

// Upload assigns a file id and uploads data under it (a multipart form file, as weed's clients
// do); it returns the file id.
func (c *Cluster) Upload(name string, data []byte) (string, error) {
	fid, err := c.Assign()
	if err != nil {
		return "", err
	}
	var body bytes.Buffer
	w := multipart.NewWriter(&body)
	h := textproto.MIMEHeader{}
	h.Set("Content-Disposition", fmt.Sprintf(`form-data; name="file"; filename=%q`, name))
	h.Set("Content-Type", "application/octet-stream")
	part, err := w.CreatePart(h)
	if err != nil {
		return "", err
	}
	part.Write(data)
	w.Close()
	resp, err := http.Post("http://"+c.VolumeServer+"/"+fid, w.FormDataContentType(), &body)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(resp.Body)
		return "", fmt.Errorf("upload %s: %s %s", fid, resp.Status, msg)
	}
	return fid, nil
}

// Delete deletes a file id.
func (c *Cluster) Delete(fid string) error {
	req, _ := http.NewRequest(http.MethodDelete, "http://"+c.VolumeServer+"/"+fid, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted && resp.StatusCode != http.StatusOK {
		return fmt.Errorf("delete %s: %s", fid, resp.Status)
	}
	return nil
}

// VolumePID is the PID of `weed volume`.
func (c *Cluster) VolumePID() int { return c.volume.Process.Pid }

func (c *Cluster) spawn(name, bin string, env []string, args ...string) (*exec.Cmd, error) {
	f, err := os.Create(filepath.Join(c.Dir, name+".log"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cmd := exec.Command(bin, args...)
	cmd.Dir = c.Dir
	// No security.toml from the user's home: reads are unauthenticated here.
	cmd.Env = append(append(os.Environ(), "HOME="+c.Dir), env...)
	cmd.Stdout, cmd.Stderr = f, f
	// Killed with us if we die without Close (a panic, a signal).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	return cmd, nil
}

func (c *Cluster) log(name string) []byte {
	b, _ := os.ReadFile(filepath.Join(c.Dir, name+".log"))
	return b
}

// Log returns what a process ("master", "volume", "swucx-serve") wrote so far.
func (c *Cluster) Log(name string) string { return string(c.log(name)) }

// WaitLog waits up to d for a process's log to contain s and returns the log and whether it
// does: a process writes a line a moment after a client may see what it tells (a rejected
// connection's client can be reading over HTTP before the server logged the rejection).
func (c *Cluster) WaitLog(name, s string, d time.Duration) (string, bool) {
	deadline := time.Now().Add(d)
	for {
		log := c.Log(name)
		if strings.Contains(log, s) || time.Now().After(deadline) {
			return log, strings.Contains(log, s)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// freePorts finds a port p such that p and p+each offset are free on 127.0.0.1 and not in
// avoid.
func freePorts(avoid []int, offsets ...int) (int, error) {
	taken := func(p int) bool {
		for _, a := range avoid {
			if a == p {
				return true
			}
		}
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			return true
		}
		l.Close()
		return false
	}
	for i := 0; i < 500; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		p := l.Addr().(*net.TCPAddr).Port
		l.Close()
		ok := p+offsets[len(offsets)-1] <= 65535 && !taken(p)
		for _, o := range offsets {
			ok = ok && !taken(p+o)
		}
		if ok {
			return p, nil
		}
	}
	return 0, errors.New("testcluster: no free port set")
}

// binaries finds weed and swucx.
func binaries(opts Options) (weed, swucx string, err error) {
	repo := opts.Repo
	if repo == "" {
		wd, _ := os.Getwd()
		for d := wd; ; d = filepath.Dir(d) {
			if _, err := os.Stat(filepath.Join(d, "Cargo.toml")); err == nil {
				repo = d
				break
			}
			if filepath.Dir(d) == d {
				break
			}
		}
	}
	pick := func(given, env, rel string) string {
		switch {
		case given != "":
			return given
		case os.Getenv(env) != "":
			return os.Getenv(env)
		default:
			return filepath.Join(repo, rel)
		}
	}
	weed = pick(opts.Weed, "SWUCX_WEED", ".venv/bin/weed")
	swucx = pick(opts.Swucx, "SWUCX_BIN", "target/release/swucx")
	for _, b := range []string{weed, swucx} {
		if _, err := os.Stat(b); err != nil {
			return "", "", fmt.Errorf("testcluster: %s not found (run `make deps` and `cargo build --release --bins`, or set $SWUCX_WEED / $SWUCX_BIN): %w", b, err)
		}
	}
	return weed, swucx, nil
}
