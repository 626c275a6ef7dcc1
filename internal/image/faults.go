package image

import "slices"

// FaultPoints are the steps of a pull or import where crash tests kill
// the daemon (TORPOR_FAULT, test builds only: go build -tags faults): what
// a crash there leaves must never become an image a machine uses.
var FaultPoints = []string{
	"image/after-blobs",  // every blob verified in the cache; nothing unpacked
	"image/after-unpack", // the root filesystem complete under tmp/, not renamed into place
	"image/after-rename", // the root filesystem in place, its record not committed
}

// IsFaultPoint reports whether name is one of FaultPoints.
func IsFaultPoint(name string) bool { return slices.Contains(FaultPoints, name) }
