package cluster

import (
	"context"
	"encoding/json"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/torpor-dev/torpor/internal/model"
)

// ListHosts implements api.Hosts: every host that ever joined, with its
// capacity and what its machines reserve.
func (n *Node) ListHosts(ctx context.Context) ([]model.Host, error) {
	var out []model.Host
	for _, u := range n.view.usages("") {
		h := model.Host{
			ID: u.host.ID, Advertise: u.host.Advertise, Status: "down", Cordoned: u.cordoned,
			CPUs: u.host.CPUs, MemoryMB: u.host.MemoryMB, DiskBytes: u.host.DiskBytes,
			ReservedCPUs: u.cpus, ReservedMemoryMB: u.memoryMB, Machines: u.machines,
			Runtime: u.host.Runtime, RuntimeVersion: u.host.RuntimeVersion, CPU: u.host.CPU, JoinedAt: u.host.JoinedAt,
		}
		if u.alive {
			h.Status = "up"
		}
		out = append(out, h)
	}
	return out, nil
}

// CordonHost implements api.Hosts: a cordoned host gets no new machines
// (placement skips it) and keeps those it has.
func (n *Node) CordonHost(ctx context.Context, id string, cordoned bool) error {
	for range 5 {
		resp, err := n.cli.Get(ctx, hostCfgKey(id))
		if err != nil {
			return unavailable(err)
		}
		if len(resp.Kvs) == 0 {
			return model.Errorf(model.KindNotFound, "host %q is not a member of the cluster", id)
		}
		var hc hostConfig
		if err := json.Unmarshal(resp.Kvs[0].Value, &hc); err != nil {
			return err
		}
		hc.Cordoned = cordoned
		tr, err := n.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(hostCfgKey(id)), "=", resp.Kvs[0].ModRevision)).
			Then(clientv3.OpPut(hostCfgKey(id), mustJSON(hc))).Commit()
		if err != nil {
			return unavailable(err)
		}
		if tr.Succeeded {
			n.view.waitRev(ctx, tr.Header.Revision)
			return nil
		}
	}
	return model.Errorf(model.KindUnavailable, "host %s: its record keeps changing; retry", id)
}
