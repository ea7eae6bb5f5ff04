package e2e

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// updateActionResult writes a forged result for a fresh action digest
// and returns the status of the call.
func updateActionResult(c *client) codes.Code {
	forged := c.newAction(action{args: sh(`echo forged`)})
	_, err := c.ac.UpdateActionResult(context.Background(), &remoteexecution.UpdateActionResultRequest{
		ActionDigest: forged, ActionResult: &remoteexecution.ActionResult{ExitCode: 0},
	})
	return status.Code(err)
}

// By default any client may write the Action Cache (Bazel uploads its
// local results); --action-cache-read-only refuses that, and the
// worker's own results still go in.
func TestActionCacheReadOnlyRefusesClientWrites(t *testing.T) {
	if code := updateActionResult(startServer(t).client()); code != codes.OK {
		t.Errorf("by default UpdateActionResult is %v, want OK", code)
	}
	c := startServer(t, "--action-cache-read-only").client()
	if code := updateActionResult(c); code != codes.PermissionDenied {
		t.Errorf("read-only: UpdateActionResult is %v, want PERMISSION_DENIED", code)
	}
	caps, err := c.caps.GetCapabilities(context.Background(), &remoteexecution.GetCapabilitiesRequest{})
	if err != nil || caps.CacheCapabilities.GetActionCacheUpdateCapabilities().GetUpdateEnabled() {
		t.Errorf("read-only: capabilities say clients may update the Action Cache: %v", err)
	}
	a := c.newAction(action{args: sh(`echo mine`)})
	c.execute(a, false)
	response, _ := c.execute(a, false)
	if !response.CachedResult {
		t.Error("read-only: the worker's own result was not cached")
	}
	if _, err := c.ac.GetActionResult(context.Background(), &remoteexecution.GetActionResultRequest{ActionDigest: a}); err != nil {
		t.Errorf("read-only: GetActionResult: %v", err)
	}
}

// serve takes bb_storage's authenticationPolicy and authorizer
// configurations.
func TestServeTakesAuthenticationAndAuthorizerConfiguration(t *testing.T) {
	dir := t.TempDir()
	write := func(name, config string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(config), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	c := startServer(t, "--config", write("authorizers.jsonnet", `{
  authenticationPolicy: { allow: {} },
  actionCacheAuthorizers: { getAuthorizer: { allow: {} }, putAuthorizer: { deny: {} } },
  contentAddressableStorageAuthorizers: { getAuthorizer: { allow: {} }, putAuthorizer: { allow: {} }, findMissingAuthorizer: { allow: {} } },
}`)).client()
	if code := updateActionResult(c); code != codes.PermissionDenied {
		t.Errorf("putAuthorizer deny: UpdateActionResult is %v, want PERMISSION_DENIED", code)
	}
	if result := c.run(action{args: sh(`echo allowed`)}); string(c.read(result.StdoutDigest)) != "allowed\n" {
		t.Error("the allowed parts do not work")
	}

	denied := startServer(t, "--config", write("deny.jsonnet", `{ authenticationPolicy: { deny: 'no clients here' } }`)).client()
	_, err := denied.caps.GetCapabilities(context.Background(), &remoteexecution.GetCapabilitiesRequest{})
	if status.Code(err) != codes.Unauthenticated {
		t.Errorf("authenticationPolicy deny: GetCapabilities is %v, want UNAUTHENTICATED", err)
	}
}
