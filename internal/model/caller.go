package model

import "context"

type tenantKey struct{}

// AsTenant returns a context saying that the operations done with it are
// asked by a tenant (an app-scoped token), not the admin: the API sets it
// for such callers. Options reserved to the admin, such as a host
// directory as config.image, are refused for tenants.
func AsTenant(ctx context.Context) context.Context {
	return context.WithValue(ctx, tenantKey{}, true)
}

// IsTenant reports whether ctx was marked by AsTenant. Code in the daemon
// itself (recovery, restarts, tests) acts as the admin.
func IsTenant(ctx context.Context) bool {
	t, _ := ctx.Value(tenantKey{}).(bool)
	return t
}
