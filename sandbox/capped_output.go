package sandbox

import (
	"fmt"
	"io"
	"os"
	"sync"
)

// copyBuffers are the buffers of copyFrom: two per action, most of what
// the worker allocated per trivial action (and collected: about a
// tenth of its CPU time) when each copy made its own.
var copyBuffers = sync.Pool{New: func() any {
	buf := make([]byte, 64*1024)
	return &buf
}}

// cappedOutput copies a command's stream into a file up to a limit and
// keeps draining the rest, so an action printing gigabytes neither
// fills the disk nor blocks on a full pipe.
type cappedOutput struct {
	file      io.Writer
	closer    io.Closer
	limit     int64
	written   int64
	truncated bool
}

func newCappedOutput(path string, w io.Writer, limit int64) (*cappedOutput, error) {
	if path == "" {
		return &cappedOutput{file: w, limit: limit}, nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("sandbox: create output file: %w", err)
	}
	return &cappedOutput{file: f, closer: f, limit: limit}, nil
}

func (o *cappedOutput) copyFrom(r io.Reader) {
	bufp := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(bufp)
	buf := *bufp
	for {
		n, err := r.Read(buf)
		if n > 0 {
			o.write(buf[:n])
		}
		if err != nil {
			return
		}
	}
}

func (o *cappedOutput) write(data []byte) {
	if o.limit > 0 && o.written+int64(len(data)) > o.limit {
		data = data[:o.limit-o.written]
		o.truncated = true
	}
	if len(data) == 0 || o.file == nil {
		o.written += int64(len(data))
		return
	}
	n, _ := o.file.Write(data)
	o.written += int64(n)
}

func (o *cappedOutput) Close() error {
	if o.closer == nil {
		return nil
	}
	return o.closer.Close()
}
