package statuspage

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/buildbarn/bb-storage/pkg/digest"
	"google.golang.org/protobuf/proto"
)

// maximumDirectoriesWalked bounds the input root walk of one page view:
// a BitBake sysroot can hold tens of thousands of directories, and the
// page must not turn into a CAS load test.
const maximumDirectoriesWalked = 5000

type actionPage struct {
	Now        time.Time
	Record     *Record
	Outcome    string
	Duration   time.Duration
	Segments   []segment
	Running    bool
	Action     *remoteexecution.Action
	Command    *remoteexecution.Command
	FetchError string
	Input      inputRoot
	Stdout     logView
	Stderr     logView
	Usage      []usageItem
	Remotetool string
	// LayersBuilt counts the layers this action built (0: all were
	// cached).
	LayersBuilt int
}

type inputRoot struct {
	Known              bool
	Files, Directories int
	Bytes              int64
	Incomplete         bool
	Subtrees           []subtree
	Error              string
}

type subtree struct {
	Name  string
	Files int
	Bytes int64
}

type logView struct {
	Present   bool
	Text      string
	Size      int64
	Truncated bool
	Error     string
	Link      string
}

type usageItem struct {
	Name, Value string
}

func (h *handler) serveAction(w http.ResponseWriter, r *http.Request) {
	record, ok := h.lookup(w, r)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	now := time.Now()
	p := actionPage{Now: now, Record: record, Outcome: record.Outcome(), Duration: record.Duration(now), Running: !record.Done}
	for _, l := range record.Layers {
		if l.Built {
			p.LayersBuilt++
		}
	}
	if rs := rows([]*Record{record}, now); len(rs) == 1 {
		p.Segments = rs[0].Segments
	}
	p.Remotetool = fmt.Sprintf("remotetool --operation=show_action --instance=%q --digest=%s/%d",
		record.InstanceName.String(), record.ActionDigest.GetHashString(), record.ActionDigest.GetSizeBytes())
	var action remoteexecution.Action
	if err := h.fetchMessage(ctx, record, record.ActionDigest.GetProto(), &action); err != nil {
		p.FetchError = "action: " + err.Error()
	} else {
		p.Action = &action
		var command remoteexecution.Command
		if err := h.fetchMessage(ctx, record, action.CommandDigest, &command); err != nil {
			p.FetchError = "command: " + err.Error()
		} else {
			p.Command = &command
		}
		p.Input = h.walkInputRoot(ctx, record, action.InputRootDigest)
	}
	base := fmt.Sprintf("%sactions/%d/", Prefix, record.ID)
	p.Stdout = h.logTail(ctx, record, record.Stdout, base+"stdout")
	p.Stderr = h.logTail(ctx, record, record.Stderr, base+"stderr")
	for name, value := range record.Usage() {
		// The unit is in the value: "peak rss" 3.0 MiB.
		label := strings.TrimSuffix(strings.TrimSuffix(name, "_seconds"), "_bytes")
		p.Usage = append(p.Usage, usageItem{Name: strings.ReplaceAll(label, "_", " "), Value: usageValue(name, value)})
	}
	sort.Slice(p.Usage, func(i, j int) bool { return p.Usage[i].Name < p.Usage[j].Name })
	h.render(w, "action.html", &p)
}

func usageValue(name string, value any) string {
	f, ok := value.(float64)
	switch {
	case !ok:
		return fmt.Sprint(value)
	case strings.HasSuffix(name, "_bytes"):
		return formatBytes(f)
	case strings.HasSuffix(name, "_seconds"):
		return shortDuration(time.Duration(f * float64(time.Second)))
	}
	return fmt.Sprint(f)
}

func (h *handler) digest(record *Record, d *remoteexecution.Digest) (digest.Digest, error) {
	return record.DigestFunction.NewDigestFromProto(d)
}

func (h *handler) fetchMessage(ctx context.Context, record *Record, d *remoteexecution.Digest, m proto.Message) error {
	blobDigest, err := h.digest(record, d)
	if err != nil {
		return err
	}
	got, err := h.options.ContentAddressableStorage.Get(ctx, blobDigest).ToProto(m, h.options.MaximumMessageSizeBytes)
	if err != nil {
		return err
	}
	// ToProto fills its template, or returns a message of its own
	// (when the buffer was made from one).
	if got != m {
		proto.Reset(m)
		proto.Merge(m, got)
	}
	return nil
}

