package netns

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"time"
)

// TCPEcho opens a TCP listener on dstIP inside dst, connects to it from
// src, sends a few bytes and checks they come back upper-cased: one round
// trip over whatever data path joins the two namespaces. Sockets keep the
// namespace they were created in, so only their creation happens on the
// namespace-switched threads.
func TCPEcho(src, dst *NS, dstIP netip.Addr) error {
	var ln net.Listener
	if err := dst.Do(func() (err error) {
		ln, err = net.Listen("tcp", net.JoinHostPort(dstIP.String(), "0"))
		return err
	}); err != nil {
		return fmt.Errorf("listening on %s in %s: %w", dstIP, dst.Name, err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 5)
		if _, err := c.Read(buf); err == nil {
			_, _ = c.Write(bytes.ToUpper(buf))
		}
	}()
	var conn net.Conn
	if err := src.Do(func() (err error) {
		conn, err = net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
		return err
	}); err != nil {
		return fmt.Errorf("TCP from %s to %s: %w", src.Name, ln.Addr(), err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write([]byte("hello")); err != nil {
		return fmt.Errorf("TCP from %s to %s: %w", src.Name, ln.Addr(), err)
	}
	buf := make([]byte, 5)
	if _, err := conn.Read(buf); err != nil || string(buf) != "HELLO" {
		return fmt.Errorf("TCP from %s to %s echoed %q: %v", src.Name, ln.Addr(), buf, err)
	}
	return nil
}
