package cli

import (
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/spf13/cobra"
)

// spinnerFrames are the frames of the progress spinner.
var spinnerFrames = []string{"⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"}

// progress shows that a long operation is running: a spinner, what it is
// doing and the time so far, redrawn on one line of the command's standard
// error when that is a terminal. Elsewhere it shows nothing (scripts read
// the plain result line; isTerminal is in logs.go). Set changes the text (an image pull's phase).
type progress struct {
	w     io.Writer
	mu    sync.Mutex
	text  string
	begin time.Time
	done  chan struct{}
	wg    sync.WaitGroup
}

// startProgress starts showing text, if the command's stderr is a terminal
// and --json is off.
func (g *globals) startProgress(cmd *cobra.Command, text string) *progress {
	p := &progress{w: cmd.ErrOrStderr(), text: text, begin: time.Now(), done: make(chan struct{})}
	if g.json || !isTerminal(p.w) {
		close(p.done)
		return p
	}
	p.wg.Add(1)
	go p.run()
	return p
}

func (p *progress) run() {
	defer p.wg.Done()
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for i := 0; ; i++ {
		p.mu.Lock()
		fmt.Fprintf(p.w, "\r\033[K%s %s %s", spinnerFrames[i%len(spinnerFrames)], p.text, formatDuration(time.Since(p.begin).Truncate(100*time.Millisecond)))
		p.mu.Unlock()
		select {
		case <-p.done:
			fmt.Fprint(p.w, "\r\033[K")
			return
		case <-t.C:
		}
	}
}

// Set changes what the spinner says.
func (p *progress) Set(text string) {
	p.mu.Lock()
	p.text = text
	p.mu.Unlock()
}

// Stop clears the spinner's line; the command then prints its result.
func (p *progress) Stop() {
	select {
	case <-p.done:
	default:
		close(p.done)
	}
	p.wg.Wait()
}

// withProgress runs call with a spinner saying text.
func (g *globals) withProgress(cmd *cobra.Command, text string, call func() error) error {
	p := g.startProgress(cmd, text)
	defer p.Stop()
	return call()
}
