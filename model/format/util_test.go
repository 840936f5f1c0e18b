package format

import (
	"bytes"
	"encoding/binary"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/gopeft/gopeft/internal/shared"
)

// sharedPath returns ../shared/<rel> beside the module root, skipping the
// test when it is absent.
func sharedPath(t testing.TB, rel string) string { return shared.Path(t, rel) }

const (
	stories260KBin    = "data/models/stories260K/stories260K.bin"
	stories260KHFDir  = "golden/stories260K/hf"
	stories260KHFFile = "golden/stories260K/hf/model.safetensors"
)

// wantErr fails unless err is non-nil and mentions every fragment.
func wantErr(t *testing.T, err error, fragments ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("want an error mentioning %q, got nil", fragments)
	}
	for _, f := range fragments {
		if !strings.Contains(err.Error(), f) {
			t.Fatalf("error %q does not mention %q", err, f)
		}
	}
}

// le is a little-endian byte builder for hand-made fixtures, written
// independently of the package's encoders.
type le struct{ bytes.Buffer }

func (b *le) u8(v uint8)   { b.WriteByte(v) }
func (b *le) u32(v uint32) { binary.Write(&b.Buffer, binary.LittleEndian, v) }
func (b *le) i32(v int32)  { binary.Write(&b.Buffer, binary.LittleEndian, v) }
func (b *le) u64(v uint64) { binary.Write(&b.Buffer, binary.LittleEndian, v) }
func (b *le) f32(v float32) {
	binary.Write(&b.Buffer, binary.LittleEndian, math.Float32bits(v))
}
func (b *le) str(s string) { b.u64(uint64(len(s))); b.WriteString(s) }

func newRng(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, seed+1)) }

func randF32(rng *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(rng.NormFloat64())
	}
	return v
}

func f32Bytes(v []float32) []byte {
	var b le
	for _, x := range v {
		b.f32(x)
	}
	return b.Bytes()
}
