// tests/test_trace_kernel.py's Go server (util.build_go).
package main

import (
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
)

// server PORT WANT REPLY: accepts one connection, reads WANT bytes, writes REPLY bytes,
// reads to the peer's close, closes; prints its pid and what it read.
func main() {
	ln, err := net.Listen("tcp4", "127.0.0.1:"+os.Args[1])
	if err != nil {
		panic(err)
	}
	want, _ := strconv.Atoi(os.Args[2])
	reply, _ := strconv.Atoi(os.Args[3])
	fmt.Println("ready")
	c, err := ln.Accept()
	if err != nil {
		panic(err)
	}
	buf := make([]byte, want)
	n, _ := io.ReadFull(c, buf)
	out := make([]byte, reply)
	rand.Read(out)
	c.Write(out)
	rest, _ := io.Copy(io.Discard, c)
	c.Close()
	ln.Close()
	fmt.Println(os.Getpid(), int64(n)+rest)
}
