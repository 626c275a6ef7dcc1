package deploy

import (
	"context"
	"fmt"
	"sort"
	"strconv"

	"github.com/torpor-dev/torpor/internal/appconfig"
	"github.com/torpor-dev/torpor/internal/model"
)

// Status is what `torpor status` shows of an app.
type Status struct {
	App string `json:"app"`
	// Release and Image are the newest release among the machines and the
	// image it runs.
	Release  int             `json:"release"`
	Image    string          `json:"image"`
	Machines []MachineStatus `json:"machines"`
}

// MachineStatus is one machine of an app.
type MachineStatus struct {
	ID      string      `json:"id"`
	Group   string      `json:"process_group"`
	State   model.State `json:"state"`
	Release int         `json:"release"`
	Version string      `json:"version"`
	Image   string      `json:"image"`
	Digest  string      `json:"image_digest,omitempty"`
	// Checks is "N/M passing", or "-" without checks.
	Checks   string `json:"checks"`
	Cordoned bool   `json:"cordoned,omitempty"`
}

// AppStatus reads app's machines, by process group then age.
func AppStatus(ctx context.Context, api API, app string) (Status, error) {
	if _, err := api.GetApp(ctx, app); err != nil {
		return Status{}, err
	}
	ms, err := api.ListMachines(ctx, app)
	if err != nil {
		return Status{}, err
	}
	sort.SliceStable(ms, func(i, j int) bool {
		gi, gj := ms[i].Config.Metadata[appconfig.MetaProcessGroup], ms[j].Config.Metadata[appconfig.MetaProcessGroup]
		if gi != gj {
			return gi < gj
		}
		return ms[i].CreatedAt.Before(ms[j].CreatedAt)
	})
	st := Status{App: app}
	for _, m := range ms {
		if m.State == model.StateDestroyed {
			continue
		}
		r, _ := strconv.Atoi(m.Config.Metadata[appconfig.MetaReleaseVersion])
		ms := MachineStatus{ID: m.ID, Group: m.Config.Metadata[appconfig.MetaProcessGroup], State: m.State, Release: r,
			Version: m.Version, Image: m.Config.Image, Digest: m.ImageRef.Digest, Checks: checkSummary(m), Cordoned: m.Cordoned}
		st.Machines = append(st.Machines, ms)
		if r > st.Release || st.Image == "" {
			st.Release, st.Image = max(r, st.Release), m.Config.Image
		}
	}
	return st, nil
}

func checkSummary(m model.Machine) string {
	if len(m.Checks) == 0 {
		return "-"
	}
	passing := 0
	for _, c := range m.Checks {
		if c.Status == model.CheckPassing {
			passing++
		}
	}
	return fmt.Sprintf("%d/%d passing", passing, len(m.Checks))
}
