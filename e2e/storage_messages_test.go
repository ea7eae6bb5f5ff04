package e2e

import (
	"strings"
	"testing"
)

// TestStorageStartUpIsQuietUnlessStateWasLost: a first start, and a
// start after a clean stop (with or without anything stored), print no
// storage line (bb-storage's "Reinitializing data store, as persistent
// state was not found" appeared at every start). A start after kill -9
// of a run that never saved its stores' state says so once per store,
// naming it; after kill -9 of a run started from a saved state, the
// stores reopen at that state (what was stored since is lost, as in any
// cache) and the start is quiet.
func TestStorageStartUpIsQuietUnlessStateWasLost(t *testing.T) {
	quiet := func(s *server, when string) {
		t.Helper()
		for _, line := range strings.Split(s.logs(), "\n") {
			if strings.Contains(line, "storage") && strings.Contains(line, "missing") || strings.Contains(line, "Reinitializing") {
				t.Errorf("%s: %q", when, line)
			}
		}
	}
	s := startServer(t)
	quiet(s, "first start")
	s.stop()
	empty := startServerIn(t, s.dataDir)
	quiet(empty, "start after a clean stop of a run that stored nothing")
	c := empty.client()
	if response, _ := c.execute(c.newAction(action{args: sh(`echo stored`)}), false); response.GetResult().GetExitCode() != 0 {
		t.Fatalf("action: %v", response)
	}
	empty.stop()
	used := startServerIn(t, s.dataDir)
	quiet(used, "start after a clean stop of a run that stored something")
	used.cmd.Process.Kill()
	<-used.exited
	reopened := startServerIn(t, s.dataDir)
	quiet(reopened, "start after kill -9 of a run started from saved state")
	reopened.stop()

	fresh := startServer(t)
	c = fresh.client()
	if response, _ := c.execute(c.newAction(action{args: sh(`echo stored`)}), false); response.GetResult().GetExitCode() != 0 {
		t.Fatalf("action: %v", response)
	}
	fresh.cmd.Process.Kill()
	<-fresh.exited
	lost := startServerIn(t, fresh.dataDir)
	logs := lost.logs()
	for _, store := range []string{"cas", "ac"} {
		if n := strings.Count(logs, "storage/"+store+"/state/state is missing (the last run stopped before saving it)"); n != 1 {
			t.Errorf("start after kill -9 of a first run: %d lines on the %s store's lost state, want 1:\n%s", n, store, logs)
		}
	}
	if strings.Contains(logs, "Reinitializing") {
		t.Errorf("start after kill -9 repeats bb-storage's own line:\n%s", logs)
	}
}
