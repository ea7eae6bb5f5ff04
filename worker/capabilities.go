package worker

import (
	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/bazelbuild/remote-apis/build/bazel/semver"
	"github.com/bitzel/bitzel-worker/layerproperty"
	"github.com/buildbarn/bb-storage/pkg/capabilities"
	"github.com/buildbarn/bb-storage/pkg/digest"
)

// API versions honoured. 2.0 is what Bazel 4 speaks (legacy
// output_files/output_directories, parents of outputs created by the
// worker); Buildbarn refuses it, which is why a Bazel 4 user cannot use
// Buildbarn and can use this worker.
var (
	LowAPIVersion  = &semver.SemVer{Major: 2, Minor: 0}
	HighAPIVersion = &semver.SemVer{Major: 2, Minor: 11}
)

// SupportedNodeProperties are the Directory/file node properties the
// worker honours: unix_mode and mtime on outputs when a Command asks,
// and bitzel.layers on input Directories.
var SupportedNodeProperties = []string{"unix_mode", "mtime", layerproperty.Name}

// SymlinkAbsolutePathStrategy is ALLOWED, as Buildbarn's: an absolute
// symlink, in an input or an output, points into the sandbox's own view
// (a host userland path such as Kbuild's links into /usr), and the
// worker never follows one itself. Relative symlinks that climb out of
// the input root are still refused.
const SymlinkAbsolutePathStrategy = remoteexecution.SymlinkAbsolutePathStrategy_ALLOWED

// NewCapabilitiesProvider describes `serve`: a CAS, an updatable AC and
// an Execution service, one digest function list for all of them.
func NewCapabilitiesProvider(maximumBatchSizeBytes int64) capabilities.Provider {
	return capabilities.NewStaticProvider(&remoteexecution.ServerCapabilities{
		CacheCapabilities: &remoteexecution.CacheCapabilities{
			DigestFunctions: digest.SupportedDigestFunctions,
			ActionCacheUpdateCapabilities: &remoteexecution.ActionCacheUpdateCapabilities{
				UpdateEnabled: true,
			},
			MaxBatchTotalSizeBytes:      maximumBatchSizeBytes,
			SymlinkAbsolutePathStrategy: SymlinkAbsolutePathStrategy,
		},
		ExecutionCapabilities: &remoteexecution.ExecutionCapabilities{
			DigestFunction:          remoteexecution.DigestFunction_SHA256,
			DigestFunctions:         digest.SupportedDigestFunctions,
			ExecEnabled:             true,
			SupportedNodeProperties: SupportedNodeProperties,
		},
		LowApiVersion:  LowAPIVersion,
		HighApiVersion: HighAPIVersion,
	})
}
