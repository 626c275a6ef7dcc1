package bench

import (
	"fmt"
	"image/color"
	"math"
	"os"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/text"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// Bar colours: cold start and resume.
var (
	coldColor   = color.RGBA{R: 0xd9, G: 0x5f, B: 0x02, A: 0xff}
	resumeColor = color.RGBA{R: 0x1b, G: 0x9e, B: 0x77, A: 0xff}
)

// barShift is how far (in x units, one per memory size) each bar of a pair
// sits from its group's centre.
const barShift = 0.2

// WriteChart draws the result as a PNG: one panel per init cost, and in
// each, per memory size, the cold start's and the resume's p50 as bars with
// a whisker up to the p95, labelled with the p50 in ms.
func WriteChart(path string, res *Result) error {
	var panels []*plot.Plot
	for _, group := range byInit(res.Scenarios) {
		p, err := panel(group)
		if err != nil {
			return err
		}
		panels = append(panels, p)
	}
	if len(panels) == 0 {
		return fmt.Errorf("no scenario to draw")
	}
	const w, h = 520, 420 // points per panel
	img := vgimg.NewWith(vgimg.UseWH(vg.Points(w)*vg.Length(len(panels)), vg.Points(h)), vgimg.UseDPI(96),
		vgimg.UseBackgroundColor(color.White))
	canvases := plot.Align([][]*plot.Plot{panels}, draw.Tiles{Rows: 1, Cols: len(panels), PadX: vg.Points(12),
		PadTop: vg.Points(6), PadBottom: vg.Points(6), PadLeft: vg.Points(6), PadRight: vg.Points(6)}, draw.New(img))
	for i, p := range panels {
		p.Draw(canvases[0][i])
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// byInit groups scenarios by init cost, in their order.
func byInit(ss []ScenarioResult) [][]ScenarioResult {
	var groups [][]ScenarioResult
	index := map[string]int{}
	for _, s := range ss {
		i, ok := index[s.Init.Name]
		if !ok {
			i = len(groups)
			index[s.Init.Name] = i
			groups = append(groups, nil)
		}
		groups[i] = append(groups[i], s)
	}
	return groups
}

// panel draws one init cost's scenarios.
func panel(group []ScenarioResult) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("app init %s: start to first HTTP byte", group[0].Init.Target)
	p.Y.Label.Text = "ms (bar and label: p50; whisker: p95)"
	p.Y.Tick.Marker = niceTicks{}
	p.X.Label.Text = "resident memory"
	p.Y.Min = 0
	names := make([]string, len(group))
	for i, s := range group {
		names[i] = fmt.Sprintf("%d MiB", s.ResidentMB)
	}
	for _, b := range []struct {
		name  string
		shift float64
		col   color.Color
		f     func(Sample) float64
	}{
		{"cold start", -barShift, coldColor, func(s Sample) float64 { return s.ColdMS }},
		{"resume", barShift, resumeColor, func(s Sample) float64 { return s.ResumeMS }},
	} {
		bars, err := addBars(p, group, b.shift, b.col, b.f)
		if err != nil {
			return nil, err
		}
		p.Legend.Add(b.name, bars)
	}
	p.Legend.Top = true
	p.NominalX(names...)
	p.X.Min, p.X.Max = -0.6, float64(len(group))-0.4
	p.Y.Max *= 1.2 // room for the labels and the legend
	return p, nil
}

// addBars adds one series (bars, whiskers, labels) to p.
func addBars(p *plot.Plot, group []ScenarioResult, shift float64, col color.Color, f func(Sample) float64) (*plotter.BarChart, error) {
	w := whiskers{}
	labels := plotter.XYLabels{}
	for i, s := range group {
		sum := Summarize(series(s.Samples, f))
		w.x, w.p50, w.p95 = append(w.x, float64(i)+shift), append(w.p50, sum.P50), append(w.p95, sum.P95)
		labels.XYs = append(labels.XYs, plotter.XY{X: float64(i) + shift, Y: sum.P95})
		labels.Labels = append(labels.Labels, fmt.Sprintf("%.0f", sum.P50))
	}
	bars, err := plotter.NewBarChart(plotter.Values(w.p50), vg.Points(34))
	if err != nil {
		return nil, err
	}
	bars.XMin, bars.Color, bars.LineStyle.Width = shift, col, 0
	errs, err := plotter.NewYErrorBars(w)
	if err != nil {
		return nil, err
	}
	errs.LineStyle.Width = vg.Points(1.2)
	lab, err := plotter.NewLabels(labels)
	if err != nil {
		return nil, err
	}
	for i := range lab.TextStyle {
		lab.TextStyle[i].XAlign, lab.TextStyle[i].YAlign = text.XCenter, text.YBottom
	}
	lab.Offset = vg.Point{Y: vg.Points(3)}
	p.Add(bars, errs, lab)
	return bars, nil
}

// whiskers are error bars from a p50 up to a p95.
type whiskers struct{ x, p50, p95 []float64 }

// Len is the number of bars.
func (w whiskers) Len() int { return len(w.x) }

// XY is the bar's top.
func (w whiskers) XY(i int) (float64, float64) { return w.x[i], w.p50[i] }

// YError is how far the whisker goes below and above the top.
func (w whiskers) YError(i int) (float64, float64) { return 0, w.p95[i] - w.p50[i] }

// niceTicks marks about five round values (1, 2 or 5 times a power of ten
// apart) in whole milliseconds.
type niceTicks struct{}

// Ticks returns the ticks between min and max.
func (niceTicks) Ticks(min, max float64) []plot.Tick {
	step := niceStep((max - min) / 5)
	var ticks []plot.Tick
	for v := math.Ceil(min/step) * step; v <= max; v += step {
		ticks = append(ticks, plot.Tick{Value: v, Label: fmt.Sprintf("%.0f", v)})
	}
	return ticks
}

// niceStep is the smallest 1, 2 or 5 times a power of ten at least raw.
func niceStep(raw float64) float64 {
	if raw <= 0 || math.IsNaN(raw) {
		return 1
	}
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5} {
		if m*mag >= raw {
			return m * mag
		}
	}
	return 10 * mag
}
