package model

import (
	"errors"
	"fmt"
	"net/http"
)

// Kind classifies an error for the API, which maps each kind to an HTTP status.
type Kind int

// Error kinds.
const (
	KindInternal     Kind = iota // 500
	KindInvalid                  // 400: bad input; the message names the field and the rule
	KindNotFound                 // 404
	KindConflict                 // 409: the machine's state does not allow the operation
	KindPrecondition             // 412: the machine is not eligible (e.g. for suspend)
	KindTimeout                  // 408: wait timed out
	KindUnavailable              // 503
	// KindInsufficientStorage (507): the host ran out of disk space for
	// the operation (e.g. a snapshot); nothing is wrong with the request.
	KindInsufficientStorage
)

// Error is an error with a Kind.
type Error struct {
	Kind Kind
	Msg  string
}

func (e *Error) Error() string { return e.Msg }

// Errorf returns an *Error of the given kind.
func Errorf(kind Kind, format string, args ...any) error {
	return &Error{Kind: kind, Msg: fmt.Sprintf(format, args...)}
}

// KindOf returns the Kind of err, KindInternal if it has none.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return KindInternal
}

// IsNotFound reports whether err is a KindNotFound error.
func IsNotFound(err error) bool { return KindOf(err) == KindNotFound }

// HTTPStatus is the HTTP status an API answers for an error of kind k.
func (k Kind) HTTPStatus() int {
	switch k {
	case KindInvalid:
		return http.StatusBadRequest
	case KindNotFound:
		return http.StatusNotFound
	case KindConflict:
		return http.StatusConflict
	case KindPrecondition:
		return http.StatusPreconditionFailed
	case KindTimeout:
		return http.StatusRequestTimeout
	case KindUnavailable:
		return http.StatusServiceUnavailable
	case KindInsufficientStorage:
		return http.StatusInsufficientStorage
	}
	return http.StatusInternalServerError
}
