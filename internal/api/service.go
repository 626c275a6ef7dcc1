package api

import (
	"context"

	"github.com/torpor-dev/torpor/internal/logs"
	"github.com/torpor-dev/torpor/internal/model"
)

// Machines is what the API needs from the machine lifecycle (package machine's
// Manager implements it). Every method returns *model.Error values whose Kind the
// API maps to an HTTP status.
type Machines interface {
	CreateApp(ctx context.Context, app model.App) (model.App, error)
	GetApp(ctx context.Context, name string) (model.App, error)
	ListApps(ctx context.Context) ([]model.App, error)
	DeleteApp(ctx context.Context, name string) error

	Create(ctx context.Context, app string, req model.CreateMachineRequest) (model.Machine, error)
	Get(ctx context.Context, app, id string) (model.Machine, error)
	List(ctx context.Context, app string) ([]model.Machine, error)
	Update(ctx context.Context, app, id string, req model.UpdateMachineRequest) (model.Machine, error)
	Start(ctx context.Context, app, id string) (model.StartResponse, error)
	Stop(ctx context.Context, app, id string, req model.StopRequest) error
	Suspend(ctx context.Context, app, id string) error
	Destroy(ctx context.Context, app, id string, force bool) error
	// Wait blocks until the machine is in one of states or ctx ends; on ctx
	// deadline it returns a KindTimeout error.
	Wait(ctx context.Context, app, id string, states []model.State) (model.Machine, error)
	Events(ctx context.Context, app, id string) ([]model.Event, error)
	Cordon(ctx context.Context, app, id string, cordoned bool) error
	// Logs returns the machine's persistent console log.
	Logs(ctx context.Context, app, id string) (*logs.Log, error)
}
