package daemon_test

import (
	"fmt"
	"io"
	"net/http"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/torpor-dev/torpor/internal/model"
)

// The benchmarks run on the real runsc, like the integration tests:
//
//	go test -run '^$' -bench . -benchtime 200x ./internal/daemon/
//
// (scripts/bench.sh). They report milliseconds and microseconds as metrics;
// none of them asserts a time.

// BenchmarkProxyOverhead compares requests to a warm machine sent directly
// to its private address with the same requests sent through the proxy, in
// one run: latency percentiles one request at a time, and throughput with
// eight concurrent clients.
func BenchmarkProxyOverhead(b *testing.B) {
	d := newDaemon(b)
	port := freePort(b)
	m := d.create(serviceConfig(port, []string{"http"}, model.AutostopOff, 0))
	waitProxy(b, port)
	direct := "http://" + m.PrivateIP + ":8080/"
	proxied := fmt.Sprintf("http://127.0.0.1:%d/", port)
	client := &http.Client{Timeout: time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}

	var directLat, proxyLat []time.Duration
	for b.Loop() {
		directLat = append(directLat, timeGet(b, client, direct))
		proxyLat = append(proxyLat, timeGet(b, client, proxied))
	}
	directRPS := throughput(b, client, direct, 8, 2000)
	proxyRPS := throughput(b, client, proxied, 8, 2000)

	b.ReportMetric(micros(percentile(directLat, 50)), "direct-p50-µs")
	b.ReportMetric(micros(percentile(proxyLat, 50)), "proxy-p50-µs")
	b.ReportMetric(micros(percentile(directLat, 99)), "direct-p99-µs")
	b.ReportMetric(micros(percentile(proxyLat, 99)), "proxy-p99-µs")
	b.ReportMetric(directRPS, "direct-req/s")
	b.ReportMetric(proxyRPS, "proxy-req/s")
	b.ReportMetric(proxyRPS/directRPS, "throughput-ratio")
}

// BenchmarkWakeTTFB measures the time to the first byte of a response, through
// the proxy, for a request that finds the app's only machine suspended (it
// is resumed) or stopped (it is cold-started).
func BenchmarkWakeTTFB(b *testing.B) {
	for _, from := range []model.State{model.StateSuspended, model.StateStopped} {
		b.Run(string(from), func(b *testing.B) {
			d := newDaemon(b)
			port := freePort(b)
			m := d.create(serviceConfig(port, []string{"http"}, model.AutostopOff, 0))
			waitProxy(b, port)
			url := fmt.Sprintf("http://127.0.0.1:%d/", port)
			var lat []time.Duration
			for b.Loop() {
				b.StopTimer()
				putToSleep(b, d, m.ID, from)
				b.StartTimer()
				lat = append(lat, timeFirstByte(b, url))
			}
			b.ReportMetric(millis(percentile(lat, 50)), "ttfb-p50-ms")
			b.ReportMetric(millis(percentile(lat, 99)), "ttfb-p99-ms")
		})
	}
}

func putToSleep(b *testing.B, d *daemon, id string, state model.State) {
	var err error
	if state == model.StateSuspended {
		err = d.c.Suspend(ctx(b), d.app, id)
	} else {
		err = d.c.Stop(ctx(b), d.app, id, model.StopRequest{Signal: "SIGKILL"})
	}
	if err != nil {
		b.Fatal(err)
	}
}

// timeFirstByte sends a fresh GET and returns when its first byte arrived.
func timeFirstByte(b *testing.B, url string) time.Duration {
	begin := time.Now()
	resp, err := (&http.Client{Timeout: time.Minute}).Get(url)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	first := time.Since(begin) // headers are the first bytes
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != 200 {
		b.Fatalf("status %s", resp.Status)
	}
	return first
}

func timeGet(b *testing.B, c *http.Client, url string) time.Duration {
	begin := time.Now()
	resp, err := c.Get(url)
	if err != nil {
		b.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return time.Since(begin)
}

// throughput sends total GETs from workers concurrent clients and returns requests per second.
func throughput(b *testing.B, c *http.Client, url string, workers, total int) float64 {
	var wg sync.WaitGroup
	jobs := make(chan struct{}, total)
	for i := 0; i < total; i++ {
		jobs <- struct{}{}
	}
	close(jobs)
	begin := time.Now()
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range jobs {
				timeGet(b, c, url)
			}
		}()
	}
	wg.Wait()
	return float64(total) / time.Since(begin).Seconds()
}

func percentile(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[(len(s)-1)*p/100]
}

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
func millis(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
