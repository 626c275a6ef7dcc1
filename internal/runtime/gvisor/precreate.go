package gvisor

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/torpor-dev/torpor/internal/runtime"
)

// Warm sandboxes (runtime.Precreator).
//
// `runsc restore` of a new ID first creates the sandbox (spawns the
// sandbox and gofer processes, sets up the network, cgroups and mounts:
// 60-80 ms of a 64 MiB restore here), then loads the image into it. runsc
// also restores into a sandbox that `runsc create` made earlier with the
// same ID and bundle, so Precreate does the create ahead, off the critical
// path, and Restore then only loads the image (issue 16: 330 → 242 ms for
// a 64 MiB restore on a loaded host, 188 → ~106 ms on a quiet one).
//
// The precreated sandbox is created exactly as the restore would create
// it: the same config.json, console (its stdout and stderr), network mode
// and namespace, and the same cpu cgroup trick (cgroup.go): its cpu
// cgroup is made by the driver without a quota before `runsc create`, so
// the restore into it runs unthrottled, and the quota is written once the
// restore has returned. With --network=sandbox, the create moves eth0's
// address into gVisor's netstack: the namespace must not be re-attached
// for the restore (package machine calls Network.Adopt instead), and one
// whose precreated sandbox was deleted must be attached again before the
// next create or restore.
//
// What was precreated is only in the driver's memory (precreated): a
// daemon that dies leaves the sandbox behind, in runsc's state "created",
// and the next daemon's recovery deletes it (machine.Recover kills any
// sandbox of a suspended machine; Precreate replaces a leftover created
// one).

// precreatedSandbox is what Precreate recorded of a sandbox it made.
type precreatedSandbox struct {
	digest string // specDigest of the spec it was created for
	lifted bool   // its cpu cgroup is the driver's, without a quota
}

var _ runtime.Precreator = (*Runtime)(nil)

