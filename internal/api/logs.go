package api

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/torpor-dev/torpor/internal/logs"
	"github.com/torpor-dev/torpor/internal/model"
)

// Log reading bounds.
const (
	defaultLogLimit = 1000
	maxLogLimit     = 10000
)

// logQuery is what GET .../logs asks for.
type logQuery struct {
	fromSeq uint64
	since   time.Time
	limit   int
	tail    int // the last tail records only
	follow  bool
}

// machineLogs serves GET .../logs as NDJSON, one record per line: the
// records from from_seq (or since a time, or the last tail), and with
// follow=true every new record until the client goes away.
func (s *server) machineLogs(w http.ResponseWriter, r *http.Request) {
	lg, q, err := s.openLogs(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	from := q.fromSeq
	if !q.since.IsZero() {
		seq, err := lg.SeqSince(q.since)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		from = max(from, seq)
	}
	if last := lg.LastSeq(); q.tail > 0 && last >= uint64(q.tail) {
		from = max(from, last-uint64(q.tail)+1)
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	enc := json.NewEncoder(w)
	if !q.follow {
		recs, err := lg.Read(from, q.limit)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		for _, rec := range recs {
			enc.Encode(rec)
		}
		return
	}
	w.WriteHeader(http.StatusOK)
	flush := http.NewResponseController(w).Flush
	flush()
	err = lg.Follow(r.Context(), from, func(recs []logs.Record) error {
		for _, rec := range recs {
			if err := enc.Encode(rec); err != nil {
				return err
			}
		}
		return flush()
	})
	if err != nil && !errors.Is(err, logs.ErrClosed) && r.Context().Err() == nil {
		s.log.Warn("follow logs", "path", r.URL.Path, "err", err)
	}
}

func (s *server) openLogs(r *http.Request) (*logs.Log, logQuery, error) {
	app, id, err := machineParams(r)
	if err != nil {
		return nil, logQuery{}, err
	}
	q, err := parseLogQuery(r)
	if err != nil {
		return nil, q, err
	}
	lg, err := s.m.Logs(r.Context(), app, id)
	return lg, q, err
}

func parseLogQuery(r *http.Request) (logQuery, error) {
	q := logQuery{limit: defaultLogLimit}
	if err := checkQuery(r, "from_seq", "since", "limit", "tail", "follow"); err != nil {
		return q, err
	}
	v := r.URL.Query()
	var err error
	if s := v.Get("from_seq"); s != "" {
		if q.fromSeq, err = strconv.ParseUint(s, 10, 64); err != nil {
			return q, model.Errorf(model.KindInvalid, "invalid query parameter from_seq %q: must be a non-negative integer", s)
		}
	}
	if s := v.Get("since"); s != "" {
		if q.since, err = logs.ParseSince(s, time.Now()); err != nil {
			return q, model.Errorf(model.KindInvalid, "invalid query parameter since: %v", err)
		}
	}
	if q.limit, err = intQuery(r, "limit", 1, maxLogLimit, defaultLogLimit); err != nil {
		return q, err
	}
	if q.tail, err = intQuery(r, "tail", 1, maxLogLimit, 0); err != nil {
		return q, err
	}
	q.follow, err = boolQuery(r, "follow")
	return q, err
}
