package store

import (
	"bytes"

	"github.com/torpor-dev/torpor/internal/model"
)

// PutImageContent stores what one manifest digest holds.
func (t *Tx) PutImageContent(c model.ImageContent) error {
	return put(t.tx.Bucket(bucketImages), []byte(c.Digest), c)
}

// ImageContent returns the content stored for a manifest digest.
func (t *Tx) ImageContent(digest string) (model.ImageContent, bool, error) {
	var c model.ImageContent
	ok, err := get(t.tx.Bucket(bucketImages), []byte(digest), &c)
	return c, ok, err
}

// ImageContents lists every stored image content, by digest.
func (t *Tx) ImageContents() ([]model.ImageContent, error) {
	var out []model.ImageContent
	err := t.tx.Bucket(bucketImages).ForEach(func(_, v []byte) error {
		var c model.ImageContent
		if err := unmarshal(v, &c); err != nil {
			return err
		}
		out = append(out, c)
		return nil
	})
	return out, err
}

// DeleteImageContent forgets a manifest digest's content record.
func (t *Tx) DeleteImageContent(digest string) error {
	return t.tx.Bucket(bucketImages).Delete([]byte(digest))
}

func imageTagKey(app, reference string) []byte {
	return append(append([]byte(app), 0), reference...)
}

// PutImageTag stores (replacing) the record of a reference owned by
// tag.App ("" for the admin).
func (t *Tx) PutImageTag(tag model.ImageTag) error {
	return put(t.tx.Bucket(bucketImageTags), imageTagKey(tag.App, tag.Reference), tag)
}

// ImageTag returns the record of reference owned by app.
func (t *Tx) ImageTag(app, reference string) (model.ImageTag, bool, error) {
	var tag model.ImageTag
	ok, err := get(t.tx.Bucket(bucketImageTags), imageTagKey(app, reference), &tag)
	return tag, ok, err
}

// ImageTags lists the references owned by app, or every reference when
// all is set, ordered by owner and reference.
func (t *Tx) ImageTags(app string, all bool) ([]model.ImageTag, error) {
	var out []model.ImageTag
	c := t.tx.Bucket(bucketImageTags).Cursor()
	prefix := append([]byte(app), 0)
	k, v := c.First()
	if !all {
		k, v = c.Seek(prefix)
	}
	for ; k != nil && (all || bytes.HasPrefix(k, prefix)); k, v = c.Next() {
		var tag model.ImageTag
		if err := unmarshal(v, &tag); err != nil {
			return nil, err
		}
		out = append(out, tag)
	}
	return out, nil
}

// DeleteImageTag forgets a reference owned by app.
func (t *Tx) DeleteImageTag(app, reference string) error {
	return t.tx.Bucket(bucketImageTags).Delete(imageTagKey(app, reference))
}

// DeleteImageTags forgets every reference owned by app (not the admin's:
// app must not be empty).
func (t *Tx) DeleteImageTags(app string) error {
	if app == "" {
		return nil
	}
	tags, err := t.ImageTags(app, false)
	for _, tag := range tags {
		if err == nil {
			err = t.DeleteImageTag(tag.App, tag.Reference)
		}
	}
	return err
}

// ImageUsers returns, for every image digest that something other than an
// image tag refers to, who does: the machines whose current config or a
// stored config version pins it ("machine ID"), and the machines whose
// snapshot record was taken on it ("snapshot of ID"). Destroyed machines
// count for nothing. Garbage collection keeps every digest listed here.
func (t *Tx) ImageUsers() (map[string][]string, error) {
	users := map[string][]string{}
	add := func(digest, who string) {
		if digest == "" {
			return
		}
		for _, u := range users[digest] {
			if u == who {
				return
			}
		}
		users[digest] = append(users[digest], who)
	}
	ms, err := t.Machines("")
	if err != nil {
		return nil, err
	}
	for _, m := range ms {
		if m.State == model.StateDestroyed {
			continue
		}
		add(m.ImageRef.Digest, "machine "+m.ID)
		if b := t.tx.Bucket(bucketConfigs).Bucket([]byte(m.ID)); b != nil {
			err := b.ForEach(func(_, v []byte) error {
				var rec configRecord
				if err := unmarshal(v, &rec); err != nil {
					return err
				}
				add(rec.Image.Digest, "machine "+m.ID)
				return nil
			})
			if err != nil {
				return nil, err
			}
		}
		s, ok, err := t.Snapshot(m.ID)
		if err != nil {
			return nil, err
		}
		if ok {
			add(s.ImageDigest, "snapshot of "+m.ID)
		}
	}
	return users, nil
}
