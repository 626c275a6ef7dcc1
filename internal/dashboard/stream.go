package dashboard

import (
	"encoding/json"
	"net/http"
	"sync"
	"time"

	"github.com/torpor-dev/torpor/internal/model"
)

// update is what the live stream sends for one committed machine change.
type update struct {
	App     string        `json:"app"`
	ID      string        `json:"id"`
	From    model.State   `json:"from"`
	State   model.State   `json:"state"`
	Source  string        `json:"source"`
	Machine model.Machine `json:"machine"`
	Events  []model.Event `json:"events"`
	At      time.Time     `json:"at"`
}

// clientBuffer is how many updates a slow browser may fall behind before
// its stream tells it to reload instead.
const clientBuffer = 256

// hub fans the machine changes out to the open streams.
type hub struct {
	mu      sync.Mutex
	clients map[*client]struct{}
}

type client struct {
	s       *session
	ch      chan update
	overrun bool // an update was dropped: the page must reload its data
}

func newHub() *hub { return &hub{clients: map[*client]struct{}{}} }

// publish is the machine manager's subscriber: it runs on the committing
// goroutine, so it never blocks (a full client is marked overrun).
func (h *hub) publish(c model.Change) {
	u := update{App: c.Machine.App, ID: c.Machine.ID, From: c.From, State: c.Machine.State, Source: c.Source,
		Machine: c.Machine, Events: c.Events, At: c.At}
	if u.Events == nil {
		u.Events = []model.Event{}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for cl := range h.clients {
		if !cl.s.allows(u.App) {
			continue
		}
		select {
		case cl.ch <- u:
		default:
			cl.overrun = true
		}
	}
}

func (h *hub) join(s *session) *client {
	cl := &client{s: s, ch: make(chan update, clientBuffer)}
	h.mu.Lock()
	h.clients[cl] = struct{}{}
	h.mu.Unlock()
	return cl
}

func (h *hub) leave(cl *client) {
	h.mu.Lock()
	delete(h.clients, cl)
	h.mu.Unlock()
}

// takeOverrun reports (and clears) whether cl missed updates.
func (h *hub) takeOverrun(cl *client) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	o := cl.overrun
	cl.overrun = false
	return o
}

// keepAlive is how often an idle stream sends a comment (and a token
// session is checked again).
const keepAlive = 15 * time.Second

// stream serves GET /ui/api/stream: server-sent events, one "change" per
// committed machine change of the apps the session may see, "resync" when
// the browser fell behind and must reload, and a comment every keepAlive.
// It ends when the session does.
func (d *Dashboard) stream(w http.ResponseWriter, r *http.Request) {
	s, err := d.session(r)
	if err != nil {
		writeError(w, http.StatusUnauthorized, err.Error())
		return
	}
	if r.Method != http.MethodGet {
		writeError(w, http.StatusMethodNotAllowed, "method "+r.Method+" not allowed on "+r.URL.Path)
		return
	}
	cl := d.hub.join(s)
	defer d.hub.leave(cl)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	// An open stream is the only traffic some pages make: keep the write
	// deadline of the server (if any) from ending it.
	rc.SetWriteDeadline(time.Time{})
	if _, err := w.Write([]byte("retry: 2000\n: connected\n\n")); err != nil || rc.Flush() != nil {
		return
	}
	tick := time.NewTicker(keepAlive)
	defer tick.Stop()
	for {
		var msg []byte
		select {
		case <-r.Context().Done():
			return
		case <-d.closed:
			return
		case <-tick.C:
			if _, err := d.session(r); err != nil {
				w.Write([]byte("event: logout\ndata: {}\n\n"))
				rc.Flush()
				return
			}
			msg = []byte(": keep-alive\n\n")
		case u := <-cl.ch:
			data, err := json.Marshal(u)
			if err != nil {
				d.log.Warn("dashboard stream: encode a change", "err", err)
				continue
			}
			msg = append(append([]byte("event: change\ndata: "), data...), "\n\n"...)
		}
		if d.hub.takeOverrun(cl) {
			msg = append(msg, "event: resync\ndata: {}\n\n"...)
		}
		if _, err := w.Write(msg); err != nil || rc.Flush() != nil {
			return
		}
	}
}
