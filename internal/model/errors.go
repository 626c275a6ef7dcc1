package model

import (
	"errors"
	"fmt"
)

// Kind classifies an error by what the caller can do about it, the way
// containerd's errdefs classes do: bad input, something missing, a state
// that forbids the operation, and so on. Package api maps each kind to an
// HTTP status (and so does the in-machine API); nothing else in torpor
// knows about HTTP.
type Kind int

// Error kinds.
const (
	KindInternal     Kind = iota // a fault of the daemon or the host
	KindInvalid                  // bad input; the message names the field and the rule
	KindNotFound                 // the named thing does not exist (or the caller may not see it)
	KindConflict                 // the machine's (or resource's) state does not allow the operation now
	KindPrecondition             // the machine is not eligible (e.g. for suspend)
	KindTimeout                  // a wait timed out
	KindUnavailable              // a dependency is unreachable or the daemon is shedding load; retry later
	// KindInsufficientStorage: the host ran out of disk space for the
	// operation (e.g. a snapshot); nothing is wrong with the request.
	KindInsufficientStorage
	// KindForbidden: the caller is known but may not do this.
	KindForbidden
	// KindQuota: the request is valid but exceeds a limit set by the
	// operator or what the host can hold.
	KindQuota
)

var kindNames = [...]string{
	KindInternal: "internal", KindInvalid: "invalid", KindNotFound: "not found", KindConflict: "conflict",
	KindPrecondition: "precondition", KindTimeout: "timeout", KindUnavailable: "unavailable",
	KindInsufficientStorage: "insufficient storage", KindForbidden: "forbidden", KindQuota: "quota",
}

// String names the kind.
func (k Kind) String() string {
	if int(k) >= 0 && int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

// Error is an error with a Kind, a message for the user and, optionally,
// the error that caused it (reachable with errors.Is and errors.As).
type Error struct {
	Kind Kind
	Msg  string
	// Err is the cause, if any.
	Err error
}

func (e *Error) Error() string { return e.Msg }

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Is reports whether target is e's Kind, so that errors.Is(err,
// model.KindNotFound) asks for the class of err.
func (e *Error) Is(target error) bool {
	k, ok := target.(kindError)
	return ok && Kind(k) == e.Kind
}

// kindError lets a Kind be the target of errors.Is.
type kindError Kind

func (k kindError) Error() string { return Kind(k).String() }

// Class returns an error value standing for kind, for errors.Is:
// errors.Is(err, model.Class(model.KindNotFound)).
func Class(kind Kind) error { return kindError(kind) }

// Errorf returns an *Error of the given kind. Its message is formatted as
// fmt.Errorf does; a %w verb makes the wrapped error its cause.
func Errorf(kind Kind, format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	e := &Error{Kind: kind, Msg: err.Error()}
	if wrapsSomething(err) {
		e.Err = err
	}
	return e
}

// Wrap returns an *Error of the given kind whose message is msg followed by
// cause's, and whose cause is cause. A nil cause gives nil.
func Wrap(kind Kind, cause error, msg string) error {
	if cause == nil {
		return nil
	}
	return &Error{Kind: kind, Msg: msg + ": " + cause.Error(), Err: cause}
}

// wrapsSomething reports whether err (made by fmt.Errorf) wraps an error.
func wrapsSomething(err error) bool {
	switch u := err.(type) {
	case interface{ Unwrap() error }:
		return u.Unwrap() != nil
	case interface{ Unwrap() []error }:
		return len(u.Unwrap()) > 0
	}
	return false
}

// KindOf returns the Kind of err, KindInternal if it has none.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return KindInternal
}

// ErrNameTaken is the cause of a KindConflict error refusing a name that is
// in use (an app's); the API reports it as Fly's status "name_taken".
var ErrNameTaken = errors.New("name taken")

// IsNotFound reports whether err is a KindNotFound error.
func IsNotFound(err error) bool { return KindOf(err) == KindNotFound }
