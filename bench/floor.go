// The Go reference responder of floor.py: a goroutine per connection over
// Go's netpoller, as nsqd serves its clients, on 127.0.0.1:PORT; "OK" to
// every PUB or MPUB (a line, a 4-byte size, that many bytes) after the
// 4-byte magic, nothing else.
package main

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
)

var okFrame = []byte{0, 0, 0, 6, 0, 0, 0, 0, 'O', 'K'}

func serve(conn net.Conn) {
	defer conn.Close()
	reader := bufio.NewReaderSize(conn, 16*1024)
	var head [4]byte
	if _, err := io.ReadFull(reader, head[:]); err != nil {
		return
	}
	for {
		if _, err := reader.ReadSlice('\n'); err != nil {
			return
		}
		if _, err := io.ReadFull(reader, head[:]); err != nil {
			return
		}
		size := int64(binary.BigEndian.Uint32(head[:]))
		if _, err := io.CopyN(io.Discard, reader, size); err != nil {
			return
		}
		if _, err := conn.Write(okFrame); err != nil {
			return
		}
	}
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: floor PORT")
		os.Exit(2)
	}
	listener, err := net.Listen("tcp", "127.0.0.1:"+os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(1)
	}
	for {
		conn, err := listener.Accept()
		if err != nil {
			continue
		}
		go serve(conn)
	}
}
