package acme

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestKeyTypeOf(t *testing.T) {
	t.Parallel()

	for _, kt := range []KeyType{EC256, EC384, RSA2048} {
		t.Run(string(kt), func(t *testing.T) {
			t.Parallel()

			key, err := GenerateKey(kt)
			require.NoError(t, err)

			got, err := KeyTypeOf(MarshalKey(key))
			require.NoError(t, err)
			assert.Equal(t, kt, got)
		})
	}

	_, err := KeyTypeOf([]byte("not a key"))
	require.Error(t, err)
}
