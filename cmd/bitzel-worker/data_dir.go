package main

import (
	"os"
	"path/filepath"
)

// defaultDataDir is where a zero-config worker keeps its CAS, caches
// and sandbox state: a system directory for root, the user's cache
// directory otherwise.
func defaultDataDir() string {
	if os.Geteuid() == 0 {
		return "/var/lib/bitzel-worker"
	}
	if dir, err := os.UserCacheDir(); err == nil {
		return filepath.Join(dir, "bitzel-worker")
	}
	return filepath.Join(os.TempDir(), "bitzel-worker-"+os.Getenv("USER"))
}
