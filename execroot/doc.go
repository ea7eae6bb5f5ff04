// Package execroot owns an action's exec root on the worker's side: the
// directory it is built in (upper and work directories of each overlay
// mount, spilled logs), the leases on the input layers it is stacked
// from, the sandbox's per-action disk budget its writes went to, and
// the one Release that gives all of it back.
//
// The life of an exec root: the executor materialises the input root
// (layers) and calls Pool.Prepare with it; Mounts describes the
// overlays, in the one form the sandbox and its PID 1 take
// (sandbox.Mount); CreateParents makes the directories REAPI 2.0
// clients expect; the sandbox runs the action on Mounts and Ran takes
// back what it returns (the disk budget, when its PID 1 is gone);
// output capture reads Inputs and UpperDirs; Release returns the
// directory to the pool once the sandbox has been reaped, and the layers
// to their cache. Nothing else creates, reads or removes these paths.
//
// It imports the layer and sandbox packages and nothing of the worker.
package execroot
