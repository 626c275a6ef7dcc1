package gvisor

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/torpor-dev/torpor/internal/runtime"
)

// Processes lists the sandbox's processes. "runsc ps" gives each one's PID,
// CPU share and short name; the rest (command line, working directory,
// resident memory, CPU times and listening sockets) is read from the
// sandbox's /proc with two commands run inside it, "tail" and "ls", so it
// is only there when the image has them (coreutils or busybox).
func (r *Runtime) Processes(ctx context.Context, id string) ([]runtime.Process, error) {
	out, err := r.run(ctx, "ps", id)
	if err != nil {
		if isNotExist(err) {
			return nil, fmt.Errorf("gvisor: ps %s: %w", id, runtime.ErrNotFound)
		}
		return nil, err
	}
	procs := parsePS(out)
	if len(procs) == 0 {
		return procs, nil
	}
	files := []string{"/proc/net/tcp", "/proc/net/tcp6", "/proc/net/udp", "/proc/net/udp6"}
	var dirs []string
	for _, p := range procs {
		pd := "/proc/" + strconv.Itoa(p.PID)
		files = append(files, pd+"/stat", pd+"/status", pd+"/cmdline")
		dirs = append(dirs, pd+"/cwd", pd+"/fd")
	}
	sections := map[string][]byte{}
	if res, err := r.Run(ctx, id, runtime.Command{Args: append([]string{"tail", "-n", "+1"}, files...)}); err == nil {
		sections = splitTail(res.Stdout)
	}
	var links map[string]map[string]string
	if res, err := r.Run(ctx, id, runtime.Command{Args: append([]string{"ls", "-l"}, dirs...)}); err == nil {
		links = parseLinks(res.Stdout)
	}
	sockets := map[string]runtime.Socket{} // inode → socket
	for _, f := range files[:4] {
		parseNet(sections[f], strings.TrimPrefix(f, "/proc/net/"), sockets)
	}
	for i := range procs {
		p := &procs[i]
		pd := "/proc/" + strconv.Itoa(p.PID)
		if cl := bytes.TrimRight(sections[pd+"/cmdline"], "\x00\n"); len(cl) > 0 {
			p.Command = string(bytes.ReplaceAll(cl, []byte{0}, []byte(" ")))
		}
		parseStat(sections[pd+"/stat"], p)
		parseStatus(sections[pd+"/status"], p)
		if l := links[pd+"/cwd"]; l != nil {
			p.Cwd = l[""]
		}
		for _, target := range links[pd+"/fd"] {
			inode, ok := strings.CutPrefix(target, "socket:[")
			if s, found := sockets[strings.TrimSuffix(inode, "]")]; ok && found {
				p.Listen = append(p.Listen, s)
			}
		}
		sort.Slice(p.Listen, func(a, b int) bool {
			return p.Listen[a].Proto+" "+p.Listen[a].Address < p.Listen[b].Proto+" "+p.Listen[b].Address
		})
	}
	return procs, nil
}

// parsePS reads the table of "runsc ps": UID PID PPID PGID C TTY STIME TIME CMD.
func parsePS(out []byte) []runtime.Process {
	var procs []runtime.Process
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 9 || f[0] == "UID" {
			continue
		}
		pid, err := strconv.Atoi(f[1])
		if err != nil {
			continue
		}
		cpu, _ := strconv.ParseUint(f[4], 10, 64)
		procs = append(procs, runtime.Process{PID: pid, CPU: cpu, Command: strings.Join(f[8:], " ")})
	}
	return procs
}

// tailHeader is the line "tail" writes before each file when given several.
var tailHeader = regexp.MustCompile(`(?m)^==> (.+) <==\n`)

