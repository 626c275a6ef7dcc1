package api

import (
	"encoding/json"
	"time"

	"github.com/torpor-dev/torpor/internal/model"
)

// Answers in the shapes of Fly's Machines API (fly-go's types), with
// torpor's own fields alongside.

// machineView is a machine as the API answers it: torpor's record with
// Fly's host_status: "ok" for a machine whose host answers (on a single
// host, every machine), "unreachable" for one of a cluster host that is
// down (its record then comes from the cluster's directory). A machine of
// an unreachable host also answers Fly's incomplete_config: the config as
// the directory last knew it, which fly-go's Machine.GetConfig falls back
// on (config is answered too, so torpor's clients lose nothing).
type machineView struct {
	model.Machine
	HostStatus       string               `json:"host_status"`
	IncompleteConfig *model.MachineConfig `json:"incomplete_config,omitempty"`
}

func viewMachine(m model.Machine) machineView {
	hs := m.HostStatus
	if hs == "" {
		hs = model.HostOK
	}
	v := machineView{Machine: m, HostStatus: hs}
	if hs == model.HostUnreachable {
		cfg := m.Config
		v.IncompleteConfig = &cfg
	}
	return v
}

func viewMachines(ms []model.Machine) []machineView {
	out := make([]machineView, len(ms))
	for i, m := range ms {
		out[i] = viewMachine(m)
	}
	return out
}

// summaryOmits are the fields a list with summary=true leaves out, as Fly's
// summary does: the config and what comes with it.
var summaryOmits = []string{"config", "events", "checks", "nonce", "incomplete_config"}

// summarize returns the machines without the fields summaryOmits names.
func summarize(ms []machineView) ([]map[string]json.RawMessage, error) {
	out := make([]map[string]json.RawMessage, len(ms))
	for i, m := range ms {
		b, err := json.Marshal(m)
		if err != nil {
			return nil, err
		}
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(b, &obj); err != nil {
			return nil, err
		}
		for _, k := range summaryOmits {
			delete(obj, k)
		}
		out[i] = obj
	}
	return out, nil
}

// appView is an app in the shape of Fly's App (GET /v1/apps/{app}) and
// ListApp (the list's items), plus torpor's org_slug and created_at.
type appView struct {
	ID           string  `json:"id"`
	Name         string  `json:"name"`
	Status       string  `json:"status"`
	Organization orgView `json:"organization"`
	MachineCount int     `json:"machine_count"`
	VolumeCount  int     `json:"volume_count"`
	AppRole      string  `json:"app_role,omitempty"`

	OrgSlug   string    `json:"org_slug"`
	CreatedAt time.Time `json:"created_at"`
}

type orgView struct {
	Name string `json:"name"`
	Slug string `json:"slug"`
}

// App statuses: Fly's "pending" until an app has a machine, "deployed" after.
const (
	appPending  = "pending"
	appDeployed = "deployed"
)

// viewApp shapes an app with the numbers of its non-destroyed machines and
// of its volumes.
func viewApp(a model.App, machines, volumes int) appView {
	status := appPending
	if machines > 0 {
		status = appDeployed
	}
	return appView{ID: a.Name, Name: a.Name, Status: status, Organization: orgView{Name: a.Org, Slug: a.Org},
		MachineCount: machines, VolumeCount: volumes, AppRole: a.Role, OrgSlug: a.Org, CreatedAt: a.CreatedAt}
}

// appList is the answer of GET /v1/apps.
type appList struct {
	TotalApps int       `json:"total_apps"`
	Apps      []appView `json:"apps"`
}

// leaseView is a lease in Fly's answer shape.
type leaseView struct {
	Status string      `json:"status"`
	Data   model.Lease `json:"data"`
}

func viewLease(l model.Lease) leaseView { return leaseView{Status: "success", Data: l} }

// waitBody is the answer of a successful wait.
type waitBody struct {
	OK      bool        `json:"ok"`
	State   model.State `json:"state"`
	Version string      `json:"version,omitempty"`
}
