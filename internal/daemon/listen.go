package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/torpor-dev/torpor/internal/api"
	"github.com/torpor-dev/torpor/internal/connlimit"
)

// listen opens the configured listeners: the local admin socket and the
// optional TCP address, each capped as fds plans (the admin socket's
// connections draw on neither the tenants' budget nor the TCP API's cap, so
// that it answers whatever clients do to the rest).
func listen(cfg Config, fds connlimit.Plan, log *slog.Logger) ([]net.Listener, error) {
	var ls []net.Listener
	if cfg.Socket != "" {
		l, err := listenAdminSocket(cfg.Socket)
		if err != nil {
			return nil, fmt.Errorf("admin socket %s: %w", cfg.Socket, err)
		}
		admin := connlimit.NewGroup("the admin socket", fds.Admin, 0)
		ls = append(ls, connlimit.Listen(l, connlimit.Limits{Groups: []*connlimit.Group{admin}}, connlimit.RefuseHTTP, log))
	}
	if cfg.ListenTCP != "" {
		l, err := net.Listen("tcp", cfg.ListenTCP)
		if err != nil {
			return nil, err
		}
		perClient := cfg.APIMaxConnsPerClient
		switch {
		case perClient == 0:
			perClient = DefaultAPIMaxConnsPerClient
		case perClient < 0:
			perClient = 0
		}
		tcp := connlimit.NewGroup("the TCP API", fds.API, perClient)
		ls = append(ls, connlimit.Listen(l, connlimit.Limits{Groups: []*connlimit.Group{tcp}}, connlimit.RefuseHTTP, log))
	}
	if len(ls) == 0 {
		return nil, errors.New("nothing to listen on: set a socket or a TCP address")
	}
	return ls, nil
}

// listenAdminSocket listens on the local admin socket, whose requests are
// trusted as admin. It makes sure only the daemon's user (and root) can use
// it: the socket's directory must not be writable by others (else anyone
// could replace the socket with their own), and the socket is 0600 from the
// moment it appears at its path: it is created in a private temporary
// directory, chmod'ed, then renamed into place.
func listenAdminSocket(path string) (net.Listener, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if err := checkPrivateDir(dir); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(dir, ".torpor-sock-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	tmpPath := filepath.Join(tmp, "s")
	l, err := net.Listen("unix", tmpPath)
	if err != nil {
		return nil, err
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false) // its path changes below
	if err := os.Chmod(tmpPath, 0o600); err != nil {
		l.Close()
		return nil, err
	}
	// A stale socket of a dead daemon is replaced: the socket's lock
	// (System.takeLocks) proves no live daemon serves this path.
	if err := os.Rename(tmpPath, path); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// checkPrivateDir fails unless dir is owned by root or the daemon's user
// and writable by nobody else.
func checkPrivateDir(dir string) error {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return err
	}
	if uid := uint32(os.Geteuid()); st.Uid != 0 && st.Uid != uid {
		return fmt.Errorf("directory %s is owned by uid %d, not root or the daemon's user %d: another user could replace the socket", dir, st.Uid, uid)
	}
	if st.Mode&0o022 != 0 {
		return fmt.Errorf("directory %s has mode %o: it must not be writable by group or others, who could replace the socket (chmod go-w %s)", dir, st.Mode&0o7777, dir)
	}
	return nil
}

// connContext marks connections to the admin socket as local admin, after
// checking the peer's credentials as a second line of defence behind the
// socket's file mode: only root and the daemon's own user are trusted.
func connContext(log *slog.Logger) func(ctx context.Context, c net.Conn) context.Context {
	return func(ctx context.Context, c net.Conn) context.Context {
		uc, ok := connlimit.Unwrap(c).(*net.UnixConn)
		if !ok {
			return ctx
		}
		uid, err := peerUID(uc)
		if err != nil {
			log.Warn("admin socket: cannot read peer credentials", "err", err)
			return ctx
		}
		if uid != 0 && uid != uint32(os.Geteuid()) {
			log.Warn("admin socket: refusing admin to a connection from another user", "uid", uid)
			return ctx
		}
		return api.WithLocalAdmin(ctx)
	}
}

// peerUID returns the user ID of the process at the other end of c.
func peerUID(c *net.UnixConn) (uint32, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *unix.Ucred
	var cerr error
	err = raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	})
	if err == nil {
		err = cerr
	}
	if err != nil {
		return 0, err
	}
	return cred.Uid, nil
}
