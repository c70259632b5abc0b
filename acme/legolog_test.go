package acme

import (
	"bytes"
	"log/slog"
	"testing"

	legolog "github.com/go-acme/lego/v4/log"
	"github.com/stretchr/testify/assert"
)

// TestRouteLegoLog is not parallel: it sets lego's global logger.
func TestRouteLegoLog(t *testing.T) {
	saved := legolog.Logger
	t.Cleanup(func() { legolog.Logger = saved })

	var buf bytes.Buffer

	RouteLegoLog(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{ReplaceAttr: dropTime})))
	legolog.Infof("retry due to: %v", "badNonce")
	legolog.Warnf("[%s] acme: something odd", "example.com")

	assert.Equal(t, `level=INFO msg="retry due to: badNonce" component=lego
level=WARN msg="[example.com] acme: something odd" component=lego
`, buf.String())
}

func dropTime(_ []string, a slog.Attr) slog.Attr {
	if a.Key == slog.TimeKey {
		return slog.Attr{}
	}

	return a
}
