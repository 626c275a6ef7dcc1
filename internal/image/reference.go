package image

import (
	"fmt"
	"net"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/torpor-dev/torpor/internal/model"
)

// Reference is a parsed image reference: name[:tag][@digest].
type Reference struct {
	ref    name.Reference
	tag    string // the tag, also when a digest pins the reference
	digest string
}

// ParseReference parses an image reference as Docker does: "nginx" is
// index.docker.io/library/nginx:latest.
func ParseReference(s string) (Reference, error) {
	if s == "" || len(s) > 1024 || strings.ContainsFunc(s, func(c rune) bool { return c <= ' ' || c == 0x7f }) {
		return Reference{}, fmt.Errorf("%w %q: at most 1024 characters, no spaces or control characters", ErrBadReference, s)
	}
	ref, err := name.ParseReference(s)
	if err != nil {
		return Reference{}, fmt.Errorf("%w %q: %v", ErrBadReference, s, err)
	}
	r := Reference{ref: ref}
	switch v := ref.(type) {
	case name.Tag:
		r.tag = v.TagStr()
	case name.Digest:
		r.digest = v.DigestStr()
		base := strings.SplitN(s, "@", 2)[0]
		if t, err := name.NewTag(base, name.StrictValidation); err == nil {
			r.tag = t.TagStr()
		}
	}
	return r, nil
}

// String is the normalized reference: registry/repository:tag, or
// registry/repository@digest when a digest pins it.
func (r Reference) String() string {
	if r.digest != "" {
		return r.ref.Context().Name() + "@" + r.digest
	}
	return r.ref.Context().Name() + ":" + r.tag
}

// Registry is the registry's host (and port).
func (r Reference) Registry() string { return r.ref.Context().RegistryStr() }

// Digest is the digest the reference pins, if any.
func (r Reference) Digest() string { return r.digest }

// Tag is the reference's tag, if any.
func (r Reference) Tag() string { return r.tag }

// imageRef is Fly's image_ref for the reference resolved to digest.
func (r Reference) imageRef(digest string, labels map[string]string) model.ImageRef {
	return model.ImageRef{Registry: r.Registry(), Repository: r.ref.Context().RepositoryStr(), Tag: r.tag,
		Digest: digest, Labels: labels}
}

// withDigest is the reference pinned to digest in the same repository.
func (r Reference) withDigest(digest string) (name.Reference, error) {
	return name.NewDigest(r.ref.Context().Name() + "@" + digest)
}

// CheckInsecureRegistry checks an --insecure-registry value: HOST:PORT
// where HOST is "localhost" or a loopback address. Plain HTTP is only ever
// spoken to these; every other registry is reached over HTTPS.
func CheckInsecureRegistry(hostport string) error {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil || port == "" {
		return fmt.Errorf("insecure registry %q must be HOST:PORT", hostport)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("insecure registry %q: plain HTTP is only allowed on loopback (localhost, 127.0.0.0/8, [::1])", hostport)
	}
	return nil
}
