package child

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
)

// Prepare, Action and Status travel between the worker and PID 1 in a
// small binary form of their own, not as JSON: encoding/json's first
// use in a process (reflecting over the types, base64 of the seccomp
// filter) took about 0.25 ms of PID 1's CPU when it served a single
// action, and a PID 1 without encoding/json links less. The launcher's
// messages stay JSON: it lives as long as the worker.
//
// A message is a frame: its body's length (uvarint), then the body,
// every field of the type in declaration order. Integers are varints,
// strings and byte slices a uvarint length and the bytes, lists a
// uvarint count and the elements, a pointer a 0/1 byte before what it
// points to. TestWireRoundTripsEveryField fails when a field is added
// to one of the types and not here; ProtocolVersion covers the rest.

// maxFrameBytes bounds one message: the argv and environment of a
// command the worker accepted, and paths, are far below it.
const maxFrameBytes = 64 << 20

// WritePrepare writes p as one frame.
func WritePrepare(w io.Writer, p *Prepare) error {
	var e wireEncoder
	e.str(p.NewRoot)
	e.str(p.ExecRootPath)
	e.bool(p.ExecRootIsRoot)
	e.strs(p.HostPaths)
	e.str(p.Hostname)
	e.bool(p.LegacyOverlay)
	e.bytes(p.SeccompFilter)
	e.int(p.ShmSizeBytes)
	e.bool(p.UserNamespaceLimits != nil)
	if l := p.UserNamespaceLimits; l != nil {
		// Sorted: the same Prepare is the same bytes.
		names := make([]string, 0, len(l.Sysctls))
		for name := range l.Sysctls {
			names = append(names, name)
		}
		slices.Sort(names)
		e.uint(uint64(len(names)))
		for _, name := range names {
			e.str(name)
			e.int(l.Sysctls[name])
		}
		e.uint(l.MessageQueueBytes)
	}
	e.strs(p.DataRoots)
	e.uint(p.MaxProcesses)
	return e.writeFrame(w)
}

// ReadPrepare reads one frame written by WritePrepare; io.EOF when the
// stream ended before it.
func ReadPrepare(r *bufio.Reader) (*Prepare, error) {
	d, err := readFrame(r)
	if err != nil {
		return nil, err
	}
	p := &Prepare{
		NewRoot:        d.str(),
		ExecRootPath:   d.str(),
		ExecRootIsRoot: d.bool(),
		HostPaths:      d.strs(),
		Hostname:       d.str(),
		LegacyOverlay:  d.bool(),
		SeccompFilter:  d.bytes(),
		ShmSizeBytes:   d.int(),
	}
	if d.bool() {
		l := &UserNamespaceLimits{}
		if n := d.count(); n > 0 {
			l.Sysctls = make(map[string]int64, n)
			for range n {
				name := d.str()
				l.Sysctls[name] = d.int()
			}
		}
		l.MessageQueueBytes = d.uint()
		p.UserNamespaceLimits = l
	}
	p.DataRoots = d.strs()
	p.MaxProcesses = d.uint()
	return p, d.finish("prepare")
}

// WriteAction writes a as one frame.
func WriteAction(w io.Writer, a *Action) error {
	frame, err := EncodeAction(a)
	if err != nil {
		return err
	}
	_, err = w.Write(frame)
	return err
}

// EncodeAction returns a as one frame, or why it cannot be sent.
func EncodeAction(a *Action) ([]byte, error) {
	var e wireEncoder
	e.uint(uint64(len(a.Mounts)))
	for _, m := range a.Mounts {
		e.str(m.Path)
		e.strs(m.Layers)
		e.str(m.UpperDir)
		e.str(m.WorkDir)
	}
	e.int(a.TmpSizeBytes)
	e.strs(a.Argv)
	e.strs(a.Env)
	e.str(a.WorkingDirectory)
	e.bool(a.ExecRootIsRoot)
	e.int(a.DiskBytes)
	if err := e.checkSize(); err != nil {
		return nil, err
	}
	return e.frame(), nil
}

// ReadAction reads one frame written by WriteAction; io.EOF when the
// stream ended before it (the worker discarded the sandbox).
func ReadAction(r *bufio.Reader) (*Action, error) {
	d, err := readFrame(r)
	if err != nil {
		return nil, err
	}
	a := &Action{}
	if n := d.count(); n > 0 {
		a.Mounts = make([]Mount, n)
		for i := range a.Mounts {
			a.Mounts[i] = Mount{Path: d.str(), Layers: d.strs(), UpperDir: d.str(), WorkDir: d.str()}
		}
	}
	a.TmpSizeBytes = d.int()
	a.Argv = d.strs()
	a.Env = d.strs()
	a.WorkingDirectory = d.str()
	a.ExecRootIsRoot = d.bool()
	a.DiskBytes = d.int()
	return a, d.finish("action")
}

// EncodeStatus returns s as one frame.
func EncodeStatus(s *Status) []byte {
	var e wireEncoder
	e.str(s.Error)
	e.str(s.Stage)
	e.bool(s.NotFound)
	e.int(int64(s.ExitCode))
	e.int(int64(s.Signal))
	e.int(s.UserTimeNanos)
	e.int(s.SystemTimeNanos)
	e.int(s.MaxRSSBytes)
	e.int(s.SetupNanos)
	e.bool(s.Retire)
	return e.frame()
}

