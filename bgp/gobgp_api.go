package bgp

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
)

// checkListen makes sure GoBGP's API can listen on addr (GoBGP exits the
// process when it cannot), preparing the directory of a unix socket.
func checkListen(addr string) error {
	if path, ok := strings.CutPrefix(addr, "unix://"); ok {
		return prepareAPISocket(path)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return l.Close()
}

// prepareAPISocket readies the path of GoBGP's API socket. GoBGP's API is
// read-write and unauthenticated: whoever connects can add paths that this
// node then advertises. So the socket lives in a directory of its own that
// only root may enter (mode 0700, enforced on an existing directory too),
// which closes it to everybody else without depending on the umask or on a
// chmod racing GoBGP's listen. A stale socket of an earlier run is removed.
func prepareAPISocket(path string) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return err
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return fmt.Errorf("%s exists and is not a socket", path)
		}
		if err := os.Remove(path); err != nil {
			return err
		}
	}
	return nil
}

// APIError says why GoBGP's gRPC API is not being served, or nil.
func (s *GoBGP) APIError() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.apiErr != nil {
		return s.apiErr
	}
	return s.glog.fatalError()
}
