package secret_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/certfetch/certfetch/internal/secret"
)

func TestOnlyRevealShowsTheValue(t *testing.T) {
	t.Parallel()
	const value = "s3cret"
	s := secret.New(value)
	assert.Equal(t, value, s.Reveal())

	holder := struct{ Password secret.Secret }{s}
	encoded, err := json.Marshal(holder)
	assert.NoError(t, err)
	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("msg", "password", s, "holder", holder)
	for how, rendered := range map[string]string{
		"%v": fmt.Sprintf("%v", holder), "%+v": fmt.Sprintf("%+v", holder), "%#v": fmt.Sprintf("%#v", holder),
		"%s": fmt.Sprintf("%s", s), "%q": fmt.Sprintf("%q", s), "json": string(encoded), "slog": logs.String(),
	} {
		assert.NotContains(t, rendered, value, how)
		assert.Contains(t, rendered, "[redacted]", how)
	}
}
