package api

import (
	"errors"
	"net/http"

	"github.com/torpor-dev/torpor/internal/model"
)

// StatusOf maps an error to the HTTP status an API answers for it: the
// status of its model.Kind, or of the transport problem it names (an
// explicit httpError, a body over the limit). The in-machine API uses it
// too, so that both transports agree.
func StatusOf(err error) int {
	var he *httpError
	if errors.As(err, &he) {
		return he.status
	}
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return http.StatusRequestEntityTooLarge
	}
	return KindStatus(model.KindOf(err))
}

// KindStatus is the HTTP status of an error of kind k.
func KindStatus(k model.Kind) int {
	switch k {
	case model.KindInvalid:
		return http.StatusBadRequest
	case model.KindNotFound:
		return http.StatusNotFound
	case model.KindConflict:
		return http.StatusConflict
	case model.KindPrecondition:
		return http.StatusPreconditionFailed
	case model.KindTimeout:
		return http.StatusRequestTimeout
	case model.KindUnavailable:
		return http.StatusServiceUnavailable
	case model.KindInsufficientStorage:
		return http.StatusInsufficientStorage
	case model.KindForbidden:
		return http.StatusForbidden
	case model.KindQuota:
		return http.StatusUnprocessableEntity
	}
	return http.StatusInternalServerError
}
