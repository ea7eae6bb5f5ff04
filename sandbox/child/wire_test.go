package child

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
)

// fillEveryField sets every field of the struct v points to, down
// through pointers, slices and maps, to a non-zero value of its own
// (two elements per list), so that a field the codec forgets reads
// back as zero and the round trip differs.
func fillEveryField(t *testing.T, v reflect.Value, seed *int) {
	*seed++
	switch v.Kind() {
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fillEveryField(t, v.Elem(), seed)
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			fillEveryField(t, v.Field(i), seed)
		}
	case reflect.String:
		v.SetString(fmt.Sprintf("value %d with \x00 and é", *seed))
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int64:
		// Negative on odd seeds: varints must carry the sign.
		n := int64(*seed) << 40
		if *seed%2 == 1 {
			n = -n
		}
		v.SetInt(n)
	case reflect.Uint64:
		v.SetUint(uint64(*seed)<<50 | 1)
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 2, 2))
		for i := 0; i < 2; i++ {
			fillEveryField(t, v.Index(i), seed)
		}
	case reflect.Uint8:
		v.SetUint(uint64(*seed % 256))
	case reflect.Map:
		v.Set(reflect.MakeMap(v.Type()))
		for i := 0; i < 2; i++ {
			key, value := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
			fillEveryField(t, key, seed)
			fillEveryField(t, value, seed)
			v.SetMapIndex(key, value)
		}
	default:
		t.Fatalf("fillEveryField: no value for a %s: teach the codec and this test about it", v.Type())
	}
}

// TestWireRoundTripsEveryField: Prepare, Action and Status with every
// field set read back equal, and so do their zero values (nil lists
// stay nil, no limits stay absent).
func TestWireRoundTripsEveryField(t *testing.T) {
	var prepare Prepare
	var action Action
	var status Status
	seed := 0
	for _, v := range []any{&prepare, &action, &status} {
		fillEveryField(t, reflect.ValueOf(v).Elem(), &seed)
	}
	for _, tc := range []struct {
		prepare *Prepare
		action  *Action
		status  *Status
	}{{&prepare, &action, &status}, {&Prepare{}, &Action{}, &Status{}}} {
		var stream bytes.Buffer
		if err := WritePrepare(&stream, tc.prepare); err != nil {
			t.Fatal(err)
		}
		if err := WriteAction(&stream, tc.action); err != nil {
			t.Fatal(err)
		}
		r := bufio.NewReader(&stream)
		gotPrepare, err := ReadPrepare(r)
		if err != nil || !reflect.DeepEqual(gotPrepare, tc.prepare) {
			t.Errorf("prepare read back as %+v, %v; want %+v", gotPrepare, err, tc.prepare)
		}
		gotAction, err := ReadAction(r)
		if err != nil || !reflect.DeepEqual(gotAction, tc.action) {
			t.Errorf("action read back as %+v, %v; want %+v", gotAction, err, tc.action)
		}
		// The worker closing the pipe after a message is the end,
		// not an error.
		if _, err := ReadAction(r); err != io.EOF {
			t.Errorf("after the last message: %v, want io.EOF", err)
		}
		gotStatus, err := DecodeStatus(EncodeStatus(tc.status))
		if err != nil || !reflect.DeepEqual(gotStatus, tc.status) {
			t.Errorf("status read back as %+v, %v; want %+v", gotStatus, err, tc.status)
		}
	}
}

// TestWireRefusesWhatItDidNotWrite: every way a message can be cut or
// padded is an error naming the message, never a panic, a default
// value taken for the real one, or io.EOF (which means "no action").
func TestWireRefusesWhatItDidNotWrite(t *testing.T) {
	var stream bytes.Buffer
	WriteAction(&stream, &Action{Mounts: []Mount{{Path: "/bitzel/execroot", Layers: []string{"/l1"}}}, Argv: []string{"/bin/true"}})
	frame := stream.Bytes()
	for cut := 1; cut < len(frame); cut++ {
		if _, err := ReadAction(bufio.NewReader(bytes.NewReader(frame[:cut]))); err == nil || errors.Is(err, io.EOF) {
			t.Errorf("an action cut to %d of %d bytes: %v", cut, len(frame), err)
		}
	}
	// A frame whose declared length includes a stray byte after the
	// last field.
	padded := append([]byte{frame[0] + 1}, frame[1:]...)
	padded = append(padded, 0)
	if _, err := ReadAction(bufio.NewReader(bytes.NewReader(padded))); err == nil || !strings.Contains(err.Error(), "after the last field") {
		t.Errorf("an action with a byte after its fields: %v", err)
	}
	// A list count larger than the frame must not allocate it.
	forged := []byte{3, 0xff, 0xff, 0x7f}
	if _, err := ReadAction(bufio.NewReader(bytes.NewReader(forged))); err == nil || !strings.Contains(err.Error(), "list length") {
		t.Errorf("a forged mount count: %v", err)
	}
	huge := []byte{0xff, 0xff, 0xff, 0xff, 0x7f}
	if _, err := ReadPrepare(bufio.NewReader(bytes.NewReader(huge))); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("a frame larger than the limit: %v", err)
	}
	if _, err := ReadPrepare(bufio.NewReader(bytes.NewReader([]byte{3, 0, 0, 2}))); err == nil || !strings.Contains(err.Error(), "boolean") {
		t.Errorf("a boolean that is neither 0 nor 1: %v", err)
	}
	status := EncodeStatus(&Status{Stage: "run", ExitCode: 3})
	for _, bad := range [][]byte{nil, status[:len(status)-1], append(append([]byte{}, status...), 0)} {
		if _, err := DecodeStatus(bad); err == nil {
			t.Errorf("status %x decoded", bad)
		}
	}
}

// FuzzWireDecoders: no input makes a reader panic or allocate beyond
// its frame, and what decodes survives a round trip unchanged.
func FuzzWireDecoders(f *testing.F) {
	var stream bytes.Buffer
	WritePrepare(&stream, &Prepare{NewRoot: "/r", HostPaths: []string{"/usr"}, UserNamespaceLimits: &UserNamespaceLimits{Sysctls: map[string]int64{"max_a": 1}}})
	f.Add(stream.Bytes())
	stream.Reset()
	WriteAction(&stream, &Action{Mounts: []Mount{{Path: "/x", Layers: []string{"/a", "/b"}}}, Argv: []string{"true"}, Env: []string{"A=1"}})
	f.Add(stream.Bytes())
	f.Add(EncodeStatus(&Status{Error: "e", ExitCode: -1, Signal: 9}))
	f.Fuzz(func(t *testing.T, data []byte) {
		if p, err := ReadPrepare(bufio.NewReader(bytes.NewReader(data))); err == nil {
			var again bytes.Buffer
			WritePrepare(&again, p)
			if p2, err := ReadPrepare(bufio.NewReader(&again)); err != nil || !reflect.DeepEqual(p, p2) {
				t.Errorf("prepare %+v read back as %+v, %v", p, p2, err)
			}
		}
		if a, err := ReadAction(bufio.NewReader(bytes.NewReader(data))); err == nil {
			var again bytes.Buffer
			WriteAction(&again, a)
			if a2, err := ReadAction(bufio.NewReader(&again)); err != nil || !reflect.DeepEqual(a, a2) {
				t.Errorf("action %+v read back as %+v, %v", a, a2, err)
			}
		}
		if s, err := DecodeStatus(data); err == nil {
			if s2, err := DecodeStatus(EncodeStatus(s)); err != nil || !reflect.DeepEqual(s, s2) {
				t.Errorf("status %+v read back as %+v, %v", s, s2, err)
			}
		}
	})
}