// splitTail splits the output of "tail -n +1 FILES..." by file.
func splitTail(out []byte) map[string][]byte {
	sections := map[string][]byte{}
	idx := tailHeader.FindAllSubmatchIndex(out, -1)
	for i, m := range idx {
		end := len(out)
		if i+1 < len(idx) {
			end = idx[i+1][0]
		}
		body := out[m[1]:end]
		if i+1 < len(idx) {
			body = bytes.TrimSuffix(body, []byte("\n")) // the blank line tail puts between files
		}
		sections[string(out[m[2]:m[3]])] = body
	}
	return sections
}

// parseLinks reads "ls -l" of symlinks and directories of symlinks: for a
// symlink given itself, its target under key ""; for a directory, its
// entries' targets by name.
func parseLinks(out []byte) map[string]map[string]string {
	links := map[string]map[string]string{}
	dir := ""
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasSuffix(line, ":") && !strings.Contains(line, " ") {
			dir = strings.TrimSuffix(line, ":")
			continue
		}
		left, target, ok := strings.Cut(line, " -> ")
		if !ok {
			continue
		}
		f := strings.Fields(left)
		if len(f) == 0 {
			continue
		}
		name := f[len(f)-1]
		if strings.HasPrefix(name, "/") {
			links[name] = map[string]string{"": target}
			continue
		}
		if dir != "" {
			if links[dir] == nil {
				links[dir] = map[string]string{}
			}
			links[dir][name] = target
		}
	}
	return links
}

// parseNet adds the listening TCP and bound UDP sockets of a /proc/net
// table (proto "tcp", "tcp6", "udp" or "udp6") to sockets, by inode.
func parseNet(table []byte, proto string, sockets map[string]runtime.Socket) {
	sc := bufio.NewScanner(bytes.NewReader(table))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 10 || f[0] == "sl" {
			continue
		}
		local, remote, state, inode := f[1], f[2], f[3], f[9]
		tcp := strings.HasPrefix(proto, "tcp")
		if tcp && state != "0A" || !tcp && !zeroPort(remote) {
			continue // TCP: only LISTEN; UDP: only unconnected
		}
		if addr, ok := procAddr(local); ok {
			sockets[inode] = runtime.Socket{Proto: proto, Address: addr}
		}
	}
}

func zeroPort(hexAddr string) bool { return strings.HasSuffix(hexAddr, ":0000") }

// procAddr decodes an address of /proc/net/{tcp,udp}[6]: the IP in hex as
// 32-bit words in host (little-endian) order, a colon, the port in hex.
func procAddr(s string) (string, bool) {
	ipHex, portHex, ok := strings.Cut(s, ":")
	if !ok {
		return "", false
	}
	raw, err := hex.DecodeString(ipHex)
	if err != nil || (len(raw) != 4 && len(raw) != 16) {
		return "", false
	}
	for w := 0; w < len(raw); w += 4 {
		raw[w], raw[w+1], raw[w+2], raw[w+3] = raw[w+3], raw[w+2], raw[w+1], raw[w]
	}
	ip, _ := netip.AddrFromSlice(raw)
	port, err := strconv.ParseUint(portHex, 16, 16)
	if err != nil {
		return "", false
	}
	return net.JoinHostPort(ip.Unmap().String(), strconv.FormatUint(port, 10)), true
}

// ticksPerSecond is USER_HZ, the unit of CPU times in /proc/PID/stat.
const ticksPerSecond = 100

// parseStat reads the CPU times of /proc/PID/stat (fields 14 and 15 are
// utime and stime, counted after the command name in parentheses).
func parseStat(stat []byte, p *runtime.Process) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 13 {
		return
	}
	utime, _ := strconv.ParseUint(f[11], 10, 64)
	stime, _ := strconv.ParseUint(f[12], 10, 64)
	p.SystemTime = stime * 1000 / ticksPerSecond
	p.CPUTime = (utime + stime) * 1000 / ticksPerSecond
}

// parseStatus reads VmRSS of /proc/PID/status.
func parseStatus(status []byte, p *runtime.Process) {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				kb, _ := strconv.ParseUint(f[0], 10, 64)
				p.RSS = kb * 1024
			}
		}
	}
}
