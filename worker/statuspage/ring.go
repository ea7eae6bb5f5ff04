package statuspage

// ring holds the most recent records, oldest overwritten first. Its
// backing array is allocated once, so memory does not grow with the
// number of actions a worker has run.
type ring struct {
	records []*Record
	next    int
	full    bool
}

func newRing(size int) *ring {
	if size < 1 {
		size = 1
	}
	return &ring{records: make([]*Record, size)}
}

func (r *ring) add(record *Record) {
	r.records[r.next] = record
	r.next++
	if r.next == len(r.records) {
		r.next = 0
		r.full = true
	}
}

func (r *ring) len() int {
	if r.full {
		return len(r.records)
	}
	return r.next
}

// newestFirst returns the records, the most recent first.
func (r *ring) newestFirst() []*Record {
	n := r.len()
	out := make([]*Record, 0, n)
	for i := 1; i <= n; i++ {
		out = append(out, r.records[(r.next-i+len(r.records))%len(r.records)])
	}
	return out
}