// DecodeStatus parses what EncodeStatus returned, and nothing after it.
func DecodeStatus(data []byte) (*Status, error) {
	n, headerLength := binary.Uvarint(data)
	if headerLength <= 0 || n > uint64(len(data)-headerLength) {
		return nil, fmt.Errorf("status: truncated or malformed frame of %d bytes", len(data))
	}
	if rest := len(data) - headerLength - int(n); rest > 0 {
		return nil, fmt.Errorf("status: %d bytes after the message", rest)
	}
	d := &wireDecoder{body: data[headerLength:]}
	s := &Status{
		Error:           d.str(),
		Stage:           d.str(),
		NotFound:        d.bool(),
		ExitCode:        int(d.int()),
		Signal:          int(d.int()),
		UserTimeNanos:   d.int(),
		SystemTimeNanos: d.int(),
		MaxRSSBytes:     d.int(),
		SetupNanos:      d.int(),
		Retire:          d.bool(),
	}
	if err := d.finish("status"); err != nil {
		return nil, err
	}
	return s, nil
}

type wireEncoder struct{ body []byte }

func (e *wireEncoder) uint(v uint64) { e.body = binary.AppendUvarint(e.body, v) }
func (e *wireEncoder) int(v int64)   { e.body = binary.AppendVarint(e.body, v) }

func (e *wireEncoder) bool(v bool) {
	if v {
		e.body = append(e.body, 1)
	} else {
		e.body = append(e.body, 0)
	}
}

func (e *wireEncoder) str(s string) {
	e.uint(uint64(len(s)))
	e.body = append(e.body, s...)
}

func (e *wireEncoder) bytes(b []byte) {
	e.uint(uint64(len(b)))
	e.body = append(e.body, b...)
}

func (e *wireEncoder) strs(list []string) {
	e.uint(uint64(len(list)))
	for _, s := range list {
		e.str(s)
	}
}

func (e *wireEncoder) frame() []byte {
	return append(binary.AppendUvarint(nil, uint64(len(e.body))), e.body...)
}

// writeFrame writes the frame in one call: a pipe takes it whole (up
// to its buffer) whether or not PID 1 reads yet.
func (e *wireEncoder) writeFrame(w io.Writer) error {
	if err := e.checkSize(); err != nil {
		return err
	}
	_, err := w.Write(e.frame())
	return err
}

func (e *wireEncoder) checkSize() error {
	if len(e.body) > maxFrameBytes {
		return fmt.Errorf("sandbox message of %d bytes is larger than %d", len(e.body), maxFrameBytes)
	}
	return nil
}

// wireDecoder reads fields from a frame's body. The first short or
// malformed field sets err; every later one reads as its zero value,
// so that a message is checked once, in finish.
type wireDecoder struct {
	body []byte
	err  error
}

func readFrame(r *bufio.Reader) (*wireDecoder, error) {
	n, err := binary.ReadUvarint(r)
	if errors.Is(err, io.EOF) && r.Buffered() == 0 {
		return nil, io.EOF
	} else if err != nil {
		return nil, fmt.Errorf("frame length: %w", noEOF(err))
	}
	if n > maxFrameBytes {
		return nil, fmt.Errorf("frame of %d bytes is larger than %d", n, maxFrameBytes)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, fmt.Errorf("frame of %d bytes: %w", n, noEOF(err))
	}
	return &wireDecoder{body: body}, nil
}

// noEOF makes an end of stream inside a frame an error of its own: only
// an end between frames is io.EOF.
func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

func (d *wireDecoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("truncated or malformed %s", what)
	}
}

func (d *wireDecoder) uint() uint64 { return readVarint(d, binary.Uvarint, "unsigned integer") }
func (d *wireDecoder) int() int64   { return readVarint(d, binary.Varint, "integer") }

func readVarint[T uint64 | int64](d *wireDecoder, decode func([]byte) (T, int), what string) T {
	if d.err != nil {
		return 0
	}
	v, n := decode(d.body)
	if n <= 0 {
		d.fail(what)
		return 0
	}
	d.body = d.body[n:]
	return v
}

func (d *wireDecoder) bool() bool {
	if d.err != nil {
		return false
	}
	if len(d.body) == 0 || d.body[0] > 1 {
		d.fail("boolean")
		return false
	}
	v := d.body[0] == 1
	d.body = d.body[1:]
	return v
}

// count reads a list's length, which cannot exceed what is left of the
// body (every element takes a byte at least): a forged count cannot
// make the reader allocate more than the frame holds.
func (d *wireDecoder) count() int {
	n := d.uint()
	if n > uint64(len(d.body)) {
		d.fail("list length")
		return 0
	}
	return int(n)
}

func (d *wireDecoder) raw() []byte {
	n := d.count()
	if d.err != nil {
		return nil
	}
	v := d.body[:n:n]
	d.body = d.body[n:]
	return v
}

func (d *wireDecoder) str() string { return string(d.raw()) }

func (d *wireDecoder) bytes() []byte {
	if v := d.raw(); len(v) > 0 {
		return slices.Clone(v)
	}
	return nil
}

func (d *wireDecoder) strs() []string {
	n := d.count()
	if n == 0 {
		return nil
	}
	list := make([]string, n)
	for i := range list {
		list[i] = d.str()
	}
	return list
}

// finish reports the first error, or bytes left over: both mean the
// two ends do not speak the same protocol.
func (d *wireDecoder) finish(message string) error {
	if d.err != nil {
		return fmt.Errorf("%s: %w", message, d.err)
	}
	if len(d.body) > 0 {
		return fmt.Errorf("%s: %d bytes after the last field", message, len(d.body))
	}
	return nil
}
