package daemon_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/torpor-dev/torpor/internal/cluster"
	"github.com/torpor-dev/torpor/internal/model"
)

// The cluster tests run a real 3-member etcd cluster (each member a
// process of this test binary running etcd's embed server, so a member can
// be killed with SIGKILL), three real torpor daemons that reach etcd
// through TCP proxies the test can cut (a partition), and, for the tests
// of the snapshot store, a real SeaweedFS S3 gateway.

const etcdMemberEnv = "TORPOR_TEST_ETCD_MEMBER"

// runEtcdMember runs one etcd member until killed (the test binary
// re-executed with etcdMemberEnv set: name,dir,clientURL,peerURL,cluster).
func runEtcdMember(spec string) {
	p := strings.SplitN(spec, ",", 5)
	cfg := embed.NewConfig()
	cfg.Name, cfg.Dir = p[0], p[1]
	cu, _ := url.Parse(p[2])
	pu, _ := url.Parse(p[3])
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	cfg.InitialCluster = strings.ReplaceAll(p[4], ";", ",")
	cfg.InitialClusterToken = "torpor-test"
	cfg.ClusterState = embed.ClusterStateFlagNew
	cfg.LogLevel = "error"
	cfg.TickMs, cfg.ElectionMs = 50, 500
	// No fsync (the members' data is on tmpfs, see startEtcd): on this
	// shared host other tests write and fsync gigabytes of snapshots, and
	// a WAL fsync stuck behind them stalled every lease renewal past the
	// 3 s TTL at once (TestClusterCreateAndRoute, all three hosts fenced).
	// The tests are about torpor's use of etcd, not etcd's durability.
	cfg.UnsafeNoFsync = true
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "etcd member:", err)
		os.Exit(1)
	}
	<-e.Server.ReadyNotify()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-sig:
		e.Close()
	case err := <-e.Err():
		fmt.Fprintln(os.Stderr, "etcd member:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// etcdMember is one member process.
type etcdMember struct {
	spec, clientURL string
	cmd             *exec.Cmd
	done            chan struct{}
	log             string
}

// etcdCluster is a real 3-member etcd cluster on loopback.
type etcdCluster struct {
	t       testing.TB
	members []*etcdMember
	cli     *clientv3.Client
}

func startEtcd(t testing.TB) *etcdCluster {
	t.Helper()
	dir := shmTempDir(t)
	ec := &etcdCluster{t: t}
	var initial []string
	type urls struct{ client, peer string }
	var us []urls
	for i := range 3 {
		u := urls{fmt.Sprintf("http://127.0.0.1:%d", freePort(t)), fmt.Sprintf("http://127.0.0.1:%d", freePort(t))}
		us = append(us, u)
		initial = append(initial, fmt.Sprintf("e%d=%s", i, u.peer))
	}
	for i, u := range us {
		m := &etcdMember{clientURL: u.client, log: filepath.Join(dir, fmt.Sprintf("e%d.log", i)),
			spec: strings.Join([]string{fmt.Sprintf("e%d", i), filepath.Join(dir, fmt.Sprintf("e%d", i)), u.client, u.peer, strings.Join(initial, ";")}, ",")}
		ec.members = append(ec.members, m)
		ec.start(i)
	}
	t.Cleanup(func() {
		if ec.cli != nil {
			ec.cli.Close()
		}
		for i := range ec.members {
			ec.kill(i)
		}
	})
	var err error
	ec.cli, err = clientv3.New(clientv3.Config{Endpoints: ec.urls(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := ec.cli.Put(c, "/test/ready", "1")
		cancel()
		if err == nil {
			return ec
		}
		if time.Now().After(deadline) {
			t.Fatalf("etcd cluster not ready: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// shmTempDir is a temporary directory on /dev/shm (memory), or else the
// test's own.
func shmTempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("/dev/shm", "torpor-etcd-")
	if err != nil {
		return t.TempDir()
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func (ec *etcdCluster) start(i int) {
	m := ec.members[i]
	logf, err := os.OpenFile(m.log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		ec.t.Fatal(err)
	}
	m.cmd = exec.Command(os.Args[0])
	m.cmd.Env = append(os.Environ(), etcdMemberEnv+"="+m.spec)
	m.cmd.Stdout, m.cmd.Stderr = logf, logf
	if err := m.cmd.Start(); err != nil {
		ec.t.Fatal(err)
	}
	logf.Close()
	m.done = make(chan struct{})
	go func() { m.cmd.Wait(); close(m.done) }()
}

// kill kills member i with SIGKILL.
func (ec *etcdCluster) kill(i int) {
	m := ec.members[i]
	if m.cmd == nil {
		return
	}
	m.cmd.Process.Signal(syscall.SIGKILL)
	<-m.done
	m.cmd = nil
}

func (ec *etcdCluster) urls() []string {
	var out []string
	for _, m := range ec.members {
		out = append(out, m.clientURL)
	}
	return out
}

// cutProxy forwards TCP connections to an etcd member until cut: then it
// closes every connection and refuses new ones, as a partition would.
type cutProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	cut    bool
	conns  map[net.Conn]bool
}

func newCutProxy(t testing.TB, target string) *cutProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: strings.TrimPrefix(target, "http://"), conns: map[net.Conn]bool{}}
	t.Cleanup(func() { ln.Close(); p.setCut(true) })
	go p.serve()
	return p
}

func (p *cutProxy) url() string { return "http://" + p.ln.Addr().String() }

func (p *cutProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		go p.handle(c)
	}
}

func (p *cutProxy) handle(c net.Conn) {
	p.mu.Lock()
	if p.cut {
		p.mu.Unlock()
		c.Close()
		return
	}
	p.mu.Unlock()
	u, err := net.Dial("tcp", p.target)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	if p.cut {
		p.mu.Unlock()
		c.Close()
		u.Close()
		return
	}
	p.conns[c], p.conns[u] = true, true
	p.mu.Unlock()
	go func() { io.Copy(u, c); u.Close(); c.Close() }()
	io.Copy(c, u)
	c.Close()
	u.Close()
}

func (p *cutProxy) setCut(cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = cut
	if cut {
		for c := range p.conns {
			c.Close()
		}
		p.conns = map[net.Conn]bool{}
	}
}

// testCluster is etcd, three torpor hosts and (optionally) an S3 store.
type testCluster struct {
	t       testing.TB
	etcd    *etcdCluster
	certs   string
	hosts   []*daemon
	proxies [][]*cutProxy // per host, one per etcd member
	ports   []int         // per host, its advertise port
	ranges  []string      // per host, its machine network
	listens []string      // per host, its TCP API address
	s3      *s3Server
	ttl     time.Duration
}

// clusterRanges are the machine networks of the three hosts of a test
// cluster in slot k: /20s of TORPOR_TEST_CLUSTER_RANGE (a /16, default
// 10.214.0.0/16, apart from the single-host tests' TORPOR_TEST_NETWORK_RANGE),
// three per slot. A cluster holds its slot until its hosts are gone, so two
// clusters never share a range (a daemon refuses a range a live one holds).
func clusterRanges(k int) []string {
	base := envOr("TORPOR_TEST_CLUSTER_RANGE", "10.214.0.0/16")
	ip, _, err := net.ParseCIDR(base)
	if err != nil {
		ip = net.IPv4(10, 214, 0, 0)
	}
	ip = ip.To4()
	var out []string
	for i := range 3 {
		out = append(out, fmt.Sprintf("%d.%d.%d.0/20", ip[0], ip[1], (3*k+i)*16))
	}
	return out
}

// clusterSlots are the free slots (five: fifteen /20s of the /16).
var clusterSlots = func() chan int {
	ch := make(chan int, 5)
	for k := range 5 {
		ch <- k
	}
	return ch
}()

// newTestCluster starts etcd and three hosts h0, h1, h2 (with an S3
// snapshot store if withS3; hostFlags adds serve flags to some hosts).
func newTestCluster(t testing.TB, withS3 bool, hostFlags ...map[int][]string) *testCluster {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
	tc := &testCluster{t: t, ttl: 3 * time.Second}
	slot := <-clusterSlots
	t.Cleanup(func() { clusterSlots <- slot }) // after every host stopped
	tc.ranges = clusterRanges(slot)
	tc.etcd = startEtcd(t)
	tc.certs = t.TempDir()
	if err := cluster.IssueCerts(tc.certs, "h0", "h1", "h2"); err != nil {
		t.Fatal(err)
	}
	if withS3 {
		tc.s3 = startS3(t)
	}
	for range 3 {
		var ps []*cutProxy
		for _, u := range tc.etcd.urls() {
			ps = append(ps, newCutProxy(t, u))
		}
		tc.proxies = append(tc.proxies, ps)
		tc.ports = append(tc.ports, freePort(t))
		tc.listens = append(tc.listens, fmt.Sprintf("127.0.0.1:%d", freePort(t)))
	}
	for i := range 3 {
		var extra []string
		for _, f := range hostFlags {
			extra = append(extra, f[i]...)
		}
		tc.hosts = append(tc.hosts, tc.startHost(i, extra...))
	}
	return tc
}

// hostFlags are host i's serve flags.
func (tc *testCluster) hostFlags(i int, runDir string) []string {
	var eps []string
	for _, p := range tc.proxies[i] {
		eps = append(eps, p.url())
	}
	flags := []string{
		"--cluster-etcd", strings.Join(eps, ","), "--host-id", fmt.Sprintf("h%d", i),
		"--advertise", fmt.Sprintf("127.0.0.1:%d", tc.ports[i]), "--cluster-tls", filepath.Join(tc.certs, fmt.Sprintf("h%d", i)),
		"--cluster-lease-ttl", tc.ttl.String(), "--cluster-cpus", "8", "--cluster-memory-mb", "8192",
		"--network-range", tc.ranges[i], "--proxy-host", fmt.Sprintf("127.0.27.%d", i+1),
		"--run-dir", runDir, "--proxy-check-interval", "500ms", "--listen", tc.listens[i],
	}
	if tc.s3 != nil {
		flags = append(flags, "--snapshot-store", tc.s3.url())
	}
	return flags
}

func (tc *testCluster) startHost(i int, extra ...string) *daemon {
	runDir, err := os.MkdirTemp("/run", "torpor-ct-")
	if err != nil {
		tc.t.Fatal(err)
	}
	tc.t.Cleanup(func() { os.RemoveAll(runDir) })
	return newDaemon(tc.t, append(tc.hostFlags(i, runDir), extra...)...)
}

// restart runs host i's daemon again (same data directory and flags).
func (tc *testCluster) restart(i int) {
	tc.hosts[i].run()
}

// partition cuts (or heals) host i's connections to etcd.
func (tc *testCluster) partition(i int, cut bool) {
	for _, p := range tc.proxies[i] {
		p.setCut(cut)
	}
}

// killHost kills host i as a host death would: the daemon with SIGKILL,
// then every sandbox it ran.
func (tc *testCluster) killHost(i int) {
	tc.hosts[i].crash()
	tc.hosts[i].killSandboxes()
}

// waitHostStatus waits until host id is status ("up" or "down") as host
// from sees it.
func (tc *testCluster) waitHostStatus(from int, id, status string, within time.Duration) {
	tc.t.Helper()
	deadline := time.Now().Add(within)
	for {
		hosts, err := tc.hosts[from].c.ListHosts(ctx(tc.t))
		if err == nil {
			for _, h := range hosts {
				if h.ID == id && h.Status == status {
					return
				}
			}
		}
		if time.Now().After(deadline) {
			tc.t.Fatalf("host %s is not %s after %s: %+v (%v)", id, status, within, hosts, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// owner reads a machine's owner from etcd.
func (tc *testCluster) owner(id string) string {
	tc.t.Helper()
	resp, err := tc.etcd.cli.Get(ctx(tc.t), "/torpor/owners/"+id)
	if err != nil {
		tc.t.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		return ""
	}
	return string(resp.Kvs[0].Value)
}

// snapRecord reads a snapshot's cluster record from etcd.
func (tc *testCluster) snapRecord(machine, snap string) map[string]any {
	tc.t.Helper()
	resp, err := tc.etcd.cli.Get(ctx(tc.t), "/torpor/snapshots/"+machine+"/"+snap)
	if err != nil || len(resp.Kvs) == 0 {
		return nil
	}
	var rec map[string]any
	json.Unmarshal(resp.Kvs[0].Value, &rec)
	return rec
}

// waitMachine waits until host from sees machine id of app in state want
// (and, if host is set, owned by host).
func (tc *testCluster) waitMachine(from int, app, id string, want model.State, host string, within time.Duration) model.Machine {
	tc.t.Helper()
	deadline := time.Now().Add(within)
	for {
		m, err := tc.hosts[from].c.GetMachine(ctx(tc.t), app, id)
		if err == nil && m.State == want && (host == "" || m.Host == host) {
			return m
		}
		if time.Now().After(deadline) {
			tc.t.Fatalf("machine %s is not %s on %q after %s: %s on %q (%v)", id, want, host, within, m.State, m.Host, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// s3Server is a SeaweedFS server with its S3 gateway.
type s3Server struct {
	cmd       *exec.Cmd
	port      int
	key, pass string
	bucket    string
}

var weedPath = envOr("TORPOR_WEED", "/var/cache/torpor/bin/weed")

func startS3(t testing.TB) *s3Server {
	t.Helper()
	if _, err := os.Stat(weedPath); err != nil {
		if os.Getenv("TORPOR_INTEGRATION") == "1" {
			t.Fatalf("no SeaweedFS at %s (scripts/install-seaweedfs.sh)", weedPath)
		}
		t.Skipf("no SeaweedFS at %s (scripts/install-seaweedfs.sh)", weedPath)
	}
	dir := t.TempDir()
	s := &s3Server{port: freePort(t), key: "torpor-test", pass: "torpor-test-secret", bucket: "torpor-snapshots"}
	// The daemons take the credentials from their environment, which is
	// this process's (the same for every test).
	os.Setenv("AWS_ACCESS_KEY_ID", s.key)
	os.Setenv("AWS_SECRET_ACCESS_KEY", s.pass)
	conf := fmt.Sprintf(`{"identities":[{"name":"torpor","credentials":[{"accessKey":%q,"secretKey":%q}],"actions":["Admin","Read","Write","List","Tagging"]}]}`, s.key, s.pass)
	confPath := filepath.Join(dir, "s3.json")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "weed.log"))
	if err != nil {
		t.Fatal(err)
	}
	// Every port the server opens is named, from freeport: left out, a gRPC
	// port is its HTTP port + 10000, which lands in the ephemeral range, where
	// CI's client connections took one ("master failed to listen on grpc port
	// 37614: bind: address already in use", TestClusterPartition, 2026-12-07).
	args := []string{"server", "-dir=" + dir, "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
		"-s3", fmt.Sprintf("-s3.port=%d", s.port), "-s3.config=" + confPath,
		"-volume.max=4", "-master.volumeSizeLimitMB=1024", "-master.telemetry=false"}
	for _, flag := range []string{"master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
		"filer.port", "filer.port.grpc", "s3.port.grpc"} {
		args = append(args, fmt.Sprintf("-%s=%d", flag, freePort(t)))
	}
	s.cmd = exec.Command(weedPath, args...)
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	logf.Close()
	t.Cleanup(func() { s.cmd.Process.Kill(); s.cmd.Wait() })
	deadline := time.Now().Add(60 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", s.port), time.Second)
		if err == nil {
			c.Close()
			return s
		}
		if time.Now().After(deadline) {
			data, _ := os.ReadFile(filepath.Join(dir, "weed.log"))
			t.Fatalf("SeaweedFS S3 not up: %v\n%s", err, data)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (s *s3Server) url() string {
	return fmt.Sprintf("s3://%s/t?endpoint=127.0.0.1:%d&secure=false&region=us-east-1", s.bucket, s.port)
}
