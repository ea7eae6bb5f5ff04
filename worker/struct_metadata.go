package worker

import (
	"maps"
	"math"
	"slices"
	"strings"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
)

// The worker's own auxiliary metadata (resource usage, why a result is
// not cached) are google.protobuf.Struct messages: a client, or a
// person with grpcurl, reads them without a proto of ours. Every action
// writes one or two, and the caching decorator and the status page
// read fields back. Through structpb (a Go map of Values, marshalled
// and unmarshalled by reflection) that was about 4% of the cluster
// worker's CPU per trivial action, so the flat Structs the worker makes
// are encoded here directly, and one field is found in a Struct without
// decoding the rest. The wire format is the same.

// structTypeURL is what anypb.New names a Struct.
const structTypeURL = "type.googleapis.com/google.protobuf.Struct"

// Field numbers of google.protobuf.Struct, its map entries and Value.
const (
	structFieldsField  = 1
	mapEntryKeyField   = 1
	mapEntryValueField = 2
	valueNullField     = 1
	valueNumberField   = 2
	valueStringField   = 3
	valueBoolField     = 4
)

// structMetadata is fields as an auxiliary-metadata Struct, or nil for
// a value a Struct cannot hold (only the worker's own fields go in).
// Keys are written in order, so the same fields make the same bytes.
func structMetadata(fields map[string]any) *anypb.Any {
	var s structBuilder
	for _, k := range slices.Sorted(maps.Keys(fields)) {
		switch v := fields[k].(type) {
		case float64:
			s.number(k, v)
		case bool:
			s.boolean(k, v)
		case string:
			s.string(k, v)
		default:
			return genericStructMetadata(fields)
		}
	}
	return s.message()
}

// structBuilder writes a Struct of scalar fields, in the order they
// are added, as structpb would encode it.
type structBuilder struct {
	b, entry []byte
	invalid  bool
}

func (s *structBuilder) number(key string, v float64) {
	s.add(key, valueNumberField, protowire.Fixed64Type, math.Float64bits(v), "")
}

func (s *structBuilder) boolean(key string, v bool) {
	s.add(key, valueBoolField, protowire.VarintType, protowire.EncodeBool(v), "")
}

func (s *structBuilder) string(key, v string) {
	s.add(key, valueStringField, protowire.BytesType, 0, v)
}

// add appends the map entry of key, whose Value holds field num of
// type typ: n for numbers and bools, text for strings.
func (s *structBuilder) add(key string, num protowire.Number, typ protowire.Type, n uint64, text string) {
	if !utf8.ValidString(key) || !utf8.ValidString(text) {
		// As structpb.NewStruct refuses them.
		s.invalid = true
		return
	}
	valueSize := protowire.SizeTag(num)
	switch typ {
	case protowire.Fixed64Type:
		valueSize += protowire.SizeFixed64()
	case protowire.VarintType:
		valueSize += protowire.SizeVarint(n)
	default:
		valueSize += protowire.SizeBytes(len(text))
	}
	e := protowire.AppendTag(s.entry[:0], mapEntryKeyField, protowire.BytesType)
	e = protowire.AppendString(e, key)
	e = protowire.AppendTag(e, mapEntryValueField, protowire.BytesType)
	e = protowire.AppendVarint(e, uint64(valueSize))
	e = protowire.AppendTag(e, num, typ)
	switch typ {
	case protowire.Fixed64Type:
		e = protowire.AppendFixed64(e, n)
	case protowire.VarintType:
		e = protowire.AppendVarint(e, n)
	default:
		e = protowire.AppendString(e, text)
	}
	s.entry = e
	s.b = protowire.AppendTag(s.b, structFieldsField, protowire.BytesType)
	s.b = protowire.AppendBytes(s.b, e)
}

// message is the Struct as auxiliary metadata, nil if a key or a string
// was not valid UTF-8.
func (s *structBuilder) message() *anypb.Any {
	if s.invalid {
		return nil
	}
	if s.b == nil {
		s.b = []byte{}
	}
	return &anypb.Any{TypeUrl: structTypeURL, Value: s.b}
}

