package sandbox

import (
	"fmt"
	"os"
)

// pipes connects the worker to a sandbox's PID 1: its Prepare and
// Action going in, its status, stdout and stderr coming out.
type pipes struct {
	configR, configW *os.File
	statusR, statusW *os.File
	stdoutR, stdoutW *os.File
	stderrR, stderrW *os.File
}

func newPipes() (*pipes, error) {
	p := &pipes{}
	var err error
	if p.statusR, p.statusW, err = newStatusSocket(); err != nil {
		return nil, fmt.Errorf("sandbox: create status socket: %w", err)
	}
	for _, pair := range []struct{ r, w **os.File }{
		{&p.configR, &p.configW},
		{&p.stdoutR, &p.stdoutW},
		{&p.stderrR, &p.stderrW},
	} {
		r, w, err := os.Pipe()
		if err != nil {
			p.closeAll()
			return nil, fmt.Errorf("sandbox: create pipe: %w", err)
		}
		*pair.r, *pair.w = r, w
	}
	return p, nil
}

// closeChildEnds drops the worker's copies of the child's ends, so
// that reads see EOF once every process of the sandbox is gone.
func (p *pipes) closeChildEnds() {
	for _, f := range []**os.File{&p.configR, &p.statusW, &p.stdoutW, &p.stderrW} {
		if *f != nil {
			(*f).Close()
			*f = nil
		}
	}
}

func (p *pipes) closeAll() {
	for _, f := range []*os.File{p.configR, p.configW, p.statusR, p.statusW, p.stdoutR, p.stdoutW, p.stderrR, p.stderrW} {
		if f != nil {
			f.Close()
		}
	}
}
