package remoteworker_test

import (
	"fmt"
	"sort"
	"testing"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/bitzel/bitzel-worker/proto/remoteworker"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// publishedField is one field of bb-remote-execution's
// pkg/proto/remoteproto/remoteworker.proto, transcribed by hand from
// the published file. The table is the reference the generated
// descriptors are compared with; edit it only when the published file
// changes.
type publishedField struct {
	number   protowire.Number
	kind     protoreflect.Kind
	typeName protoreflect.FullName // message or enum type; "" for scalars
	list     bool
	mapKV    [2]protoreflect.Kind // key and value kinds for map fields
	oneof    protoreflect.Name
}

const (
	reapi = "build.bazel.remote.execution.v2."
	empty = "google.protobuf.Empty"
)

var publishedMessages = map[protoreflect.FullName]map[protoreflect.Name]publishedField{
	"buildbarn.remoteworker.SynchronizeRequest": {
		"worker_id":            {number: 1, kind: protoreflect.MessageKind, mapKV: [2]protoreflect.Kind{protoreflect.StringKind, protoreflect.StringKind}},
		"instance_name_prefix": {number: 2, kind: protoreflect.StringKind},
		"platform":             {number: 3, kind: protoreflect.MessageKind, typeName: reapi + "Platform"},
		"current_state":        {number: 4, kind: protoreflect.MessageKind, typeName: "buildbarn.remoteworker.CurrentState"},
		"size_class":           {number: 5, kind: protoreflect.Uint32Kind},
		"prefer_being_idle":    {number: 6, kind: protoreflect.BoolKind},
	},
	"buildbarn.remoteworker.CurrentState": {
		"idle":      {number: 1, kind: protoreflect.MessageKind, typeName: empty, oneof: "worker_state"},
		"executing": {number: 2, kind: protoreflect.MessageKind, typeName: "buildbarn.remoteworker.CurrentState.Executing", oneof: "worker_state"},
	},
	"buildbarn.remoteworker.CurrentState.Executing": {
		"action_digest":     {number: 1, kind: protoreflect.MessageKind, typeName: reapi + "Digest"},
		"started":           {number: 2, kind: protoreflect.MessageKind, typeName: empty, oneof: "execution_state"},
		"fetching_inputs":   {number: 3, kind: protoreflect.MessageKind, typeName: empty, oneof: "execution_state"},
		"running":           {number: 4, kind: protoreflect.MessageKind, typeName: empty, oneof: "execution_state"},
		"uploading_outputs": {number: 5, kind: protoreflect.MessageKind, typeName: empty, oneof: "execution_state"},
		"completed":         {number: 6, kind: protoreflect.MessageKind, typeName: reapi + "ExecuteResponse", oneof: "execution_state"},
	},
	"buildbarn.remoteworker.SynchronizeResponse": {
		"next_synchronization_at": {number: 1, kind: protoreflect.MessageKind, typeName: "google.protobuf.Timestamp"},
		"desired_state":           {number: 2, kind: protoreflect.MessageKind, typeName: "buildbarn.remoteworker.DesiredState"},
	},
	"buildbarn.remoteworker.DesiredState": {
		"idle":      {number: 1, kind: protoreflect.MessageKind, typeName: empty, oneof: "worker_state"},
		"executing": {number: 2, kind: protoreflect.MessageKind, typeName: "buildbarn.remoteworker.DesiredState.Executing", oneof: "worker_state"},
	},
	"buildbarn.remoteworker.DesiredState.Executing": {
		"action_digest":        {number: 1, kind: protoreflect.MessageKind, typeName: reapi + "Digest"},
		"action":               {number: 2, kind: protoreflect.MessageKind, typeName: reapi + "Action"},
		"queued_timestamp":     {number: 4, kind: protoreflect.MessageKind, typeName: "google.protobuf.Timestamp"},
		"auxiliary_metadata":   {number: 6, kind: protoreflect.MessageKind, typeName: "google.protobuf.Any", list: true},
		"instance_name_suffix": {number: 7, kind: protoreflect.StringKind},
		"w3c_trace_context":    {number: 8, kind: protoreflect.MessageKind, mapKV: [2]protoreflect.Kind{protoreflect.StringKind, protoreflect.StringKind}},
		"digest_function":      {number: 9, kind: protoreflect.EnumKind, typeName: reapi + "DigestFunction.Value"},
	},
}

// Numbers the published file reserves; reusing one would make old and
// new peers misread each other.
var publishedReserved = map[protoreflect.FullName][]protowire.Number{
	"buildbarn.remoteworker.CurrentState.Executing": {7},
	"buildbarn.remoteworker.DesiredState.Executing": {3, 5},
}

func TestDescriptorsMatchPublishedDefinition(t *testing.T) {
	file := remoteworker.File_proto_remoteworker_remoteworker_proto
	if got, want := file.Package(), protoreflect.FullName("buildbarn.remoteworker"); got != want {
		t.Fatalf("package %s, want %s", got, want)
	}

	declared := map[protoreflect.FullName]protoreflect.MessageDescriptor{}
	var collect func(protoreflect.MessageDescriptors)
	collect = func(messages protoreflect.MessageDescriptors) {
		for i := 0; i < messages.Len(); i++ {
			m := messages.Get(i)
			if m.IsMapEntry() {
				continue
			}
			declared[m.FullName()] = m
			collect(m.Messages())
		}
	}
	collect(file.Messages())

	if got, want := sortedNames(declared), sortedNames(publishedMessages); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("declared messages %v, published %v", got, want)
	}
	for name, published := range publishedMessages {
		message := declared[name]
		fields := message.Fields()
		if fields.Len() != len(published) {
			t.Errorf("%s declares %d fields, published has %d", name, fields.Len(), len(published))
		}
		for i := 0; i < fields.Len(); i++ {
			field := fields.Get(i)
			want, ok := published[field.Name()]
			if !ok {
				t.Errorf("%s.%s (%d) is not in the published definition", name, field.Name(), field.Number())
				continue
			}
			checkField(t, field, want)
		}
		for fieldName := range published {
			if fields.ByName(fieldName) == nil {
				t.Errorf("%s lacks published field %s", name, fieldName)
			}
		}
		reserved := message.ReservedRanges()
		for _, number := range publishedReserved[name] {
			if !reserved.Has(number) {
				t.Errorf("%s does not reserve %d", name, number)
			}
		}
	}

	services := file.Services()
	if services.Len() != 1 {
		t.Fatalf("%d services, want 1", services.Len())
	}
	service := services.Get(0)
	if service.FullName() != "buildbarn.remoteworker.OperationQueue" || service.Methods().Len() != 1 {
		t.Fatalf("service %s with %d methods", service.FullName(), service.Methods().Len())
	}
	method := service.Methods().Get(0)
	if method.Name() != "Synchronize" ||
		method.Input().FullName() != "buildbarn.remoteworker.SynchronizeRequest" ||
		method.Output().FullName() != "buildbarn.remoteworker.SynchronizeResponse" ||
		method.IsStreamingClient() || method.IsStreamingServer() {
		t.Errorf("method %s(%s) returns (%s)", method.Name(), method.Input().FullName(), method.Output().FullName())
	}
	if remoteworker.OperationQueue_Synchronize_FullMethodName != "/buildbarn.remoteworker.OperationQueue/Synchronize" {
		t.Errorf("gRPC method path %s", remoteworker.OperationQueue_Synchronize_FullMethodName)
	}
}

