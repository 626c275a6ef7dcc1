package daemon_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/torpor-dev/torpor/internal/model"
)

// browser starts Debian's chromium headless in a fresh profile and returns
// a chromedp context on its first tab. Without chromium the test is skipped,
// unless TORPOR_INTEGRATION=1 makes that a failure.
func browser(t *testing.T) context.Context {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("TORPOR_INTEGRATION") == "1" {
			t.Fatal("chromium is not installed (scripts/deps.sh installs it)")
		}
		t.Skip("chromium is not installed")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.NoFirstRun,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1360, 900),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	bctx, cancelBrowser := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	t.Cleanup(func() { cancelBrowser(); cancelAlloc() })
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return bctx
}

// step runs browser actions with a deadline, failing the test with what.
func step(t *testing.T, bctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	run(t, bctx, what, chromedp.Steps(actions...))
}

// run runs one browser action that returns a value, with a deadline.
func run[T any](t *testing.T, bctx context.Context, what string, a chromedp.Action[T]) T {
	t.Helper()
	c, cancel := context.WithTimeout(bctx, 60*time.Second)
	defer cancel()
	v, err := chromedp.Run(c, a)
	if err != nil {
		hc, hcancel := context.WithTimeout(bctx, 5*time.Second)
		html, _ := chromedp.Run(hc, chromedp.OuterHTML(chromedp.CSS("main")))
		hcancel()
		t.Fatalf("%s: %v\npage:\n%s", what, err, html)
	}
	return v
}

// poll waits until a JavaScript expression is true.
func poll(expr string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(30*time.Second))(ctx, tg)
		return err
	})
}

