package proto

// ReadOnly reports a lookup without side effects: cacheable and not
// destructive. Only such an operation is cached and coalesced, answers a
// HEAD, or is sent to its plugin again after a Call that may have reached
// it failed. A nil operation is not.
func (o *Operation) ReadOnly() bool {
	return o.GetCacheable() && !o.GetDestructive()
}
