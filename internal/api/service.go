package api

import (
	"context"

	"github.com/torpor-dev/torpor/internal/logs"
	"github.com/torpor-dev/torpor/internal/model"
)

// Machines is what the API needs from the machine lifecycle (package machine's
// Manager implements it). Every method returns *model.Error values whose Kind the
// API maps to an HTTP status. Operations on a machine get the caller's lease
// nonce in their context (model.LeaseNonceOf) and check it themselves.
type Machines interface {
	CreateApp(ctx context.Context, app model.App) (model.App, error)
	GetApp(ctx context.Context, name string) (model.App, error)
	ListApps(ctx context.Context) ([]model.App, error)
	DeleteApp(ctx context.Context, name string) error

	Create(ctx context.Context, app string, req model.CreateMachineRequest) (model.Machine, error)
	Get(ctx context.Context, app, id string) (model.Machine, error)
	ListMachines(ctx context.Context, app string, opts model.ListOptions) ([]model.Machine, error)
	Update(ctx context.Context, app, id string, req model.UpdateMachineRequest) (model.Machine, error)
	Start(ctx context.Context, app, id string) (model.StartResponse, error)
	Stop(ctx context.Context, app, id string, req model.StopRequest) error
	Restart(ctx context.Context, app, id string, req model.RestartRequest) error
	Suspend(ctx context.Context, app, id string) error
	Destroy(ctx context.Context, app, id string, force bool) error
	Signal(ctx context.Context, app, id, signal string) error
	Exec(ctx context.Context, app, id string, req model.ExecRequest) (model.ExecResponse, error)
	Processes(ctx context.Context, app, id string, order model.ProcessSort) ([]model.ProcessStat, error)
	// WaitFor blocks until the machine is as opts say or ctx ends; on ctx
	// deadline it returns a KindTimeout error.
	WaitFor(ctx context.Context, app, id string, opts model.WaitOptions) (model.Machine, error)
	Events(ctx context.Context, app, id string) ([]model.Event, error)
	Versions(ctx context.Context, app, id string) ([]model.MachineVersion, error)
	Cordon(ctx context.Context, app, id string, cordoned bool) error
	Metadata(ctx context.Context, app, id string) (map[string]string, error)
	SetMetadata(ctx context.Context, app, id, key, value string, del bool) error
	// Logs returns the machine's persistent console log.
	Logs(ctx context.Context, app, id string) (*logs.Log, error)

	AcquireLease(ctx context.Context, app, id string, p model.LeaseParams) (model.Lease, error)
	GetLease(ctx context.Context, app, id string) (model.Lease, error)
	ReleaseLease(ctx context.Context, app, id string) error
	// App leases serialize deploys of an app (a torpor extension).
	AcquireAppLease(ctx context.Context, app string, p model.LeaseParams) (model.Lease, error)
	GetAppLease(ctx context.Context, app string) (model.Lease, error)
	ReleaseAppLease(ctx context.Context, app string) error
}
