package proto

// ReadOnly reports a lookup without side effects: cacheable and not
// destructive. Only such an operation is cached and coalesced, answers a
// HEAD, or is sent to its plugin again after a Call that may have reached
// it failed. A nil operation is not.
func (o *Operation) ReadOnly() bool {
	return o.GetCacheable() && !o.GetDestructive()
}

// Operation returns the operation of d named name, nil if there is none.
func (d *Description) Operation(name string) *Operation {
	for _, o := range d.GetOperations() {
		if o.GetName() == name {
			return o
		}
	}
	return nil
}

// Param returns the parameter of o named name, nil if o declares none.
func (o *Operation) Param(name string) *Param {
	for _, p := range o.GetParams() {
		if p.GetName() == name {
			return p
		}
	}
	return nil
}
