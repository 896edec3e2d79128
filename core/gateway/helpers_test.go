package gateway

import (
	"errors"

	"github.com/sluice-dev/sluice/core/problem"
)

func problemStatus(err error) int {
	var p *problem.Problem
	if errors.As(err, &p) {
		return p.Status
	}
	return 500
}