// screenshot saves the page as name.png under TORPOR_SCREENSHOT_DIR (the
// test's temporary directory if unset).
func screenshot(t *testing.T, bctx context.Context, dir, name string) {
	t.Helper()
	step(t, bctx, "settle before "+name, chromedp.Sleep(300*time.Millisecond))
	png := run(t, bctx, "screenshot "+name, chromedp.CaptureScreenshot())
	path := filepath.Join(dir, name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
}

// dotIs waits until the machine's state dot in the app's table shows state.
func dotIs(id string, state model.State) chromedp.Action[chromedp.Void] {
	return chromedp.WaitVisible(css(`tr[data-machine=%q] .dot[data-state=%q]`, id, state))
}

// css formats a CSS selector.
func css(format string, args ...any) chromedp.CSS { return chromedp.CSS(fmt.Sprintf(format, args...)) }

// TestDashboardInBrowser drives the dashboard in a real chromium: it logs
// in with an app token, sees a machine created through the API appear,
// watches its dot go started → suspended → started as the test suspends
// and resumes it through the API, opens the machine (timeline, logs),
// presses Suspend and checks through the API that it is suspended, and
// destroys it through the confirmation dialog. A one-time link of
// `torpor dashboard` logs in once and never again.
func TestDashboardInBrowser(t *testing.T) {
	shots := os.Getenv("TORPOR_SCREENSHOT_DIR")
	if shots == "" {
		shots = t.TempDir()
	}
	port := freePort(t)
	d := newDaemon(t, "--listen", fmt.Sprintf("127.0.0.1:%d", port))
	c := ctx(t)
	tok, err := d.c.CreateToken(c, model.CreateTokenRequest{Apps: []string{d.app}, Name: "dashboard-test"})
	if err != nil {
		t.Fatal(err)
	}
	bctx := browser(t)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)

	step(t, bctx, "log in with the app token",
		chromedp.Navigate(base+"/ui/"),
		chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SendKeys(chromedp.ID("token"), tok.Secret),
		chromedp.Click(chromedp.ID("login")),
		chromedp.WaitVisible(css(`#app-list a[data-app=%q]`, d.app)),
		chromedp.WaitVisible(chromedp.CSS(`#live[data-live="open"]`)),
	)

	// A machine created through the API appears, started, without a reload.
	m := d.create(counterConfig(nil))
	step(t, bctx, "the new machine shows up started", dotIs(m.ID, model.StateStarted))
	d.waitCount(m.ID, 1)

	d.suspend(m.ID)
	step(t, bctx, "the dot turns suspended", dotIs(m.ID, model.StateSuspended))
	screenshot(t, bctx, shots, "dashboard-app-suspended")
	d.start(m.ID)
	step(t, bctx, "the dot turns started again", dotIs(m.ID, model.StateStarted),
		chromedp.WaitVisible(chromedp.CSS(`#latency-chart circle[data-kind="resume"]`)))
	screenshot(t, bctx, shots, "dashboard-app")

	// The machine's page: its timeline has the resume with its phases, the
	// log tail has the app's output.
	step(t, bctx, "open the machine",
		chromedp.Click(css(`tr[data-machine=%q]`, m.ID)),
		chromedp.WaitVisible(chromedp.CSS(`#m-state[data-state="started"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#timeline li[data-type="resume"] .phases`)),
		poll(`document.getElementById("logs").textContent.includes("count ")`),
	)
	timeline := run(t, bctx, "read the timeline", chromedp.Text(chromedp.ID("timeline")))
	for _, want := range []string{"resumed from snapshot in", "claim", "suspended in", "cold start in"} {
		if !strings.Contains(timeline, want) {
			t.Errorf("timeline does not say %q:\n%s", want, timeline)
		}
	}
	screenshot(t, bctx, shots, "dashboard-machine")

	suspend := chromedp.CSS(`#actions button[data-action="suspend"]`)
	step(t, bctx, "press Suspend",
		chromedp.WaitEnabled(suspend),
		chromedp.Click(suspend),
		chromedp.WaitVisible(chromedp.CSS(`#m-state[data-state="suspended"]`)),
	)
	if st, err := d.c.Wait(c, d.app, m.ID, []model.State{model.StateSuspended}, 30*time.Second); err != nil || st != model.StateSuspended {
		t.Fatalf("after pressing Suspend the API says %s, %v", st, err)
	}
	screenshot(t, bctx, shots, "dashboard-machine-suspended")

	// Destroy asks first: Cancel keeps the machine, Destroy removes it.
	destroy := chromedp.CSS(`#actions button[data-action="destroy"]`)
	step(t, bctx, "destroy, then cancel",
		chromedp.WaitEnabled(destroy),
		chromedp.Click(destroy),
		chromedp.WaitVisible(chromedp.ID("confirm-text")),
		chromedp.Click(chromedp.ID("confirm-cancel")),
		chromedp.WaitNotVisible(chromedp.ID("confirm")),
	)
	d.wantState(m.ID, model.StateSuspended)
	step(t, bctx, "destroy, then confirm",
		chromedp.WaitEnabled(destroy),
		chromedp.Click(destroy),
		chromedp.WaitVisible(chromedp.ID("confirm-ok")),
		chromedp.Click(chromedp.ID("confirm-ok")),
		chromedp.WaitVisible(chromedp.ID("app-view")),
		chromedp.WaitNotPresent(css(`tr[data-machine=%q]`, m.ID)),
	)
	if _, err := d.c.GetMachine(c, d.app, m.ID); err == nil {
		if got := d.get(m.ID).State; got != model.StateDestroyed && got != model.StateDestroying {
			t.Fatalf("after confirming Destroy the machine is %s", got)
		}
	}

	// `torpor dashboard` prints a one-time link to a loopback port.
	out, err := exec.Command(torporBin, "dashboard", "--json", "--api", "unix://"+d.sock).CombinedOutput()
	if err != nil {
		t.Fatalf("torpor dashboard: %v\n%s", err, out)
	}
	var link model.DashboardLink
	if err := json.Unmarshal(out, &link); err != nil || !strings.HasPrefix(link.URL, "http://127.0.0.1:") {
		t.Fatalf("torpor dashboard printed %s (%v)", out, err)
	}
	step(t, bctx, "the one-time link logs in as the admin",
		chromedp.Navigate(link.URL),
		chromedp.WaitVisible(css(`#app-list a[data-app=%q]`, d.app)),
		chromedp.WaitVisible(chromedp.ID("who")),
	)
	who := run(t, bctx, "who is logged in", chromedp.Text(chromedp.ID("who")))
	step(t, bctx, "use the link again", chromedp.Navigate(link.URL), chromedp.WaitVisible(chromedp.ID("login-error")))
	again := run(t, bctx, "the link works only once", chromedp.Text(chromedp.ID("login-error")))
	if who != "local admin" || !strings.Contains(again, "used already") {
		t.Fatalf("who %q; second use says %q", who, again)
	}
}