// walkInputRoot counts the input root's files and bytes, and those of
// each top-level directory (typically what became a layer: a
// toolchain, a source tree, a sysroot).
func (h *handler) walkInputRoot(ctx context.Context, record *Record, root *remoteexecution.Digest) inputRoot {
	var in inputRoot
	var rootDirectory remoteexecution.Directory
	if err := h.fetchMessage(ctx, record, root, &rootDirectory); err != nil {
		in.Error = err.Error()
		return in
	}
	in.Known = true
	budget := maximumDirectoriesWalked
	sizes := map[string]subtree{}
	var walk func(d *remoteexecution.Directory) (files int, bytes int64)
	walk = func(d *remoteexecution.Directory) (int, int64) {
		in.Directories++
		files, bytes := len(d.Files)+len(d.Symlinks), int64(0)
		for _, f := range d.Files {
			bytes += f.Digest.GetSizeBytes()
		}
		for _, child := range d.Directories {
			key := child.Digest.GetHash()
			if s, ok := sizes[key]; ok {
				// Identical subtrees are counted as often as
				// they appear, but fetched once.
				in.Directories++
				files, bytes = files+s.Files, bytes+s.Bytes
				continue
			}
			if budget <= 0 {
				in.Incomplete = true
				continue
			}
			budget--
			var c remoteexecution.Directory
			if err := h.fetchMessage(ctx, record, child.Digest, &c); err != nil {
				in.Incomplete = true
				continue
			}
			f, b := walk(&c)
			sizes[key] = subtree{Files: f, Bytes: b}
			files, bytes = files+f, bytes+b
		}
		return files, bytes
	}
	in.Files, in.Bytes = walk(&rootDirectory)
	for _, child := range rootDirectory.Directories {
		s := sizes[child.Digest.GetHash()]
		in.Subtrees = append(in.Subtrees, subtree{Name: child.Name + "/", Files: s.Files, Bytes: s.Bytes})
	}
	return in
}

// logTail reads the start of a log up to the page's limit.
func (h *handler) logTail(ctx context.Context, record *Record, d *remoteexecution.Digest, link string) logView {
	if d == nil {
		return logView{}
	}
	v := logView{Present: true, Size: d.SizeBytes, Link: link}
	if d.SizeBytes == 0 {
		return v
	}
	blobDigest, err := h.digest(record, d)
	if err != nil {
		v.Error = err.Error()
		return v
	}
	reader := h.options.ContentAddressableStorage.Get(ctx, blobDigest).ToReader()
	defer reader.Close()
	data, err := io.ReadAll(io.LimitReader(reader, h.options.LogTailBytes))
	if err != nil {
		v.Error = err.Error()
		return v
	}
	v.Truncated = int64(len(data)) < d.SizeBytes
	if v.Truncated {
		// Cut at a character boundary, not inside one.
		for len(data) > 0 && !utf8.Valid(data) {
			data = data[:len(data)-1]
		}
	}
	v.Text = strings.ToValidUTF8(string(data), "\uFFFD")
	return v
}

// serveBlob downloads a whole log, or the Action message (for
// remotetool or a local re-run).
func (h *handler) serveBlob(w http.ResponseWriter, r *http.Request) {
	record, ok := h.lookup(w, r)
	if !ok {
		return
	}
	var d *remoteexecution.Digest
	name, contentType := r.PathValue("log"), "text/plain; charset=utf-8"
	switch name {
	case "stdout":
		d = record.Stdout
	case "stderr":
		d = record.Stderr
	case "action":
		d, contentType = record.ActionDigest.GetProto(), "application/octet-stream"
	default:
		http.Error(w, "unknown blob "+fmt.Sprintf("%q", name)+": want stdout, stderr or action", http.StatusNotFound)
		return
	}
	if d == nil {
		http.Error(w, fmt.Sprintf("action %d has no %s (it has not completed, or failed before running)", record.ID, name), http.StatusNotFound)
		return
	}
	blobDigest, err := h.digest(record, d)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	reader := h.options.ContentAddressableStorage.Get(r.Context(), blobDigest).ToReader()
	defer reader.Close()
	// The first read tells a missing blob from one being sent.
	first := make([]byte, 32<<10)
	n, err := io.ReadFull(reader, first)
	if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
		http.Error(w, fmt.Sprintf("read %s from the CAS: %v", name, err), http.StatusBadGateway)
		return
	}
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Content-Length", fmt.Sprint(d.SizeBytes))
	w.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", fmt.Sprintf("%s-%d-%s", blobDigest.GetHashString()[:12], record.ID, name)))
	w.Write(first[:n])
	io.Copy(w, reader)
}