func checkField(t *testing.T, field protoreflect.FieldDescriptor, want publishedField) {
	t.Helper()
	name := field.FullName()
	if field.Number() != want.number {
		t.Errorf("%s has number %d, published %d", name, field.Number(), want.number)
	}
	if field.Kind() != want.kind {
		t.Errorf("%s has kind %s, published %s", name, field.Kind(), want.kind)
	}
	if field.IsMap() != (want.mapKV[0] != 0) {
		t.Errorf("%s map=%v, published map=%v", name, field.IsMap(), want.mapKV[0] != 0)
	} else if field.IsMap() {
		if field.MapKey().Kind() != want.mapKV[0] || field.MapValue().Kind() != want.mapKV[1] {
			t.Errorf("%s is map<%s, %s>", name, field.MapKey().Kind(), field.MapValue().Kind())
		}
	} else if field.IsList() != want.list {
		t.Errorf("%s repeated=%v, published repeated=%v", name, field.IsList(), want.list)
	}
	var typeName protoreflect.FullName
	switch {
	case field.IsMap():
	case field.Message() != nil:
		typeName = field.Message().FullName()
	case field.Enum() != nil:
		typeName = field.Enum().FullName()
	}
	if typeName != want.typeName {
		t.Errorf("%s has type %q, published %q", name, typeName, want.typeName)
	}
	var oneof protoreflect.Name
	if o := field.ContainingOneof(); o != nil && !o.IsSynthetic() {
		oneof = o.Name()
	}
	if oneof != want.oneof {
		t.Errorf("%s is in oneof %q, published %q", name, oneof, want.oneof)
	}
}

