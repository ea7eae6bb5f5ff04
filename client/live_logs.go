package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/buildbarn/bb-storage/pkg/digest"
	"google.golang.org/genproto/googleapis/longrunning"
)

// followedLog is one of an action's two logs as a person sees it: the
// bytes shown so far, live or from the ActionResult, go to out exactly
// once and in order.
type followedLog struct {
	out  io.Writer
	name string

	mu    sync.Mutex
	shown int64
}

func (l *followedLog) write(p []byte) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	n, err := l.out.Write(p)
	l.shown += int64(n)
	return err
}

// follow copies the live log from where the output stands until the
// log ends or ctx is cancelled. A log that cannot be read live (the
// action ended first, the server forgets it) is not an error: what was
// not shown comes from the ActionResult.
func (l *followedLog) follow(ctx context.Context, remote *Remote) {
	l.mu.Lock()
	offset := l.shown
	l.mu.Unlock()
	remote.ReadResource(ctx, l.name, offset, l.write)
}

// logFollower shows an action's stdout and stderr while it runs, when
// the server names them in ExecuteOperationMetadata (REAPI 2.1), and
// the rest from the ActionResult once it is done. Servers that name no
// streams (Buildbarn) get the whole logs at the end.
type logFollower struct {
	remote         *Remote
	stdout, stderr followedLog
	ctx            context.Context
	cancel         context.CancelFunc
	wg             sync.WaitGroup
	started        bool
}

func newLogFollower(ctx context.Context, r *Remote, stdout, stderr io.Writer) *logFollower {
	f := &logFollower{remote: r, stdout: followedLog{out: stdout}, stderr: followedLog{out: stderr}}
	f.ctx, f.cancel = context.WithCancel(ctx)
	return f
}

// observe starts following the streams the first operation whose
// metadata names them gives. Later names are ignored: one execution,
// one pair of logs.
func (f *logFollower) observe(op *longrunning.Operation) {
	metadata := Metadata(op)
	if f.started || (metadata.GetStdoutStreamName() == "" && metadata.GetStderrStreamName() == "") {
		return
	}
	f.started = true
	for _, l := range []*followedLog{&f.stdout, &f.stderr} {
		l.name = metadata.StdoutStreamName
		if l == &f.stderr {
			l.name = metadata.StderrStreamName
		}
		if l.name == "" {
			continue
		}
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			l.follow(f.ctx, f.remote)
		}()
	}
}

// finish stops following and writes what the live streams did not
// show of the result's logs.
func (f *logFollower) finish(ctx context.Context, result *remoteexecution.ActionResult) error {
	f.cancel()
	f.wg.Wait()
	if result == nil {
		return nil
	}
	var errs []error
	for _, log := range []struct {
		l      *followedLog
		raw    []byte
		digest *remoteexecution.Digest
	}{{&f.stdout, result.StdoutRaw, result.StdoutDigest}, {&f.stderr, result.StderrRaw, result.StderrDigest}} {
		data := log.raw
		if len(data) == 0 && log.digest != nil {
			d, err := f.remote.function.NewDigestFromProto(log.digest)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if data, err = f.remote.Read(ctx, d); err != nil {
				errs = append(errs, fmt.Errorf("read the action's log: %w", err))
				continue
			}
		}
		if log.l.shown < int64(len(data)) {
			if err := log.l.write(data[log.l.shown:]); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// ExecuteShowingLogs runs an uploaded action as Execute does and writes
// its stdout and stderr to the given writers: while it runs when the
// server offers live logs, else once it is done. Each byte is written
// once, the logs end as the ActionResult has them.
func (r *Remote) ExecuteShowingLogs(ctx context.Context, action digest.Digest, skipCacheLookup bool, progress Progress, stdout, stderr io.Writer) (*remoteexecution.ExecuteResponse, error) {
	follower := newLogFollower(ctx, r, stdout, stderr)
	response, err := r.ExecuteObserving(ctx, action, skipCacheLookup, progress, follower.observe)
	if err != nil {
		follower.finish(ctx, nil)
		return nil, err
	}
	if err := follower.finish(ctx, response.Result); err != nil {
		return response, err
	}
	return response, nil
}
