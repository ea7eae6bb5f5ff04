package child

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// pinnedProtocol is the shape of the messages at ProtocolVersion. When
// this test fails, the worker and its PID 1 no longer speak the same
// protocol as before: bump ProtocolVersion, then update both values.
const pinnedProtocol = "4 75d9bbb6ad698aa2"

// TestProtocolShapeIsPinned: the JSON exchanged with PID 1 (type,
// field and tag names, recursively) hashes to what was pinned with the
// current ProtocolVersion.
func TestProtocolShapeIsPinned(t *testing.T) {
	var b strings.Builder
	seen := map[reflect.Type]bool{}
	for _, v := range []any{Prepare{}, Action{}, Mount{}, Status{}, LauncherConfig{}, ExitNotice{}} {
		describeType(&b, reflect.TypeOf(v), seen)
	}
	sum := sha256.Sum256([]byte(b.String()))
	got := fmt.Sprintf("%d %s", ProtocolVersion, hex.EncodeToString(sum[:8]))
	if got != pinnedProtocol {
		t.Errorf("protocol shape %q, pinned %q: if the messages changed, bump ProtocolVersion and pin the new value\n%s", got, pinnedProtocol, b.String())
	}
}

func describeType(b *strings.Builder, t reflect.Type, seen map[reflect.Type]bool) {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Array || t.Kind() == reflect.Map {
		if t.Kind() == reflect.Map {
			fmt.Fprintf(b, "map[%s]", t.Key())
		}
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || seen[t] {
		fmt.Fprintf(b, "%s;", t)
		return
	}
	seen[t] = true
	fmt.Fprintf(b, "%s{", t)
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		fmt.Fprintf(b, "%s %q ", f.Name, f.Tag.Get("json"))
		describeType(b, f.Type, seen)
	}
	b.WriteString("}")
}
