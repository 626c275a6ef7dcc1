package model

import "time"

// Image is an OCI image as the API shows it: a reference (a name a caller
// pulled or imported) and the content it resolved to.
type Image struct {
	// Reference is the normalized name, e.g.
	// "index.docker.io/library/nginx:1.27" or ".../app@sha256:...".
	Reference string `json:"reference"`
	// App owns the reference; empty for the admin's own images.
	App string `json:"app,omitempty"`
	// Public images (the admin's choice) can be run by every app.
	Public bool `json:"public,omitempty"`
	// Source is "pull" or "import".
	Source   string    `json:"source"`
	Ref      ImageRef  `json:"image_ref"`
	PulledAt time.Time `json:"pulled_at"`
	ImageContent
	// UsedBy lists the machines whose config runs this image (inspect only).
	UsedBy []string `json:"used_by,omitempty"`
}

// ImageContent is what one image manifest holds, stored once per manifest
// digest however many references name it.
type ImageContent struct {
	Digest string `json:"digest"` // the linux/amd64 manifest's digest
	// IndexDigest is the digest of the image index the manifest was chosen
	// from, when the reference named an index.
	IndexDigest string      `json:"index_digest,omitempty"`
	Config      ImageConfig `json:"config"`
	// Blobs are the manifest's blobs: the config first, then the layers.
	Blobs         []string  `json:"blobs"`
	SizeBytes     int64     `json:"size_bytes"`     // the blobs, compressed
	UnpackedBytes int64     `json:"unpacked_bytes"` // the layers' tar streams
	Layers        int       `json:"layers"`
	Created       time.Time `json:"created,omitzero"`
	// SkippedDevices counts device nodes the layers held and unpacking
	// did not create (docs/images.md, "Unpacking").
	SkippedDevices int `json:"skipped_devices,omitempty"`
}

// ImageConfig is the part of an image's config that says how to run it.
type ImageConfig struct {
	Entrypoint   []string          `json:"entrypoint,omitempty"`
	Cmd          []string          `json:"cmd,omitempty"`
	Env          []string          `json:"env,omitempty"`
	WorkingDir   string            `json:"working_dir,omitempty"`
	User         string            `json:"user,omitempty"`
	Labels       map[string]string `json:"labels,omitempty"`
	StopSignal   string            `json:"stop_signal,omitempty"`
	ExposedPorts []string          `json:"exposed_ports,omitempty"`
}

// ImageTag is the stored record of a reference: who owns it and what it
// resolved to when it was last pulled or imported.
type ImageTag struct {
	Reference string    `json:"reference"`
	App       string    `json:"app,omitempty"`
	Public    bool      `json:"public,omitempty"`
	Source    string    `json:"source"`
	Ref       ImageRef  `json:"image_ref"`
	Digest    string    `json:"digest"`
	PulledAt  time.Time `json:"pulled_at"`
}

// Image sources.
const (
	ImageSourcePull   = "pull"
	ImageSourceImport = "import"
)

// PullImageRequest is the body of POST /v1/images/pull.
type PullImageRequest struct {
	Image string `json:"image"`
	// App owns the pulled reference; an app token must name one of its
	// apps (or have just one); the admin may leave it out.
	App string `json:"app,omitempty"`
	// Public (admin only) lets every app run the image.
	Public bool `json:"public,omitempty"`
}

// PullProgress is one line of the progress a pull streams.
type PullProgress struct {
	// Phase is "resolve", "layer", "unpack", "done" (an image is ready),
	// then "end" (the operation succeeded) or "error" (it failed).
	Phase string `json:"phase"`
	// Layer is the layer's digest (phase "layer"), Index its position
	// (1-based) of Layers.
	Layer  string `json:"layer,omitempty"`
	Index  int    `json:"index,omitempty"`
	Layers int    `json:"layers,omitempty"`
	// Bytes of Total are downloaded (phase "layer").
	Bytes  int64 `json:"bytes,omitempty"`
	Total  int64 `json:"total,omitempty"`
	Cached bool  `json:"cached,omitempty"`
	// Message says what happens, in words.
	Message string `json:"message,omitempty"`
	// Image is the result (phase "done"); Error and Status (the HTTP
	// status the failure would have had) say why it failed (phase "error").
	Image  *Image `json:"image,omitempty"`
	Error  string `json:"error,omitempty"`
	Status int    `json:"status,omitempty"`
}

// PruneImagesResult is the answer of POST /v1/images/prune.
type PruneImagesResult struct {
	// References removed (only with all=true: those no machine uses).
	References []string `json:"references,omitempty"`
	// Digests whose content was deleted, and the bytes freed.
	Digests    []string `json:"digests,omitempty"`
	FreedBytes int64    `json:"freed_bytes"`
}
