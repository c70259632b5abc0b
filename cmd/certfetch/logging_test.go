package main

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/certfetch/certfetch/fetcher/config"
	"github.com/certfetch/certfetch/internal/testkit/testsupport"
)

// TestLoggingSwitchesOnApply: a logger handed out before a reload follows the new level
// and format (with its attributes kept), and JSON lines write durations as "1m30s".
func TestLoggingSwitchesOnApply(t *testing.T) {
	t.Parallel()
	var out testsupport.SyncBuffer
	lg := newLogging(config.Log{Level: slog.LevelInfo, Format: config.LogFormatText}, &out)
	log := lg.Logger().With("name", "www.example.com")

	log.Debug("hidden at info")
	log.Info("as text", "wait", 90*time.Second)
	lg.apply(config.Log{Level: slog.LevelDebug, Format: config.LogFormatJSON})
	log.Debug("shown at debug", "wait", 90*time.Second)

	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if assert.Len(t, lines, 2) {
		assert.Contains(t, lines[0], `msg="as text" name=www.example.com wait=1m30s`)
		assert.Contains(t, lines[1], `"msg":"shown at debug","name":"www.example.com","wait":"1m30s"`)
	}
}
