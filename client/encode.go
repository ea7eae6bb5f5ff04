package client

import (
	"github.com/buildbarn/bb-storage/pkg/digest"
	"google.golang.org/protobuf/proto"
)

// Encode marshals a message deterministically and returns its digest,
// so that the same Action or Command always has the same digest (and
// the same Action Cache entry).
func Encode(function digest.Function, m proto.Message) (digest.Digest, []byte, error) {
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return digest.BadDigest, nil, err
	}
	generator := function.NewGenerator(int64(len(data)))
	generator.Write(data)
	return generator.Sum(), data, nil
}
