package eventagg

import (
	"testing"

	"github.com/eventagg/eventagg/internal/jsonscan"
)

// TestMaxPayloadDepth: the documented depth is a literal (so that godoc shows
// it), and must be what the scanner can check.
func TestMaxPayloadDepth(t *testing.T) {
	if MaxPayloadDepth != jsonscan.MaxDepth {
		t.Errorf("MaxPayloadDepth = %d, but the scanner checks %d levels", MaxPayloadDepth, jsonscan.MaxDepth)
	}
}
