package metrics

import (
	"context"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"

	"github.com/torpor-dev/torpor/internal/model"
)

// scrapeTimeout bounds what the scrape-time sources may take.
const scrapeTimeout = 10 * time.Second

var (
	machinesDesc = prometheus.NewDesc("torpor_machines",
		"Machines now, by app and state (every state but destroyed, of every app, zeros included).", []string{"app", "state"}, nil)
	snapshotImagesDesc = prometheus.NewDesc("torpor_snapshot_images",
		"Snapshot images on disk now (sealed, being written, or claimed and not yet deleted).", nil, nil)
	snapshotBytesDesc = prometheus.NewDesc("torpor_snapshot_disk_bytes",
		"Disk space the snapshot images take now (allocated blocks), restored images not yet deleted included.", nil, nil)
	imagesDesc     = prometheus.NewDesc("torpor_images", "Images kept on this host now.", nil, nil)
	imageBytesDesc = prometheus.NewDesc("torpor_image_disk_bytes", "Disk space the images kept on this host take now, about: compressed blobs plus unpacked layers.", nil, nil)
	volumesDesc    = prometheus.NewDesc("torpor_volumes", "Volumes now, by app.", []string{"app"}, nil)
	volumeSizeDesc = prometheus.NewDesc("torpor_volume_size_bytes", "Capacity of the app's volumes, summed.", []string{"app"}, nil)
	volumeUsedDesc = prometheus.NewDesc("torpor_volume_used_bytes", "Space used in the filesystems of the app's volumes, summed.", []string{"app"}, nil)
	warmDesc       = prometheus.NewDesc("torpor_warm_sandboxes", "Sandboxes created ahead of the resume of a suspended machine, waiting now (--warm-sandboxes-memory).", nil, nil)
	warmBytesDesc  = prometheus.NewDesc("torpor_warm_sandbox_memory_bytes", "Memory the waiting warm sandboxes are charged against their budget (each at --warm-sandbox-cost-mb).", nil, nil)
	warmBudgetDesc = prometheus.NewDesc("torpor_warm_sandbox_budget_bytes", "The warm sandboxes' memory budget (--warm-sandboxes-memory; 0: none are made).", nil, nil)
	buildInfoDesc  = prometheus.NewDesc("torpor_build_info", "torpor's version and the runtime it runs machines with; always 1.",
		[]string{"version", "runtime", "runtime_version"}, nil)
	scrapeErrorsDesc = prometheus.NewDesc("torpor_scrape_source_up",
		"Whether a source of scrape-time metrics answered this scrape (1) or failed (0; the daemon's log says why).", []string{"source"}, nil)
)

// scraped collects the metrics read when Prometheus scrapes.
type scraped struct{ m *Metrics }

func (s *scraped) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{machinesDesc, snapshotImagesDesc, snapshotBytesDesc, imagesDesc, imageBytesDesc,
		volumesDesc, volumeSizeDesc, volumeUsedDesc, warmDesc, warmBytesDesc, warmBudgetDesc, buildInfoDesc, scrapeErrorsDesc} {
		ch <- d
	}
}

