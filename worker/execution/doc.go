// Package execution is the REAPI Execution service of `serve`, the
// embedded front end: Execute and WaitExecution over an in-process
// queue with merging of identical in-flight actions, Action Cache hits
// served without a slot, and the operations clients wait on. Its
// sibling worker/cluster is the other front end, taking actions from
// Buildbarn's scheduler; both hand each action to a worker.Executor.
package execution