// specDigest identifies everything a sandbox is created from: the
// config.json bytes (process, mounts, namespaces, resources), the bundle,
// the console and the network flag.
func specDigest(spec runtime.Spec) (string, error) {
	cfg, err := json.Marshal(ociSpec(spec))
	if err != nil {
		return "", fmt.Errorf("gvisor: encoding config.json: %w", err)
	}
	h := sha256.New()
	for _, part := range [][]byte{cfg, []byte(spec.Bundle), []byte(spec.Console), []byte(networkFlag(spec.NetNS))} {
		fmt.Fprintf(h, "%d:", len(part))
		h.Write(part)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Precreate implements runtime.Precreator with `runsc create`.
func (r *Runtime) Precreate(ctx context.Context, spec runtime.Spec) error {
	if err := validateSpec(spec); err != nil {
		return err
	}
	digest, err := specDigest(spec)
	if err != nil {
		return err
	}
	if p, ok := r.precreatedOf(spec.ID); ok {
		if p.digest == digest {
			return nil
		}
		if err := r.DiscardPrecreated(ctx, spec.ID); err != nil {
			return err
		}
	}
	// The checkpoint before marked the ID gone; a sandbox exists again
	// once this returns, so a Kill must ask runsc.
	r.takeGone(spec.ID)
	st, err := r.state(ctx, spec.ID)
	if err != nil {
		return err
	}
	if st != nil {
		// A create that a dead daemon started (or precreated) and nobody
		// recorded: it is not running anything, replace it.
		if st.Status != string(runtime.StatusCreated) {
			return fmt.Errorf("gvisor: precreate %s: sandbox already exists (%s)", spec.ID, st.Status)
		}
		r.cleanup(ctx, spec.ID)
	}
	if err := ctx.Err(); err != nil {
		return err // preempted before anything was made
	}
	if err := writeConfig(spec); err != nil {
		return err
	}
	console, err := openConsole(spec.Console)
	if err != nil {
		return err
	}
	defer console.Close()
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return fmt.Errorf("gvisor: %w", err)
	}
	defer devnull.Close()
	lifted, err := precreateCPUCgroup(spec.ID, spec.CPUs, r.cfg.KeepLimits)
	if err != nil {
		return err
	}
	args := []string{"--bundle=" + spec.Bundle, spec.ID}
	// A cancelled ctx (an operation on the machine preempts its precreate)
	// does not kill runsc create halfway: the sandbox process it may
	// already have started, outside any state file, would be left holding
	// the machine's network namespace. The create runs to its end, and
	// the sandbox it made is kept: the operation that preempted it waited
	// for it anyway, and a resume restores into it (package machine
	// deletes it when the operation is another).
	cmd := r.command(context.WithoutCancel(ctx), append(r.bundleFlags(spec.Bundle), networkFlag(spec.NetNS)), "create", args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, console, console
	if err = cmd.Run(); err != nil {
		r.cleanup(ctx, spec.ID)
		r.markGone(spec.ID)
		return &Error{Subcommand: "create", Args: args, Err: ctxErr(ctx, unavailable(err)), Detail: logTail(filepath.Join(spec.Bundle, logFile))}
	}
	r.mu.Lock()
	if r.precreated == nil {
		r.precreated = map[string]precreatedSandbox{}
	}
	r.precreated[spec.ID] = precreatedSandbox{digest: digest, lifted: lifted}
	r.mu.Unlock()
	return nil
}

// precreatedOf returns what Precreate recorded of sandbox id.
func (r *Runtime) precreatedOf(id string) (precreatedSandbox, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, ok := r.precreated[id]
	return p, ok
}

// takePrecreated returns and forgets what Precreate recorded of id.
func (r *Runtime) takePrecreated(id string) (precreatedSandbox, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, ok := r.precreated[id]
	delete(r.precreated, id)
	return p, ok
}

// Precreated implements runtime.Precreator.
func (r *Runtime) Precreated(spec runtime.Spec) bool {
	p, ok := r.precreatedOf(spec.ID)
	if !ok {
		return false
	}
	digest, err := specDigest(spec)
	return err == nil && digest == p.digest
}

// DiscardPrecreated implements runtime.Precreator: it deletes the sandbox
// (runsc delete --force) and its cgroups, if Precreate made it.
func (r *Runtime) DiscardPrecreated(ctx context.Context, id string) error {
	if _, ok := r.takePrecreated(id); !ok {
		return nil
	}
	if _, err := r.run(ctx, "delete", "--force", id); err != nil && !isNotExist(err) {
		return err
	}
	r.markGone(id)
	_ = removeCgroups(id)
	return nil
}

// restorePrecreated restores the image in imageDir into the sandbox
// Precreate made for spec (p): `runsc restore` of the same ID and bundle,
// then the CPU quota. A failure deletes the sandbox, as startSandbox does.
func (r *Runtime) restorePrecreated(ctx context.Context, spec runtime.Spec, imageDir string, p precreatedSandbox) error {
	console, err := openConsole(spec.Console)
	if err != nil {
		r.cleanup(ctx, spec.ID)
		return err
	}
	defer console.Close()
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		r.cleanup(ctx, spec.ID)
		return fmt.Errorf("gvisor: %w", err)
	}
	defer devnull.Close()
	args := r.restoreArgs(spec, imageDir)
	cmd := r.command(ctx, append(r.bundleFlags(spec.Bundle), networkFlag(spec.NetNS)), "restore", args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, console, console
	if err := cmd.Run(); err != nil {
		r.cleanup(ctx, spec.ID)
		return &Error{Subcommand: "restore", Args: args, Err: ctxErr(ctx, unavailable(err)), Detail: logTail(filepath.Join(spec.Bundle, logFile))}
	}
	if p.lifted {
		if err := setCPUQuota(cgroupDir("cpu", spec.ID), spec.CPUs); err != nil {
			r.cleanup(ctx, spec.ID)
			return err
		}
	}
	return nil
}
