// Package livelogs lets REAPI clients read a running action's stdout
// and stderr as they grow, through ByteStream.Read of the names that
// ExecuteOperationMetadata.stdout_stream_name and stderr_stream_name
// give (REAPI 2.1). A name is readable only while its action runs, and
// only by the client that started the execution: one with the same
// authentication metadata. Without an authentication policy every
// client has the same (empty) metadata, so any client that can reach
// the server and knows the name may read it; the names hold a random
// UUID and are sent only to the clients of that operation.
package livelogs
