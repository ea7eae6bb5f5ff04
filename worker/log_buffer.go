package worker

import (
	"bytes"
	"context"
	"os"

	"github.com/bitzel/bitzel-worker/outputs"
	"github.com/buildbarn/bb-storage/pkg/digest"
)

// logMemoryLimit is how much of a stdout or stderr stays in memory
// before it goes to a file. Most actions print little: keeping that in
// memory spares each action two files created, read back and deleted.
const logMemoryLimit = 1 << 20

// logBuffer receives one of an action's output streams: in memory up
// to logMemoryLimit, then in a file at path.
type logBuffer struct {
	path    string
	mem     bytes.Buffer
	file    *os.File
	spilled bool
	err     error
}

func newLogBuffer(path string) *logBuffer {
	return &logBuffer{path: path}
}

func (l *logBuffer) Write(p []byte) (int, error) {
	if l.err != nil {
		return 0, l.err
	}
	if l.file == nil && l.mem.Len()+len(p) <= logMemoryLimit {
		return l.mem.Write(p)
	}
	if l.file == nil {
		f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			l.err = err
			return 0, err
		}
		l.file, l.spilled = f, true
		if _, err := f.Write(l.mem.Bytes()); err != nil {
			l.err = err
			return 0, err
		}
		l.mem = bytes.Buffer{}
	}
	n, err := l.file.Write(p)
	if err != nil {
		l.err = err
	}
	return n, err
}

// upload stores the stream in the CAS and returns its digest. It may be
// called again after a failure.
func (l *logBuffer) upload(ctx context.Context, outputs outputs.OutputCapturer, instanceName digest.InstanceName, function digest.Function) (digest.Digest, error) {
	if l.err != nil {
		return digest.BadDigest, l.err
	}
	if !l.spilled {
		return outputs.UploadBlob(ctx, instanceName, function, l.mem.Bytes())
	}
	if l.file != nil {
		err := l.file.Close()
		l.file = nil
		if err != nil {
			l.err = err
			return digest.BadDigest, err
		}
	}
	return outputs.UploadFile(ctx, instanceName, function, l.path)
}
