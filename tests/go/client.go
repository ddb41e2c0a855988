// tests/test_kernel_backend.py's Go client (util.build_go: CGO off, so static): what no LD_PRELOAD reaches.
package main

import (
	"fmt"
	"net"
	"os"
	"time"
)

// client ADDR: net.Dial as any Go program does (Go sets its own keepalive of 15 s on
// every dialed connection), write, wait, write, close. A failed dial prints its error.
func main() {
	c, err := net.Dial("tcp", os.Args[1])
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	c.Write([]byte("hello\n"))
	time.Sleep(1500 * time.Millisecond)
	c.Write([]byte("bye\n"))
	c.Close()
}
