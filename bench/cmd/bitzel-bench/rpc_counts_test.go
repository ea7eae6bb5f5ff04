package main

import (
	"strings"
	"testing"
)

func TestRPCCountsPerActionSumCodesAndDropThePackage(t *testing.T) {
	before := parseRPCCounts(strings.NewReader(`# HELP grpc_server_handled_total Total number of RPCs completed on the server.
grpc_server_handled_total{grpc_code="OK",grpc_method="FindMissingBlobs",grpc_service="build.bazel.remote.execution.v2.ContentAddressableStorage",grpc_type="unary"} 10
grpc_server_handled_total{grpc_code="OK",grpc_method="Synchronize",grpc_service="buildbarn.remoteworker.OperationQueue",grpc_type="unary"} 5
grpc_server_started_total{grpc_method="Synchronize",grpc_service="buildbarn.remoteworker.OperationQueue",grpc_type="unary"} 999
`))
	after := parseRPCCounts(strings.NewReader(`grpc_server_handled_total{grpc_code="OK",grpc_method="FindMissingBlobs",grpc_service="build.bazel.remote.execution.v2.ContentAddressableStorage",grpc_type="unary"} 30
grpc_server_handled_total{grpc_code="NotFound",grpc_method="FindMissingBlobs",grpc_service="build.bazel.remote.execution.v2.ContentAddressableStorage",grpc_type="unary"} 10
grpc_server_handled_total{grpc_code="OK",grpc_method="Synchronize",grpc_service="buildbarn.remoteworker.OperationQueue",grpc_type="unary"} 45
grpc_server_handled_total{grpc_code="OK",grpc_method="GetActionResult",grpc_service="build.bazel.remote.execution.v2.ActionCache",grpc_type="unary"} 0
`))
	want := "OperationQueue/Synchronize 2.00, ContentAddressableStorage/FindMissingBlobs 1.50"
	if got := after.perAction(before, 20); got != want {
		t.Errorf("perAction = %q, want %q", got, want)
	}
}
