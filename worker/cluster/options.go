package cluster

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"time"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/buildbarn/bb-storage/pkg/clock"
	"github.com/buildbarn/bb-storage/pkg/digest"
	"github.com/buildbarn/bb-storage/pkg/random"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// threadLabel is the worker ID label that tells a worker's slots apart,
// named as bb_worker names it so that dashboards keep working.
const threadLabel = "thread"

// defaultStageReportDelay is short next to the time a person takes to
// look at an operation's stage, and long next to a cached or trivial
// action (a few milliseconds).
const defaultStageReportDelay = 100 * time.Millisecond

// Options configures a Client. The fields mirror what bb_worker's
// configuration says about the scheduler connection, so that a Jsonnet
// worker configuration can be turned into Options one field at a time.
type Options struct {
	// WorkerID labels this worker process (for example hostname and
	// pod name). Each slot adds a "thread" label holding its number
	// when Concurrency is above one.
	WorkerID map[string]string
	// InstanceNamePrefix is the instance name this worker serves. The
	// scheduler appends the rest of each client's instance name as a
	// suffix.
	InstanceNamePrefix digest.InstanceName
	// Platform lists the properties the scheduler matches actions
	// against. It is sent sorted, as REAPI requires; nil means none.
	Platform *remoteexecution.Platform
	// SizeClass places this worker among the size classes of its
	// platform queue; zero when the scheduler does not use them.
	SizeClass uint32
	// Concurrency is the number of slots, each taking one action at
	// a time under its own worker ID.
	Concurrency int

	// Logger receives one line per notable event. Default: slog.Default().
	Logger *slog.Logger
	// Clock drives every wait, so that tests can run without sleeping.
	// Default: clock.SystemClock.
	Clock clock.Clock
	// Random jitters reconnection delays, so that workers that lost
	// the scheduler together do not return together.
	// Default: random.FastThreadSafeGenerator.
	Random random.ThreadSafeGenerator
	// InitialBackoff and MaximumBackoff bound the exponential delay
	// between failed Synchronize calls. Defaults: 500ms and 30s.
	InitialBackoff time.Duration
	MaximumBackoff time.Duration
	// WorkerTimeout is how long past next_synchronization_at the
	// scheduler is assumed to remember a silent worker and the task it
	// gave it (bb_scheduler's worker_with_no_synchronizations_timeout,
	// one minute by default). A slot draining for shutdown that cannot
	// reach the scheduler gives up after that, because nobody is
	// waiting for its result any more. Default: 1 minute.
	WorkerTimeout time.Duration
	// StageReportDelay is how long a running action's change of
	// stage (started, fetching inputs, running, uploading outputs)
	// may wait before it is reported on its own. An action that
	// completes within it is reported once, with its result: two
	// Synchronize calls per short action (the one that handed it
	// out and the one that returns its result, which also takes the
	// next action) instead of up to five. It is also how far the
	// stage clients see may lag behind. Default: 100ms; negative:
	// every change is reported at once.
	StageReportDelay time.Duration
}

func (o *Options) setDefaults() {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Clock == nil {
		o.Clock = clock.SystemClock
	}
	if o.Random == nil {
		o.Random = random.FastThreadSafeGenerator
	}
	if o.InitialBackoff <= 0 {
		o.InitialBackoff = 500 * time.Millisecond
	}
	if o.MaximumBackoff <= 0 {
		o.MaximumBackoff = 30 * time.Second
	}
	if o.MaximumBackoff < o.InitialBackoff {
		o.MaximumBackoff = o.InitialBackoff
	}
	if o.WorkerTimeout <= 0 {
		o.WorkerTimeout = time.Minute
	}
	if o.StageReportDelay == 0 {
		o.StageReportDelay = defaultStageReportDelay
	}
}

func (o *Options) validate() error {
	if o.Concurrency < 1 {
		return status.Errorf(codes.InvalidArgument, "Concurrency is %d, but at least one slot is needed", o.Concurrency)
	}
	if _, ok := o.WorkerID[threadLabel]; ok && o.Concurrency > 1 {
		// Every slot would present the same ID, and the scheduler
		// refuses a second worker synchronizing under an ID in use.
		return status.Errorf(codes.InvalidArgument, "Worker ID label %#v is reserved for telling slots apart", threadLabel)
	}
	return nil
}

// slotWorkerID returns the worker ID of slot number slot, formatted as
// bb_worker formats it: zero-padded so that IDs sort in slot order.
func (o *Options) slotWorkerID(slot int) map[string]string {
	workerID := make(map[string]string, len(o.WorkerID)+1)
	for key, value := range o.WorkerID {
		workerID[key] = value
	}
	if o.Concurrency > 1 {
		width := len(strconv.Itoa(o.Concurrency - 1))
		workerID[threadLabel] = fmt.Sprintf("%0*d", width, slot)
	}
	return workerID
}

// WorkerName renders a worker ID as bb_worker names a worker (in logs
// and in ExecutedActionMetadata.worker): JSON with sorted keys.
func WorkerName(workerID map[string]string) string {
	return workerName(workerID)
}

// workerName renders a worker ID for log lines, with sorted keys.
func workerName(workerID map[string]string) string {
	data, err := json.Marshal(workerID)
	if err != nil {
		return fmt.Sprint(workerID)
	}
	return string(data)
}

// sortedPlatform returns a copy of platform with its properties sorted
// by name, then value. The scheduler derives its platform queue key from
// the properties as sent, so an unsorted list would not match the
// queue that clients' (sorted) actions are routed to.
func sortedPlatform(platform *remoteexecution.Platform) *remoteexecution.Platform {
	if platform == nil {
		return &remoteexecution.Platform{}
	}
	sorted := proto.Clone(platform).(*remoteexecution.Platform)
	sort.SliceStable(sorted.Properties, func(i, j int) bool {
		a, b := sorted.Properties[i], sorted.Properties[j]
		if a.Name != b.Name {
			return a.Name < b.Name
		}
		return a.Value < b.Value
	})
	return sorted
}
