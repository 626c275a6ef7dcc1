package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/torpor-dev/torpor/internal/model"
	"github.com/torpor-dev/torpor/internal/snapshot"
)

// The snapshot store keeps a copy of every sealed snapshot of the cluster
// in an S3-compatible bucket, so that a suspended machine can still resume
// elsewhere, memory intact, when its host is gone for good. The owner
// uploads a snapshot after the suspend (off its critical path) and records
// it in snapshots/<machine>/<id> (stored: true); a snapshot that is
// claimed, or whose machine moves on, is deleted from the bucket. The copy
// is checked against its seal like any image before it is restored.
//
// --snapshot-store s3://BUCKET[/PREFIX]?endpoint=HOST:PORT[&secure=false][&region=R]
// with the credentials in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.

type snapStore struct {
	c      *minio.Client
	bucket string
	prefix string
}

func openStore(ctx context.Context, raw string) (*snapStore, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "s3" || u.Host == "" {
		return nil, fmt.Errorf("invalid snapshot store %q: want s3://bucket[/prefix]?endpoint=host:port", raw)
	}
	q := u.Query()
	endpoint := q.Get("endpoint")
	if endpoint == "" {
		return nil, fmt.Errorf("invalid snapshot store %q: the endpoint query parameter (host:port of the S3 server) is required", raw)
	}
	c, err := minio.New(endpoint, &minio.Options{
		Creds:  credentials.NewEnvAWS(),
		Secure: q.Get("secure") != "false",
		Region: q.Get("region"),
	})
	if err != nil {
		return nil, err
	}
	s := &snapStore{c: c, bucket: u.Host, prefix: strings.Trim(u.Path, "/")}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ok, err := c.BucketExists(ctx, s.bucket)
	if err != nil {
		return nil, fmt.Errorf("snapshot store %s: %w", endpoint, err)
	}
	if !ok {
		if err := c.MakeBucket(ctx, s.bucket, minio.MakeBucketOptions{Region: q.Get("region")}); err != nil {
			return nil, fmt.Errorf("snapshot store %s: creating bucket %s: %w", endpoint, s.bucket, err)
		}
	}
	return s, nil
}

func (s *snapStore) dir(machine, snap string) string { return path.Join(s.prefix, machine, snap) + "/" }

// upload copies the image in dir, the seal last (an object set without
// its seal is incomplete, like an image directory).
func (s *snapStore) upload(ctx context.Context, machine, snap, dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var names []string
	for _, e := range entries {
		if e.Type().IsRegular() && e.Name() != snapshot.SealFile {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	for _, name := range append(names, snapshot.SealFile) {
		if _, err := s.c.FPutObject(ctx, s.bucket, s.dir(machine, snap)+name, filepath.Join(dir, name),
			minio.PutObjectOptions{ContentType: "application/octet-stream"}); err != nil {
			return fmt.Errorf("upload %s: %w", name, err)
		}
	}
	return nil
}

// download copies the stored image into dir.
func (s *snapStore) download(ctx context.Context, machine, snap, dir string) error {
	n := 0
	for obj := range s.c.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: s.dir(machine, snap), Recursive: true}) {
		if obj.Err != nil {
			return obj.Err
		}
		name := path.Base(obj.Key)
		if err := s.c.FGetObject(ctx, s.bucket, obj.Key, filepath.Join(dir, name), minio.GetObjectOptions{}); err != nil {
			return fmt.Errorf("download %s: %w", name, err)
		}
		n++
	}
	if n == 0 {
		return fmt.Errorf("snapshot %s of machine %s is not in the snapshot store", snap, machine)
	}
	return nil
}

// remove deletes a stored image.
func (s *snapStore) remove(ctx context.Context, machine, snap string) error {
	objs := s.c.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: s.dir(machine, snap), Recursive: true})
	for r := range s.c.RemoveObjects(ctx, s.bucket, objs, minio.RemoveObjectsOptions{}) {
		if r.Err != nil {
			return r.Err
		}
	}
	return nil
}

// storeSnapshots uploads the sealed snapshot of every suspended machine of
// this host that is not in the store yet, and deletes the stored copies of
// snapshots that are no longer their machine's current one.
func (n *Node) storeSnapshots() {
	stored := map[string]string{} // machine → snapshot in the store
	for n.ctx.Err() == nil {
		sleepCtx(n.ctx, time.Second)
		ms, err := n.localMachines(n.ctx)
		if err != nil {
			continue
		}
		current := map[string]model.Snapshot{}
		for _, mc := range ms {
			if mc.State != model.StateSuspended {
				continue
			}
			if snap, ok, err := n.mgr.Snapshot(mc.ID); err == nil && ok && snap.State == model.SnapshotSealed && snap.Reason == "" {
				current[mc.ID] = snap
			}
		}
		for id, snapID := range stored {
			if cur, ok := current[id]; !ok || cur.ID != snapID {
				ctx, cancel := context.WithTimeout(n.ctx, time.Minute)
				if err := n.snap.remove(ctx, id, snapID); err == nil {
					delete(stored, id)
				}
				cancel()
			}
		}
		for id, snap := range current {
			if stored[id] == snap.ID || n.fenced.Load() {
				continue
			}
			if err := n.storeSnapshot(id, snap); err != nil {
				n.log.Warn("copying a snapshot to the snapshot store", "machine", id, "snapshot", snap.ID, "err", err)
				continue
			}
			stored[id] = snap.ID
		}
	}
}

func (n *Node) storeSnapshot(id string, snap model.Snapshot) error {
	ctx, cancel := context.WithTimeout(n.ctx, 10*time.Minute)
	defer cancel()
	key := snapshotKey(id, snap.ID)
	resp, err := n.cli.Get(ctx, key)
	if err != nil {
		return err
	}
	if len(resp.Kvs) > 0 {
		var rec snapRecord
		if json.Unmarshal(resp.Kvs[0].Value, &rec) == nil && (rec.Stored || rec.State == snapClaimed) {
			return nil
		}
	}
	want, err := snapshotCompat(snap.Dir)
	if err != nil {
		return err
	}
	begin := time.Now()
	if err := n.snap.upload(ctx, id, snap.ID, snap.Dir); err != nil {
		return err
	}
	rec := snapRecord{Machine: id, Host: n.id, State: snapSealed, Stored: true, Snapshot: &snap, CPU: want.cpu}
	tr, err := n.cli.Txn(ctx).If(
		clientv3.Compare(clientv3.CreateRevision(key), "=", 0),
		clientv3.Compare(clientv3.Value(ownerKey(id)), "=", n.id),
	).Then(clientv3.OpPut(key, mustJSON(rec))).Commit()
	if err != nil {
		return err
	}
	if !tr.Succeeded {
		return n.snap.remove(ctx, id, snap.ID) // claimed or moved meanwhile
	}
	n.log.Info("snapshot copied to the snapshot store", "machine", id, "snapshot", snap.ID, "bytes", snap.SizeBytes, "took", time.Since(begin).Round(time.Millisecond))
	return nil
}
