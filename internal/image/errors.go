package image

import (
	"context"
	"errors"

	"github.com/torpor-dev/torpor/internal/model"
)

// kinds classifies this package's errors for callers.
var kinds = []struct {
	err  error
	kind model.Kind
}{
	{ErrBadReference, model.KindInvalid},
	{ErrUnsupported, model.KindInvalid},
	{ErrUnsafeLayer, model.KindInvalid},
	{ErrCorruptLayer, model.KindInvalid},
	{ErrUnknownUser, model.KindInvalid},
	{ErrNotFound, model.KindNotFound},
	{ErrDenied, model.KindForbidden},
	{ErrForbidden, model.KindForbidden},
	{ErrUnreachable, model.KindUnavailable},
	{ErrInUse, model.KindConflict},
	{ErrTooLarge, model.KindQuota},
	{context.DeadlineExceeded, model.KindTimeout},
}

// classed gives err the model.Kind of its class, keeping it as the cause
// (errors.Is(err, ErrNotFound) still holds). Errors that already have a
// kind (from the store) are returned as they are.
func classed(err error) error {
	if err == nil {
		return nil
	}
	var me *model.Error
	if errors.As(err, &me) {
		return err
	}
	for _, k := range kinds {
		if errors.Is(err, k.err) {
			return &model.Error{Kind: k.kind, Msg: err.Error(), Err: err}
		}
	}
	return err
}