// genericStructMetadata is structMetadata through structpb, for value
// types the worker does not write itself.
func genericStructMetadata(fields map[string]any) *anypb.Any {
	s, err := structpb.NewStruct(fields)
	if err != nil {
		return nil
	}
	a, err := anypb.New(s)
	if err != nil {
		return nil
	}
	return a
}

// StructMetadataField returns field name of the last Struct among
// metadata that has it: what unmarshalling each Struct and looking the
// name up gives, without decoding the other fields.
func StructMetadataField(metadata []*anypb.Any, name string) (*structpb.Value, bool) {
	var found *structpb.Value
	for _, a := range metadata {
		if v, ok := structField(a, name); ok {
			found = v
		}
	}
	return found, found != nil
}

// structField is field name of a, if a is a valid Struct that has it.
// The Structs the worker writes (scalar values, each field once) are
// read directly; anything else takes structpb's way, so that the two
// always agree (FuzzStructField).
func structField(a *anypb.Any, name string) (*structpb.Value, bool) {
	if !isStruct(a) {
		return nil, false
	}
	value, found, ok := scanStruct(a.GetValue(), name)
	if !ok {
		return genericStructField(a, name)
	}
	if !found {
		return nil, false
	}
	v := &structpb.Value{}
	if proto.Unmarshal(value, v) != nil {
		return genericStructField(a, name)
	}
	return v, true
}

// isStruct tells whether a holds a Struct, as anypb.UnmarshalTo
// decides it: by the type URL's last path component.
func isStruct(a *anypb.Any) bool {
	url := a.GetTypeUrl()
	if i := strings.LastIndexByte(url, '/'); i >= 0 {
		url = url[i+1:]
	}
	return url == "google.protobuf.Struct"
}

// genericStructField is structField through structpb.
func genericStructField(a *anypb.Any, name string) (*structpb.Value, bool) {
	var s structpb.Struct
	if a.UnmarshalTo(&s) != nil {
		return nil, false
	}
	v, ok := s.Fields[name]
	return v, ok
}

// scanStruct walks a Struct's encoding for the last entry named name
// and returns its encoded Value. ok is false when the encoding is not
// of the plain form the worker writes (every entry a key and a scalar
// Value, each field once, valid UTF-8): the caller then decodes it
// the generic way.
func scanStruct(b []byte, name string) (value []byte, found, ok bool) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || num != structFieldsField || typ != protowire.BytesType {
			return nil, false, false
		}
		b = b[n:]
		entry, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return nil, false, false
		}
		b = b[n:]
		key, v, entryOK := scanMapEntry(entry)
		if !entryOK {
			return nil, false, false
		}
		if key == name {
			value, found = v, true
		}
	}
	return value, found, true
}

// scanMapEntry returns the key and the encoded Value of one plain
// Struct entry.
func scanMapEntry(b []byte) (key string, value []byte, ok bool) {
	var haveKey, haveValue bool
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || typ != protowire.BytesType {
			return "", nil, false
		}
		b = b[n:]
		field, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return "", nil, false
		}
		b = b[n:]
		switch {
		case num == mapEntryKeyField && !haveKey && utf8.Valid(field):
			key, haveKey = string(field), true
		case num == mapEntryValueField && !haveValue && plainScalarValue(field):
			value, haveValue = field, true
		default:
			return "", nil, false
		}
	}
	return key, value, haveKey && haveValue
}

// plainScalarValue tells whether b is a Value of exactly one scalar
// field (null, number, string or bool), well formed.
func plainScalarValue(b []byte) bool {
	num, typ, n := protowire.ConsumeTag(b)
	if n < 0 {
		return false
	}
	b = b[n:]
	switch {
	case (num == valueNullField || num == valueBoolField) && typ == protowire.VarintType:
		n = protowire.ConsumeFieldValue(num, typ, b)
	case num == valueNumberField && typ == protowire.Fixed64Type:
		n = protowire.ConsumeFieldValue(num, typ, b)
	case num == valueStringField && typ == protowire.BytesType:
		var s []byte
		s, n = protowire.ConsumeBytes(b)
		if n >= 0 && !utf8.Valid(s) {
			return false
		}
	default:
		return false
	}
	return n >= 0 && n == len(b)
}
