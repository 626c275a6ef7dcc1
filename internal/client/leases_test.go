package client_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/torpor-dev/torpor/internal/client"
	"github.com/torpor-dev/torpor/internal/model"
)

// TestLeases: a machine lease guards the machine's operations, given by
// the nonce the client sends from its context; an app lease guards only
// itself, also on an app without machines.
func TestLeases(t *testing.T) {
	c, _, _ := serve(t, true)
	ctx := context.Background()
	if _, err := c.CreateApp(ctx, "web", ""); err != nil {
		t.Fatal(err)
	}
	conflict := func(err error, what string) {
		t.Helper()
		var ae *client.APIError
		if !errors.As(err, &ae) || ae.Status != 409 {
			t.Fatalf("%s: %v, want a 409", what, err)
		}
	}
	al, err := c.AcquireAppLease(ctx, "web", 60, "deploy 1")
	if err != nil || al.Nonce == "" {
		t.Fatalf("AcquireAppLease = %+v, %v", al, err)
	}
	_, err = c.AcquireAppLease(ctx, "web", 60, "deploy 2")
	conflict(err, "a second app lease")
	if !strings.Contains(err.Error(), "app web is leased") {
		t.Fatalf("message %q does not name the app", err)
	}
	if got, err := c.GetAppLease(ctx, "web"); err != nil || got.Nonce != al.Nonce || got.Description != "deploy 1" {
		t.Fatalf("GetAppLease = %+v, %v", got, err)
	}
	held := model.WithLeaseNonce(ctx, al.Nonce)
	if again, err := c.AcquireAppLease(held, "web", 120, ""); err != nil || again.Nonce != al.Nonce || again.ExpiresAt <= al.ExpiresAt {
		t.Fatalf("refresh = %+v, %v (was %+v)", again, err, al)
	}
	// The app lease holds back no machine operation.
	m, err := c.CreateMachine(ctx, "web", model.CreateMachineRequest{Config: model.MachineConfig{Image: "rootfs", Init: model.InitConfig{Exec: []string{"/app"}}}})
	if err != nil {
		t.Fatal(err)
	}
	ml, err := c.AcquireLease(ctx, "web", m.ID, 60, "")
	if err != nil {
		t.Fatal(err)
	}
	conflict(c.Suspend(ctx, "web", m.ID), "a suspend without the machine's nonce")
	if err := c.Suspend(model.WithLeaseNonce(ctx, ml.Nonce), "web", m.ID); err != nil {
		t.Fatalf("suspend with the nonce: %v", err)
	}
	conflict(c.ReleaseLease(ctx, "web", m.ID), "a release without the nonce")
	if err := c.ReleaseLease(model.WithLeaseNonce(ctx, ml.Nonce), "web", m.ID); err != nil {
		t.Fatal(err)
	}
	conflict(c.ReleaseAppLease(ctx, "web"), "an app lease release without the nonce")
	if err := c.ReleaseAppLease(held, "web"); err != nil {
		t.Fatal(err)
	}
	var ae *client.APIError
	if _, err := c.GetAppLease(ctx, "web"); !errors.As(err, &ae) || ae.Status != 404 {
		t.Fatalf("GetAppLease after release: %v", err)
	}
	if _, err := c.AcquireAppLease(ctx, "web", 60, ""); err != nil {
		t.Fatalf("after release: %v", err)
	}
}
