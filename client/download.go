package client

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/buildbarn/bb-storage/pkg/digest"
	"google.golang.org/protobuf/proto"
)

// Download writes the outputs of result under dest: files with their
// mode (the unix_mode node property when the action asked for it, else
// 0755 or 0644 by the executable bit), directories from their Trees,
// symlinks as symlinks. Paths that would leave dest are refused.
func (r *Remote) Download(ctx context.Context, result *remoteexecution.ActionResult, dest string, progress Progress) error {
	// A server may list a symlink both in output_symlinks and in the
	// legacy field of its kind: written, and counted, once.
	var symlinks []*remoteexecution.OutputSymlink
	seen := map[string]bool{}
	for _, s := range slices.Concat(result.OutputSymlinks, result.OutputFileSymlinks, result.OutputDirectorySymlinks) {
		if !seen[s.Path] {
			seen[s.Path] = true
			symlinks = append(symlinks, s)
		}
	}
	total := len(result.OutputFiles) + len(result.OutputDirectories) + len(symlinks)
	done := 0
	step := func() { done++; progress.Downloading(done, total) }
	progress.Downloading(0, total)
	for _, f := range result.OutputFiles {
		target, err := inside(dest, f.Path)
		if err != nil {
			return err
		}
		if err := r.writeFile(ctx, target, f.Digest, f.IsExecutable, f.NodeProperties); err != nil {
			return err
		}
		step()
	}
	for _, s := range symlinks {
		target, err := inside(dest, s.Path)
		if err != nil {
			return err
		}
		if err := replaceWithSymlink(s.Target, target); err != nil {
			return err
		}
		step()
	}
	for _, d := range result.OutputDirectories {
		target, err := inside(dest, d.Path)
		if err != nil {
			return err
		}
		if err := r.writeTree(ctx, target, d.TreeDigest); err != nil {
			return fmt.Errorf("output directory %q: %w", d.Path, err)
		}
		step()
	}
	return nil
}

// inside joins a relative output path to dest, refusing escapes.
func inside(dest, p string) (string, error) {
	clean := filepath.Clean(p)
	if filepath.IsAbs(p) || clean == ".." || strings.HasPrefix(clean, "../") {
		return "", fmt.Errorf("output path %q leaves the output directory", p)
	}
	return filepath.Join(dest, clean), nil
}

func (r *Remote) writeFile(ctx context.Context, path string, d *remoteexecution.Digest, executable bool, properties *remoteexecution.NodeProperties) error {
	blobDigest, err := r.function.NewDigestFromProto(d)
	if err != nil {
		return err
	}
	data, err := r.Read(ctx, blobDigest)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	os.Remove(path)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return err
	}
	mode := os.FileMode(0o644)
	if executable {
		mode = 0o755
	}
	return applyProperties(path, mode, properties)
}

// applyProperties sets the mode (including setuid/setgid/sticky, which
// os.Chmod takes as Go mode bits) and mtime the action reported.
func applyProperties(path string, mode os.FileMode, properties *remoteexecution.NodeProperties) error {
	if m := properties.GetUnixMode(); m != nil {
		unixMode := m.GetValue()
		mode = os.FileMode(unixMode & 0o777)
		if unixMode&0o4000 != 0 {
			mode |= os.ModeSetuid
		}
		if unixMode&0o2000 != 0 {
			mode |= os.ModeSetgid
		}
		if unixMode&0o1000 != 0 {
			mode |= os.ModeSticky
		}
	}
	if err := os.Chmod(path, mode); err != nil {
		return err
	}
	if t := properties.GetMtime(); t != nil && t.IsValid() {
		if err := os.Chtimes(path, t.AsTime(), t.AsTime()); err != nil {
			return err
		}
	}
	return nil
}

func replaceWithSymlink(target, path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	os.Remove(path)
	return os.Symlink(target, path)
}

func (r *Remote) writeTree(ctx context.Context, path string, treeDigest *remoteexecution.Digest) error {
	d, err := r.function.NewDigestFromProto(treeDigest)
	if err != nil {
		return err
	}
	data, err := r.Read(ctx, d)
	if err != nil {
		return err
	}
	tree := &remoteexecution.Tree{}
	if err := proto.Unmarshal(data, tree); err != nil {
		return fmt.Errorf("decode Tree: %w", err)
	}
	children := map[digest.Digest]*remoteexecution.Directory{}
	for _, child := range tree.Children {
		encoded, err := proto.MarshalOptions{Deterministic: true}.Marshal(child)
		if err != nil {
			return err
		}
		children[r.digestOf(encoded)] = child
	}
	return r.writeDirectory(ctx, path, tree.Root, children)
}

func (r *Remote) writeDirectory(ctx context.Context, path string, directory *remoteexecution.Directory, children map[digest.Digest]*remoteexecution.Directory) error {
	if err := os.MkdirAll(path, 0o755); err != nil {
		return err
	}
	for _, f := range directory.Files {
		target, err := inside(path, f.Name)
		if err != nil || strings.Contains(f.Name, "/") {
			return fmt.Errorf("bad file name %q", f.Name)
		}
		if err := r.writeFile(ctx, target, f.Digest, f.IsExecutable, f.NodeProperties); err != nil {
			return err
		}
	}
	for _, s := range directory.Symlinks {
		if strings.Contains(s.Name, "/") || s.Name == ".." || s.Name == "." {
			return fmt.Errorf("bad symlink name %q", s.Name)
		}
		if err := replaceWithSymlink(s.Target, filepath.Join(path, s.Name)); err != nil {
			return err
		}
	}
	for _, node := range directory.Directories {
		if strings.Contains(node.Name, "/") || node.Name == ".." || node.Name == "." {
			return fmt.Errorf("bad directory name %q", node.Name)
		}
		d, err := r.function.NewDigestFromProto(node.Digest)
		if err != nil {
			return err
		}
		child, ok := children[d]
		if !ok {
			return fmt.Errorf("the Tree lacks directory %s", d)
		}
		if err := r.writeDirectory(ctx, filepath.Join(path, node.Name), child, children); err != nil {
			return err
		}
	}
	// Last, so a read-only mode does not stop the writes above.
	return applyProperties(path, 0o755, directory.NodeProperties)
}
