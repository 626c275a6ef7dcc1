package image

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// User is the identity the machine's process runs as.
type User struct {
	UID, GID       uint32
	AdditionalGIDs []uint32
}

// ErrUnknownUser: the image's user names a user or group its /etc/passwd
// or /etc/group does not have.
var ErrUnknownUser = errors.New("unknown user")

// LookupUser resolves an image config's User ("", "name", "uid",
// "name:group", "uid:gid", ...) in the root filesystem rootfs, as Docker
// does: names come from the image's /etc/passwd and /etc/group (read
// inside the root, so a symlink there cannot point at the host's files);
// a numeric uid absent from /etc/passwd runs with gid 0; the supplementary
// groups are those /etc/group lists the user in.
func LookupUser(rootfs, spec string) (User, error) {
	if spec == "" {
		return User{}, nil
	}
	userPart, groupPart, hasGroup := strings.Cut(spec, ":")
	var u User
	var name string
	if n, err := strconv.ParseUint(userPart, 10, 32); err == nil {
		u.UID = uint32(n)
		if e, ok := findPasswd(rootfs, func(e passwdEntry) bool { return e.uid == u.UID }); ok {
			u.GID, name = e.gid, e.name
		}
	} else {
		e, ok := findPasswd(rootfs, func(e passwdEntry) bool { return e.name == userPart })
		if !ok {
			return u, fmt.Errorf("%w: the image's user %q is not in its /etc/passwd", ErrUnknownUser, userPart)
		}
		u.UID, u.GID, name = e.uid, e.gid, e.name
	}
	groups := readGroups(rootfs)
	if hasGroup {
		if n, err := strconv.ParseUint(groupPart, 10, 32); err == nil {
			u.GID = uint32(n)
		} else {
			i := slices.IndexFunc(groups, func(g groupEntry) bool { return g.name == groupPart })
			if i < 0 {
				return u, fmt.Errorf("%w: the image's group %q is not in its /etc/group", ErrUnknownUser, groupPart)
			}
			u.GID = groups[i].gid
		}
		return u, nil // an explicit group replaces the supplementary groups, as in Docker
	}
	if name != "" {
		for _, g := range groups {
			if g.gid != u.GID && slices.Contains(g.members, name) && !slices.Contains(u.AdditionalGIDs, g.gid) {
				u.AdditionalGIDs = append(u.AdditionalGIDs, g.gid)
			}
		}
	}
	return u, nil
}

type passwdEntry struct {
	name     string
	uid, gid uint32
}

type groupEntry struct {
	name    string
	gid     uint32
	members []string
}

// readImageFile reads a small file of the image (at most 1 MiB), resolving
// its path inside the root.
func readImageFile(rootfs, rel string) ([]byte, error) {
	root, err := unix.Open(rootfs, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(root)
	fd, err := unix.Openat2(root, rel, &unix.OpenHow{Flags: unix.O_RDONLY | unix.O_CLOEXEC, Resolve: resolveFlags})
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), rel)
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, 1<<20))
}

// fields calls fn with the colon-separated fields of each line of the
// image's file rel (missing or unreadable: no lines).
func fields(rootfs, rel string, fn func([]string)) {
	data, err := readImageFile(rootfs, rel)
	if err != nil {
		return
	}
	sc := bufio.NewScanner(strings.NewReader(string(data)))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fn(strings.Split(line, ":"))
	}
}

func findPasswd(rootfs string, match func(passwdEntry) bool) (passwdEntry, bool) {
	var found passwdEntry
	ok := false
	fields(rootfs, "etc/passwd", func(f []string) {
		if ok || len(f) < 4 {
			return
		}
		uid, err1 := strconv.ParseUint(f[2], 10, 32)
		gid, err2 := strconv.ParseUint(f[3], 10, 32)
		if err1 != nil || err2 != nil {
			return
		}
		e := passwdEntry{name: f[0], uid: uint32(uid), gid: uint32(gid)}
		if match(e) {
			found, ok = e, true
		}
	})
	return found, ok
}

func readGroups(rootfs string) []groupEntry {
	var out []groupEntry
	fields(rootfs, "etc/group", func(f []string) {
		if len(f) < 3 {
			return
		}
		gid, err := strconv.ParseUint(f[2], 10, 32)
		if err != nil {
			return
		}
		g := groupEntry{name: f[0], gid: uint32(gid)}
		if len(f) > 3 && f[3] != "" {
			g.members = strings.Split(f[3], ",")
		}
		out = append(out, g)
	})
	return out
}