func (s *scraped) Collect(ch chan<- prometheus.Metric) {
	cfg := s.m.cfg
	ch <- prometheus.MustNewConstMetric(buildInfoDesc, prometheus.GaugeValue, 1, cfg.Version, cfg.Runtime, cfg.RuntimeVersion)
	up := func(source string, err error) {
		v := 1.0
		if err != nil {
			v = 0
			cfg.Logger.Warn("metrics: a scrape-time source failed", "source", source, "err", err)
		}
		ch <- prometheus.MustNewConstMetric(scrapeErrorsDesc, prometheus.GaugeValue, v, source)
	}
	if cfg.Machines != nil {
		up("machines", collectMachines(cfg.Machines, ch))
	}
	if cfg.Warm != nil {
		w := cfg.Warm()
		ch <- prometheus.MustNewConstMetric(warmDesc, prometheus.GaugeValue, float64(w.Sandboxes))
		ch <- prometheus.MustNewConstMetric(warmBytesDesc, prometheus.GaugeValue, float64(w.MemoryBytes))
		ch <- prometheus.MustNewConstMetric(warmBudgetDesc, prometheus.GaugeValue, float64(w.BudgetBytes))
	}
	if cfg.Snapshots != nil {
		u, err := cfg.Snapshots()
		if err == nil {
			ch <- prometheus.MustNewConstMetric(snapshotImagesDesc, prometheus.GaugeValue, float64(u.Images))
			ch <- prometheus.MustNewConstMetric(snapshotBytesDesc, prometheus.GaugeValue, float64(u.Bytes))
		}
		up("snapshots", err)
	}
	if cfg.Images != nil {
		u, err := cfg.Images()
		if err == nil {
			ch <- prometheus.MustNewConstMetric(imagesDesc, prometheus.GaugeValue, float64(u.Images))
			ch <- prometheus.MustNewConstMetric(imageBytesDesc, prometheus.GaugeValue, float64(u.Bytes))
		}
		up("images", err)
	}
	if cfg.Volumes != nil {
		vs, err := cfg.Volumes()
		if err == nil {
			collectVolumes(vs, ch)
		}
		up("volumes", err)
	}
}

func collectMachines(src Machines, ch chan<- prometheus.Metric) error {
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	apps, err := src.ListApps(ctx)
	if err != nil {
		return err
	}
	for _, app := range apps {
		ms, err := src.List(ctx, app.Name)
		if err != nil {
			return err
		}
		count := map[model.State]int{}
		for _, mc := range ms {
			count[mc.State]++
		}
		for _, st := range model.States {
			if st == model.StateDestroyed {
				continue // destroyed machines are not listed
			}
			ch <- prometheus.MustNewConstMetric(machinesDesc, prometheus.GaugeValue, float64(count[st]), app.Name, string(st))
		}
	}
	return nil
}

func collectVolumes(vs []VolumeUsage, ch chan<- prometheus.Metric) {
	type sum struct {
		n          int
		size, used int64
	}
	by := map[string]*sum{}
	for _, v := range vs {
		s := by[v.App]
		if s == nil {
			s = &sum{}
			by[v.App] = s
		}
		s.n++
		s.size += v.SizeBytes
		s.used += v.UsedBytes
	}
	for app, s := range by {
		ch <- prometheus.MustNewConstMetric(volumesDesc, prometheus.GaugeValue, float64(s.n), app)
		ch <- prometheus.MustNewConstMetric(volumeSizeDesc, prometheus.GaugeValue, float64(s.size), app)
		ch <- prometheus.MustNewConstMetric(volumeUsedDesc, prometheus.GaugeValue, float64(s.used), app)
	}
}

// ServeMetrics answers GET /metrics in the format the scraper asks for
// (the Prometheus text format by default). allow is nil for a caller who
// may see everything (the admin socket, an admin token); otherwise only
// series with an app label whose app allow accepts are served, and the
// families without an app label (the Go runtime, the process, the
// daemon-wide totals) are left out: they describe every app at once.
func (m *Metrics) ServeMetrics(w http.ResponseWriter, r *http.Request, allow func(app string) bool) {
	var g prometheus.Gatherer = m.reg
	if allow != nil {
		g = scoped{m.reg, allow}
	}
	promhttp.HandlerFor(g, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}).ServeHTTP(w, r)
}

// scoped gathers only the series of the apps allow accepts.
type scoped struct {
	g     prometheus.Gatherer
	allow func(app string) bool
}

func (s scoped) Gather() ([]*dto.MetricFamily, error) {
	all, err := s.g.Gather()
	var out []*dto.MetricFamily
	for _, f := range all {
		var kept []*dto.Metric
		for _, mt := range f.Metric {
			if app, ok := appLabel(mt); ok && s.allow(app) {
				kept = append(kept, mt)
			}
		}
		if len(kept) > 0 {
			f.Metric = kept
			out = append(out, f)
		}
	}
	return out, err
}

func appLabel(mt *dto.Metric) (string, bool) {
	for _, l := range mt.Label {
		if l.GetName() == "app" {
			return l.GetValue(), true
		}
	}
	return "", false
}
