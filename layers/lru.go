package layers

import "container/list"

// lruIndex orders keys by recency of use. It is not safe for
// concurrent use: every cache guards it with its own mutex.
type lruIndex[K comparable, V any] struct {
	order *list.List // front = most recently used
	items map[K]*list.Element
}

type lruItem[K comparable, V any] struct {
	key   K
	value V
}

func newLRUIndex[K comparable, V any]() *lruIndex[K, V] {
	return &lruIndex[K, V]{order: list.New(), items: map[K]*list.Element{}}
}

func (l *lruIndex[K, V]) get(key K) (V, bool) {
	if e, ok := l.items[key]; ok {
		l.order.MoveToFront(e)
		return e.Value.(*lruItem[K, V]).value, true
	}
	var zero V
	return zero, false
}

// peek looks a key up without making it more recent.
func (l *lruIndex[K, V]) peek(key K) (V, bool) {
	if e, ok := l.items[key]; ok {
		return e.Value.(*lruItem[K, V]).value, true
	}
	var zero V
	return zero, false
}

func (l *lruIndex[K, V]) put(key K, value V) {
	if e, ok := l.items[key]; ok {
		e.Value.(*lruItem[K, V]).value = value
		l.order.MoveToFront(e)
		return
	}
	l.items[key] = l.order.PushFront(&lruItem[K, V]{key: key, value: value})
}

// putOldest inserts a key as the least recently used one, for entries
// found on disk at start-up whose recency is unknown.
func (l *lruIndex[K, V]) putOldest(key K, value V) {
	if _, ok := l.items[key]; ok {
		return
	}
	l.items[key] = l.order.PushBack(&lruItem[K, V]{key: key, value: value})
}

func (l *lruIndex[K, V]) remove(key K) {
	if e, ok := l.items[key]; ok {
		l.order.Remove(e)
		delete(l.items, key)
	}
}

func (l *lruIndex[K, V]) len() int { return len(l.items) }

// oldestFirst calls fn from the least recently used key on, until fn
// returns false. fn may remove the key it is given.
func (l *lruIndex[K, V]) oldestFirst(fn func(key K, value V) bool) {
	for e := l.order.Back(); e != nil; {
		prev := e.Prev()
		item := e.Value.(*lruItem[K, V])
		if !fn(item.key, item.value) {
			return
		}
		e = prev
	}
}