func sortedNames[V any](m map[protoreflect.FullName]V) []protoreflect.FullName {
	names := make([]protoreflect.FullName, 0, len(m))
	for name := range m {
		names = append(names, name)
	}
	sort.Slice(names, func(i, j int) bool { return names[i] < names[j] })
	return names
}

// TestMarshalledTagsMatchPublishedNumbers checks the bytes themselves:
// it walks the encoded messages with protowire, independently of the
// generated code, and expects the published field numbers and wire
// types along paths through every nesting level.
// Long on purpose: one table of every message and field, checked in one pass.
func TestMarshalledTagsMatchPublishedNumbers(t *testing.T) {
	actionDigest := &remoteexecution.Digest{Hash: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", SizeBytes: 42}
	request := &remoteworker.SynchronizeRequest{
		WorkerId:           map[string]string{"hostname": "h", "thread": "3"},
		InstanceNamePrefix: "main",
		Platform: &remoteexecution.Platform{Properties: []*remoteexecution.Platform_Property{
			{Name: "OSFamily", Value: "linux"},
		}},
		SizeClass: 8,
		CurrentState: &remoteworker.CurrentState{WorkerState: &remoteworker.CurrentState_Executing_{
			Executing: &remoteworker.CurrentState_Executing{
				ActionDigest: actionDigest,
				ExecutionState: &remoteworker.CurrentState_Executing_Completed{
					Completed: &remoteexecution.ExecuteResponse{CachedResult: true},
				},
			},
		}},
		PreferBeingIdle: true,
	}
	data, err := proto.Marshal(request)
	if err != nil {
		t.Fatal(err)
	}
	top := fieldsOf(t, data)
	expectTags(t, "SynchronizeRequest", top, map[protowire.Number]protowire.Type{
		1: protowire.BytesType, 2: protowire.BytesType, 3: protowire.BytesType,
		4: protowire.BytesType, 5: protowire.VarintType, 6: protowire.VarintType,
	})
	if got := string(top[2][0].bytes); got != "main" {
		t.Errorf("instance_name_prefix (2) = %q", got)
	}
	if got := top[5][0].varint; got != 8 {
		t.Errorf("size_class (5) = %d", got)
	}
	if len(top[1]) != 2 {
		t.Errorf("worker_id (1) has %d entries, want 2", len(top[1]))
	}
	currentState := fieldsOf(t, top[4][0].bytes)
	expectTags(t, "CurrentState", currentState, map[protowire.Number]protowire.Type{2: protowire.BytesType})
	executing := fieldsOf(t, currentState[2][0].bytes)
	expectTags(t, "CurrentState.Executing", executing, map[protowire.Number]protowire.Type{1: protowire.BytesType, 6: protowire.BytesType})
	if got := string(fieldsOf(t, executing[1][0].bytes)[1][0].bytes); got != actionDigest.Hash {
		t.Errorf("action_digest.hash = %q", got)
	}

	for stage, number := range map[string]protowire.Number{"started": 2, "fetching_inputs": 3, "running": 4, "uploading_outputs": 5} {
		state := &remoteworker.CurrentState_Executing{ActionDigest: actionDigest}
		switch stage {
		case "started":
			state.ExecutionState = &remoteworker.CurrentState_Executing_Started{Started: &emptypb.Empty{}}
		case "fetching_inputs":
			state.ExecutionState = &remoteworker.CurrentState_Executing_FetchingInputs{FetchingInputs: &emptypb.Empty{}}
		case "running":
			state.ExecutionState = &remoteworker.CurrentState_Executing_Running{Running: &emptypb.Empty{}}
		case "uploading_outputs":
			state.ExecutionState = &remoteworker.CurrentState_Executing_UploadingOutputs{UploadingOutputs: &emptypb.Empty{}}
		}
		data, err := proto.Marshal(state)
		if err != nil {
			t.Fatal(err)
		}
		expectTags(t, "CurrentState.Executing/"+stage, fieldsOf(t, data), map[protowire.Number]protowire.Type{1: protowire.BytesType, number: protowire.BytesType})
	}
	idle, err := proto.Marshal(&remoteworker.CurrentState{WorkerState: &remoteworker.CurrentState_Idle{Idle: &emptypb.Empty{}}})
	if err != nil {
		t.Fatal(err)
	}
	expectTags(t, "CurrentState/idle", fieldsOf(t, idle), map[protowire.Number]protowire.Type{1: protowire.BytesType})

	auxiliary, err := anypb.New(&remoteexecution.RequestMetadata{ToolInvocationId: "inv"})
	if err != nil {
		t.Fatal(err)
	}
	response := &remoteworker.SynchronizeResponse{
		NextSynchronizationAt: &timestamppb.Timestamp{Seconds: 1000},
		DesiredState: &remoteworker.DesiredState{WorkerState: &remoteworker.DesiredState_Executing_{
			Executing: &remoteworker.DesiredState_Executing{
				ActionDigest:       actionDigest,
				Action:             &remoteexecution.Action{DoNotCache: true},
				QueuedTimestamp:    &timestamppb.Timestamp{Seconds: 900},
				AuxiliaryMetadata:  []*anypb.Any{auxiliary, auxiliary},
				InstanceNameSuffix: "a/b",
				W3CTraceContext:    map[string]string{"traceparent": "00-x"},
				DigestFunction:     remoteexecution.DigestFunction_SHA256,
			},
		}},
	}
	data, err = proto.Marshal(response)
	if err != nil {
		t.Fatal(err)
	}
	responseFields := fieldsOf(t, data)
	expectTags(t, "SynchronizeResponse", responseFields, map[protowire.Number]protowire.Type{1: protowire.BytesType, 2: protowire.BytesType})
	desired := fieldsOf(t, responseFields[2][0].bytes)
	expectTags(t, "DesiredState", desired, map[protowire.Number]protowire.Type{2: protowire.BytesType})
	desiredExecuting := fieldsOf(t, desired[2][0].bytes)
	expectTags(t, "DesiredState.Executing", desiredExecuting, map[protowire.Number]protowire.Type{
		1: protowire.BytesType, 2: protowire.BytesType, 4: protowire.BytesType, 6: protowire.BytesType,
		7: protowire.BytesType, 8: protowire.BytesType, 9: protowire.VarintType,
	})
	if len(desiredExecuting[6]) != 2 {
		t.Errorf("auxiliary_metadata (6) has %d entries, want 2", len(desiredExecuting[6]))
	}
	if got := string(desiredExecuting[7][0].bytes); got != "a/b" {
		t.Errorf("instance_name_suffix (7) = %q", got)
	}
	if got := desiredExecuting[9][0].varint; got != uint64(remoteexecution.DigestFunction_SHA256) {
		t.Errorf("digest_function (9) = %d", got)
	}

	idle, err = proto.Marshal(&remoteworker.DesiredState{WorkerState: &remoteworker.DesiredState_Idle{Idle: &emptypb.Empty{}}})
	if err != nil {
		t.Fatal(err)
	}
	expectTags(t, "DesiredState/idle", fieldsOf(t, idle), map[protowire.Number]protowire.Type{1: protowire.BytesType})

	// And back: what a Buildbarn scheduler encodes decodes into the
	// same message.
	var decoded remoteworker.SynchronizeResponse
	if err := proto.Unmarshal(data, &decoded); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(&decoded, response) {
		t.Errorf("round trip changed the response:\n%v\n%v", &decoded, response)
	}
}

type wireValue struct {
	typ    protowire.Type
	bytes  []byte
	varint uint64
}

func fieldsOf(t *testing.T, data []byte) map[protowire.Number][]wireValue {
	t.Helper()
	fields := map[protowire.Number][]wireValue{}
	for len(data) > 0 {
		number, typ, n := protowire.ConsumeTag(data)
		if n < 0 {
			t.Fatalf("bad tag: %v", protowire.ParseError(n))
		}
		data = data[n:]
		value := wireValue{typ: typ}
		switch typ {
		case protowire.BytesType:
			value.bytes, n = protowire.ConsumeBytes(data)
		case protowire.VarintType:
			value.varint, n = protowire.ConsumeVarint(data)
		default:
			n = protowire.ConsumeFieldValue(number, typ, data)
		}
		if n < 0 {
			t.Fatalf("bad value of field %d: %v", number, protowire.ParseError(n))
		}
		data = data[n:]
		fields[number] = append(fields[number], value)
	}
	return fields
}

func expectTags(t *testing.T, what string, got map[protowire.Number][]wireValue, want map[protowire.Number]protowire.Type) {
	t.Helper()
	for number, values := range got {
		wantType, ok := want[number]
		if !ok {
			t.Errorf("%s: unexpected field %d on the wire", what, number)
			continue
		}
		for _, v := range values {
			if v.typ != wantType {
				t.Errorf("%s: field %d has wire type %d, want %d", what, number, v.typ, wantType)
			}
		}
	}
	for number := range want {
		if len(got[number]) == 0 {
			t.Errorf("%s: field %d missing on the wire", what, number)
		}
	}
}
