package store

import "github.com/torpor-dev/torpor/internal/model"

// PutLease stores the machine's lease, replacing any.
func (t *Tx) PutLease(machineID string, l model.Lease) error {
	return put(t.tx.Bucket(bucketLeases), []byte(machineID), l)
}

// Lease returns the machine's stored lease, if any, expired or not: whether
// it still holds is the caller's to judge.
func (t *Tx) Lease(machineID string) (model.Lease, bool, error) {
	var l model.Lease
	ok, err := get(t.tx.Bucket(bucketLeases), []byte(machineID), &l)
	return l, ok, err
}

// DeleteLease forgets the machine's lease.
func (t *Tx) DeleteLease(machineID string) error {
	return t.tx.Bucket(bucketLeases).Delete([]byte(machineID))
}

// PutAppLease stores the app's lease (the deploy lease), replacing any.
func (t *Tx) PutAppLease(app string, l model.Lease) error {
	return put(t.tx.Bucket(bucketAppLeases), []byte(app), l)
}

// AppLease returns the app's stored lease, if any, expired or not.
func (t *Tx) AppLease(app string) (model.Lease, bool, error) {
	var l model.Lease
	ok, err := get(t.tx.Bucket(bucketAppLeases), []byte(app), &l)
	return l, ok, err
}

// DeleteAppLease forgets the app's lease.
func (t *Tx) DeleteAppLease(app string) error {
	return t.tx.Bucket(bucketAppLeases).Delete([]byte(app))
}
