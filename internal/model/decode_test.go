package model

import (
	"errors"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

func TestDecodeJSON(t *testing.T) {
	type body struct {
		N int      `json:"n"`
		D Duration `json:"d"`
		A Autostop `json:"a"`
	}
	cases := []struct {
		in   string
		want string // substring of the error; "" means success
	}{
		{`{"n":1,"d":"1.5s","a":true}`, ""},
		{`  {"d":30} `, ""},
		{``, "request body is empty"},
		{`   `, "request body is empty"},
		{`{"n":1} {}`, "unexpected data after the JSON value"},
		{`{"n":1}x`, "unexpected data after the JSON value"},
		{`{"n":"1"}`, "n: expected an integer in range, got string"},
		{`{"n":1e99}`, "n: expected an integer in range, got number 1e99"},
		{`{"m":1}`, `unknown field "m"`},
		{`{"n":`, "unexpected end of input"},
		{`[1]`, "expected an object, got array"},
		{`{"d":"soon"}`, `d: invalid duration "soon"`},
		{`{"d":1e300}`, "d: invalid duration 1e300: out of range"},
		{`{"d":"NaN"}`, `d: invalid duration "NaN": out of range`},
		{`{"d":true}`, "d: duration must be a string"},
		{`{"a":"sleep"}`, `a: autostop must be "off", "stop", "suspend" or a boolean, not "sleep"`},
	}
	for _, c := range cases {
		var v body
		err := DecodeJSON(strings.NewReader(c.in), &v)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", c.in, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: error %v, want one with %q", c.in, err, c.want)
		case c.want != "" && !errors.Is(err, ErrEmptyBody) && KindOf(err) != KindInvalid:
			t.Errorf("%s: error %v is not KindInvalid", c.in, err)
		}
	}
	var v body
	if err := DecodeJSON(strings.NewReader(`{"d":"1.5s"}`), &v); err != nil || v.D.Duration != 1500*time.Millisecond {
		t.Fatalf("1.5s = %v, %v", v.D, err)
	}
}

// TestDecodeJSONPassesReadErrors checks that an error of the reader (such
// as a body over the limit) is returned as is, not as bad JSON.
func TestDecodeJSONPassesReadErrors(t *testing.T) {
	boom := errors.New("boom")
	var v map[string]any
	err := DecodeJSON(iotest.ErrReader(boom), &v)
	if !errors.Is(err, boom) {
		t.Fatalf("error %v, want the reader's", err)
	}
	err = DecodeJSON(&firstThen{first: `{"a":1}`, err: boom}, &v)
	if !errors.Is(err, boom) {
		t.Fatalf("error after the value: %v, want the reader's", err)
	}
}

// firstThen reads first, then fails with err.
type firstThen struct {
	first string
	err   error
}

func (f *firstThen) Read(p []byte) (int, error) {
	if f.first == "" {
		return 0, f.err
	}
	n := copy(p, f.first)
	f.first = f.first[n:]
	return n, nil
}
