package appconfig

import (
	"strconv"
	"strings"

	"github.com/pelletier/go-toml/v2/unstable"
)

// lines maps each key of a document to the line it is on, by a path in
// Fly's spelling: "http_service.internal_port", "services[1].ports[0].port",
// "checks.alive.interval". It lets a value that go-toml decoded fine but
// torpor refuses (or a key torpor ignores) be reported with its line.
type lines map[string]int

// indexLines reads the document's keys with go-toml's parser. A document
// that does not parse gives what was read before the error (the decoder
// reports the error itself).
func indexLines(doc []byte) lines {
	ix := lines{}
	var p unstable.Parser
	p.Reset(doc)
	arrays := map[string]int{} // array-of-tables path -> elements so far
	prefix := ""
	// A node's Raw is its range in doc. Its Data is not always a slice of
	// doc: a quoted key with escapes ("a\u0041") is unescaped into a new
	// buffer, so deriving the range from Data gives a wrong line or panics.
	lineOf := func(n *unstable.Node) int {
		if n.Raw.Length == 0 {
			return 0
		}
		return p.Shape(n.Raw).Start.Line
	}
	// resolve turns a header's key parts into a path, indexing each part
	// that names an array of tables by its latest element (except, for an
	// [[array]] header, the last part, which gets a new element).
	resolve := func(it unstable.Iterator, newElem bool) (string, int) {
		var parts []*unstable.Node
		for it.Next() {
			parts = append(parts, it.Node())
		}
		path, line := "", 0
		for i, k := range parts {
			path = join(path, string(k.Data))
			line = lineOf(k)
			if i == len(parts)-1 && newElem {
				n := arrays[path]
				arrays[path] = n + 1
				path += "[" + strconv.Itoa(n) + "]"
				break
			}
			if n, ok := arrays[path]; ok && n > 0 {
				path += "[" + strconv.Itoa(n-1) + "]"
			}
		}
		return path, line
	}
	var keyValue func(base string, n *unstable.Node)
	var value func(path string, line int, v *unstable.Node)
	value = func(path string, line int, v *unstable.Node) {
		switch v.Kind {
		case unstable.InlineTable:
			for it := v.Children(); it.Next(); {
				keyValue(path, it.Node())
			}
		case unstable.Array:
			i := 0
			for it := v.Children(); it.Next(); i++ {
				el := path + "[" + strconv.Itoa(i) + "]"
				if _, ok := ix[el]; !ok {
					ix[el] = line
				}
				value(el, line, it.Node())
			}
		}
	}
	keyValue = func(base string, n *unstable.Node) {
		path, line := base, 0
		for it := n.Key(); it.Next(); {
			path = join(path, string(it.Node().Data))
			line = lineOf(it.Node())
			if _, ok := ix[path]; !ok {
				ix[path] = line
			}
		}
		value(path, line, n.Value())
	}
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table:
			var line int
			prefix, line = resolve(e.Key(), false)
			ix[prefix] = line
		case unstable.ArrayTable:
			var line int
			prefix, line = resolve(e.Key(), true)
			ix[prefix] = line
		case unstable.KeyValue:
			keyValue(prefix, e)
		}
	}
	return ix
}

// line returns the line of path, or of its nearest enclosing key that the
// document has (0 if none).
func (ix lines) line(path string) int {
	for path != "" {
		if l, ok := ix[path]; ok {
			return l
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			break
		}
		path = path[:i]
	}
	return 0
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}
