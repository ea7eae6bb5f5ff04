package e2e

import (
	"archive/tar"
	"bufio"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/bitzel/bitzel-worker/images/imagetest"
	"github.com/bitzel/bitzel-worker/internal/testsupport"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

type tarEntry = imagetest.Entry

// busyboxImage is an image built here: a lower layer with a static
// busybox as /bin and two files in /etc, and an upper one that deletes
// one of them (a whiteout) and adds another.
func busyboxImage(t *testing.T) v1.Image {
	t.Helper()
	data := testsupport.StaticBusyboxData(t)
	base := []tarEntry{
		{Name: "bin/", Type: tar.TypeDir, Mode: 0o755},
		{Name: "bin/busybox", Type: tar.TypeReg, Mode: 0o755, Body: string(data)},
		{Name: "etc/", Type: tar.TypeDir, Mode: 0o755},
		{Name: "etc/os-release", Type: tar.TypeReg, Body: "ID=test-image\n"},
		{Name: "etc/gone", Type: tar.TypeReg, Body: "must be hidden\n"},
	}
	for _, applet := range []string{"sh", "cat", "test", "echo"} {
		base = append(base, tarEntry{Name: "bin/" + applet, Type: tar.TypeSymlink, Link: "busybox"})
	}
	img, err := mutate.AppendLayers(empty.Image,
		imagetest.Layer(t, base...),
		imagetest.Layer(t,
			tarEntry{Name: "etc/", Type: tar.TypeDir, Mode: 0o755},
			tarEntry{Name: "etc/.wh.gone", Type: tar.TypeReg},
			tarEntry{Name: "etc/added", Type: tar.TypeReg, Body: "upper layer\n"},
			// Skipped: an image's device node never reaches an action.
			tarEntry{Name: "etc/mem", Type: tar.TypeChar}),
	)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func scrapeCounter(t *testing.T, s *server, metric string) float64 {
	t.Helper()
	response, err := http.Get("http://" + s.metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer response.Body.Close()
	scanner := bufio.NewScanner(response.Body)
	for scanner.Scan() {
		if rest, ok := strings.CutPrefix(scanner.Text(), metric+" "); ok {
			v, _ := strconv.ParseFloat(rest, 64)
			return v
		}
	}
	t.Fatalf("no metric %s", metric)
	return 0
}

// TestContainerImage: an action naming container-image runs with the
// image (an OCI layout, or the same image as a docker save archive) as
// its "/" under its input root; its layers are extracted once, so the
// second and later placements extract nothing; an image not
// configured, and images with hostile layers, are refused with
// FAILED_PRECONDITION.
func TestContainerImage(t *testing.T) {
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	img := busyboxImage(t)
	layoutDir, archive := imagetest.WriteSources(t, dir, "example.org/saved:1", img)
	hostile := func(file string, entries ...tarEntry) string {
		bad, err := mutate.AppendLayers(empty.Image, imagetest.Layer(t, entries...))
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, file)
		badTag, _ := name.NewTag("bad:1")
		if err := tarball.WriteToFile(path, badTag, bad); err != nil {
			t.Fatal(err)
		}
		return path
	}
	outside := filepath.Join(dir, "outside")
	os.Mkdir(outside, 0o777)
	s := startServer(t,
		"--container-image", "docker://example.org/tools:1="+layoutDir,
		"--container-image", "docker://example.org/saved:1="+archive,
		"--container-image", "docker://bad/absolute:1="+hostile("absolute.tar", tarEntry{Name: "/etc/passwd", Type: tar.TypeReg, Body: "x"}),
		"--container-image", "docker://bad/dotdot:1="+hostile("dotdot.tar", tarEntry{Name: "../../escape", Type: tar.TypeReg, Body: "x"}),
		"--container-image", "docker://bad/symlink:1="+hostile("symlink.tar",
			tarEntry{Name: "evil", Type: tar.TypeSymlink, Link: outside},
			tarEntry{Name: "evil/pwned", Type: tar.TypeReg, Body: "x"}),
	)
	c := s.client()
	input := c.tree(map[string]entry{"input.txt": {content: "from the input root\n"}})
	script := "cat /etc/os-release /input.txt /etc/added; test -e /etc/gone && echo gone-visible; test -e /etc/mem && echo device-visible; echo out > /out.txt"
	want := "ID=test-image\nfrom the input root\nupper layer\n"
	for i, ref := range []string{"docker://example.org/tools:1", "docker://example.org/tools:1", "docker://example.org/saved:1"} {
		result := c.run(action{
			args:        sh(script + "; echo run " + strconv.Itoa(i) + " >&2"),
			input:       input,
			outputFiles: []string{"out.txt"},
			platform:    map[string]string{"container-image": ref, "OSFamily": "linux"},
		})
		if got := string(c.read(result.StdoutDigest)); got != want || result.ExitCode != 0 {
			t.Fatalf("%s, run %d: exit %d, stdout %q, stderr %q; want %q", ref, i, result.ExitCode, got, c.read(result.StderrDigest), want)
		}
		if len(result.OutputFiles) != 1 || string(c.read(result.OutputFiles[0].Digest)) != "out\n" {
			t.Fatalf("%s: outputs %v", ref, result.OutputFiles)
		}
		// Both layers are extracted by the first run only: the
		// second run, and the archive holding the same layers, find
		// them by diff ID.
		if got := scrapeCounter(t, s, "bitzel_images_layers_extracted_total"); got != 2 {
			t.Fatalf("after run %d: %v layers extracted, want 2", i, got)
		}
	}
	if got := scrapeCounter(t, s, "bitzel_images_placements_total"); got != 3 {
		t.Errorf("%v placements, want 3", got)
	}

	refused := func(ref, want string) {
		t.Helper()
		response, _ := c.execute(c.newAction(action{args: []string{"/bin/true"}, platform: map[string]string{"container-image": ref}}), false)
		st := status.FromProto(response.Status)
		if st.Code() != codes.FailedPrecondition || !strings.Contains(st.Message(), want) {
			t.Errorf("%s: %v, want FAILED_PRECONDITION containing %q", ref, st, want)
		}
	}
	refused("docker://ubuntu:22.04", "--container-image docker://NAME:TAG=")
	refused("docker://bad/absolute:1", "absolute path")
	refused("docker://bad/dotdot:1", `".."`)
	refused("docker://bad/symlink:1", "not a directory inside the layer")
	if names, _ := os.ReadDir(outside); len(names) != 0 {
		t.Errorf("a hostile layer wrote outside its directory: %v", names)
	}
	if names, _ := os.ReadDir(filepath.Join(s.dataDir, "images", "tmp")); len(names) != 0 {
		t.Errorf("refused layers left behind: %v", names)
	}
}
