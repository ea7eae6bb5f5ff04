package sandbox

import (
	"fmt"
	"os"
)

// pipes connects the worker to a sandbox's PID 1: its config going in,
// its status, stdout and stderr coming out, and optionally the start
// signal sent once the child is in its cgroups.
type pipes struct {
	configR, configW *os.File
	statusR, statusW *os.File
	stdoutR, stdoutW *os.File
	stderrR, stderrW *os.File
	startR, startW   *os.File
}

func newPipes(withStart bool) (*pipes, error) {
	p := &pipes{}
	pairs := []struct{ r, w **os.File }{
		{&p.configR, &p.configW},
		{&p.statusR, &p.statusW},
		{&p.stdoutR, &p.stdoutW},
		{&p.stderrR, &p.stderrW},
	}
	if withStart {
		pairs = append(pairs, struct{ r, w **os.File }{&p.startR, &p.startW})
	}
	for _, pair := range pairs {
		r, w, err := os.Pipe()
		if err != nil {
			p.closeAll()
			return nil, fmt.Errorf("sandbox: create pipe: %w", err)
		}
		*pair.r, *pair.w = r, w
	}
	return p, nil
}

// childFiles are passed as descriptors 3, 4 and 5 (child.ConfigFD,
// StatusFD, StartFD).
func (p *pipes) childFiles() []*os.File {
	files := []*os.File{p.configR, p.statusW}
	if p.startR != nil {
		files = append(files, p.startR)
	}
	return files
}

// closeChildEnds drops the worker's copies of the child's ends, so
// that reads see EOF once every process of the sandbox is gone.
func (p *pipes) closeChildEnds() {
	for _, f := range []**os.File{&p.configR, &p.statusW, &p.stdoutW, &p.stderrW, &p.startR} {
		if *f != nil {
			(*f).Close()
			*f = nil
		}
	}
}

func (p *pipes) closeAll() {
	for _, f := range []*os.File{p.configR, p.configW, p.statusR, p.statusW, p.stdoutR, p.stdoutW, p.stderrR, p.stderrW, p.startR, p.startW} {
		if f != nil {
			f.Close()
		}
	}
}
