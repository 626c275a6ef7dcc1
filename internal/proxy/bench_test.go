package proxy

import (
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/torpor-dev/torpor/internal/model"
)

// BenchmarkProxyOverhead measures, in one run, a warm machine reached
// directly and through the proxy: sequential latency (p50, p99, requests
// interleaved so both see the same machine load) and throughput with 8
// concurrent clients. It reports both and their ratios.
//
//	go test -run '^$' -bench ProxyOverhead -benchtime 5000x ./internal/proxy/
func BenchmarkProxyOverhead(b *testing.B) {
	f := newFleet(b)
	hp := freePort(b)
	fm := f.add("app1", "m1", model.StateStarted, false, service(hp, withLimits(1000, 0)))
	startProxy(b, f, Config{RefreshInterval: time.Hour})
	c := client(b)
	direct, proxied := "http://"+fm.addr+"/", at(hp, "/")
	for range 100 { // warm up both paths and their connection pools
		fetch(b, c, direct)
		fetch(b, c, proxied)
	}

	b.ResetTimer()
	dl := make([]time.Duration, 0, b.N)
	pl := make([]time.Duration, 0, b.N)
	for range b.N {
		dl = append(dl, timed(b, c, direct))
		pl = append(pl, timed(b, c, proxied))
	}
	const workers = 8
	drate := throughput(b, c, direct, b.N, workers)
	prate := throughput(b, c, proxied, b.N, workers)
	b.StopTimer()

	dp50, dp99 := percentile(dl, 50), percentile(dl, 99)
	pp50, pp99 := percentile(pl, 50), percentile(pl, 99)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(us(dp50), "direct-p50-us")
	b.ReportMetric(us(dp99), "direct-p99-us")
	b.ReportMetric(us(pp50), "proxy-p50-us")
	b.ReportMetric(us(pp99), "proxy-p99-us")
	b.ReportMetric(float64(pp50)/float64(dp50), "p50-ratio")
	b.ReportMetric(float64(pp99)/float64(dp99), "p99-ratio")
	b.ReportMetric(drate, "direct-req/s")
	b.ReportMetric(prate, "proxy-req/s")
	b.ReportMetric(prate/drate, "throughput-ratio")
}

// fetch GETs url and reads the answer; failures are reported with b.Error
// (it runs on worker goroutines too).
func fetch(b *testing.B, c *http.Client, url string) bool {
	resp, err := c.Get(url)
	if err != nil {
		b.Error(err)
		return false
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		b.Errorf("GET %s: %d", url, resp.StatusCode)
		return false
	}
	return true
}

func timed(b *testing.B, c *http.Client, url string) time.Duration {
	start := time.Now()
	fetch(b, c, url)
	return time.Since(start)
}

// throughput runs n requests on workers concurrent clients and returns
// requests per second.
func throughput(b *testing.B, c *http.Client, url string, n, workers int) float64 {
	var left atomic.Int64
	left.Store(int64(n))
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for left.Add(-1) >= 0 && fetch(b, c, url) {
			}
		}()
	}
	wg.Wait()
	return float64(n) / time.Since(start).Seconds()
}

func percentile(ds []time.Duration, p int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[(len(s)-1)*p/100]
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// BenchmarkTCPCopy measures, side by side in one run, raw TCP throughput
// through the proxy's copy loop (a 32 KiB buffer, idle deadlines, two
// descriptors per connection) and through io.Copy between TCP connections
// (splice(2), which keeps a pipe pair per direction in a pool after the
// connection ends). It reports both rates and their ratio.
//
//	go test -run '^$' -bench TCPCopy ./internal/proxy/
func BenchmarkTCPCopy(b *testing.B) {
	const size = 64 << 20
	rate := func(cp func(dst, src net.Conn)) float64 {
		src, dstIn := tcpPair(b)
		dstOut, sink := tcpPair(b)
		go cp(dstOut, dstIn)
		go func() {
			buf := make([]byte, 1<<20)
			for sent := 0; sent < size; sent += len(buf) {
				src.Write(buf)
			}
			src.Close()
		}()
		begin := time.Now()
		n, _ := io.Copy(io.Discard, sink)
		if n != size {
			b.Fatalf("copied %d of %d bytes", n, size)
		}
		return float64(n) / time.Since(begin).Seconds() / (1 << 20)
	}
	var buffered, spliced []float64
	b.ResetTimer()
	for range b.N {
		var last atomic.Int64
		buffered = append(buffered, rate(func(dst, src net.Conn) {
			last.Store(time.Now().UnixNano())
			pipe(dst, src, time.Minute, &last)
		}))
		spliced = append(spliced, rate(func(dst, src net.Conn) { io.Copy(dst, src); dst.Close() }))
	}
	b.StopTimer()
	slices.Sort(buffered)
	slices.Sort(spliced)
	bm, sm := buffered[len(buffered)/2], spliced[len(spliced)/2]
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(bm, "buffered-MiB/s")
	b.ReportMetric(sm, "splice-MiB/s")
	b.ReportMetric(bm/sm, "ratio")
}

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(b *testing.B) (net.Conn, net.Conn) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close(); s.Close() })
	return c, s
}
