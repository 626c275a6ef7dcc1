package api_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/torpor-dev/torpor/internal/api"
	"github.com/torpor-dev/torpor/internal/api/apitest"
	"github.com/torpor-dev/torpor/internal/logs"
)

func logEnv(t *testing.T) (*env, string, *logs.Log) {
	t.Helper()
	e := newEnv(t, api.Config{})
	e.h = apitest.Local(e.h) // the tests below call e.h directly
	m := e.machine()
	lg, err := e.mgr.Logs(context.Background(), "web", m.ID)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 5; i++ {
		if _, err := lg.Append([]byte(fmt.Sprintf("line %d", i)), time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	return e, "/v1/apps/web/machines/" + m.ID + "/logs", lg
}

func readRecords(t *testing.T, body string) []logs.Record {
	t.Helper()
	var recs []logs.Record
	for _, line := range strings.Split(strings.TrimSpace(body), "\n") {
		var r logs.Record
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		recs = append(recs, r)
	}
	return recs
}

func TestLogsReadFromSeqAndLimit(t *testing.T) {
	e, path, _ := logEnv(t)
	rec := httptest.NewRecorder()
	e.h.ServeHTTP(rec, httptest.NewRequest("GET", path+"?from_seq=2&limit=3", nil))
	if rec.Code != 200 || rec.Header().Get("Content-Type") != "application/x-ndjson" {
		t.Fatalf("status %d, type %q", rec.Code, rec.Header().Get("Content-Type"))
	}
	recs := readRecords(t, rec.Body.String())
	if len(recs) != 3 || recs[0].Seq != 2 || recs[0].Line != "line 2" || recs[2].Seq != 4 {
		t.Fatalf("records = %+v", recs)
	}
}

func TestLogsTail(t *testing.T) {
	e, path, _ := logEnv(t)
	for q, first := range map[string]uint64{"?tail=2": 4, "?tail=10": 1, "?tail=3&from_seq=4": 4} {
		rec := httptest.NewRecorder()
		e.h.ServeHTTP(rec, httptest.NewRequest("GET", path+q, nil))
		recs := readRecords(t, rec.Body.String())
		if rec.Code != 200 || len(recs) == 0 || recs[0].Seq != first || recs[len(recs)-1].Seq != 5 {
			t.Errorf("%s: status %d, records %+v; want %d to 5", q, rec.Code, recs, first)
		}
	}
}

func TestLogsBadQuery(t *testing.T) {
	e, path, _ := logEnv(t)
	e.wantError("GET", path+"?tail=0", "", 400, "tail")
	e.wantError("GET", path+"?from_seq=-1", "", 400, "from_seq")
	e.wantError("GET", path+"?since=yesterday", "", 400, "since")
	e.wantError("GET", path+"?limit=0", "", 400, "limit")
	e.wantError("GET", "/v1/apps/web/machines/nosuch/logs", "", 404, "nosuch")
}

func TestLogsFollowStreamsNewLines(t *testing.T) {
	e, path, lg := logEnv(t)
	srv := httptest.NewServer(e.h)
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+path+"?follow=true&from_seq=5", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	next := func() logs.Record {
		if !sc.Scan() {
			t.Fatalf("stream ended: %v", sc.Err())
		}
		return readRecords(t, sc.Text())[0]
	}
	if r := next(); r.Seq != 5 {
		t.Fatalf("first followed record = %+v", r)
	}
	lg.Append([]byte("line 6"), time.Now())
	if r := next(); r.Seq != 6 || r.Line != "line 6" {
		t.Fatalf("appended record = %+v", r)
	}
}
