package quant_test

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/gopeft/gopeft/internal/shared"
	"github.com/gopeft/gopeft/model/format"
	"github.com/gopeft/gopeft/quant"
)

// goldenFile is the part of ../shared/golden/quant/<type>_cases.json the
// tests read (the rest describes other bitsandbytes code paths).
type goldenFile struct {
	QuantType   string           `json:"quant_type"`
	QuantMapF32 []string         `json:"quant_map_f32"`
	Midpoints   []string         `json:"midpoints_f32"`
	SortedOrder []int            `json:"sorted_order"`
	NestedMap   []string         `json:"nested_quant_map_f32"`
	Cases       map[string]gCase `json:"cases"`
}

type gCase struct {
	Shape          []int  `json:"shape"`
	QuantStateJSON string `json:"quant_state_json"`
	Codes          []int  `json:"codes"`
	PackedHex      string `json:"packed_hex"`
	DoubleQuant    struct {
		OffsetF32      string `json:"offset_f32"`
		AbsmaxU8       []int  `json:"absmax_u8"`
		QuantStateJSON string `json:"quant_state_json"`
	} `json:"double_quant"`
}

// golden loads one format's cases: the JSON and the tensors.
func golden(t *testing.T, typ string) (*goldenFile, map[string]*format.Tensor) {
	t.Helper()
	dir := shared.Path(t, "golden/quant")
	b, err := os.ReadFile(filepath.Join(dir, typ+"_cases.json"))
	if err != nil {
		t.Fatal(err)
	}
	var g goldenFile
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatal(err)
	}
	ts, _, err := format.ReadSafetensors(filepath.Join(dir, typ+"_cases.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Cases) < 13 {
		t.Fatalf("%s: only %d cases", typ, len(g.Cases))
	}
	return &g, ts
}

func hexF32(t *testing.T, h string) float32 {
	u, err := strconv.ParseUint(h, 16, 32)
	if err != nil {
		t.Fatal(err)
	}
	return math.Float32frombits(uint32(u))
}

func f32s(t *testing.T, ts map[string]*format.Tensor, key string) []float32 {
	t.Helper()
	tt, ok := ts[key]
	if !ok {
		t.Fatalf("golden tensor %s missing", key)
	}
	if tt.DType != format.F32 {
		t.Fatalf("%s: dtype %s", key, tt.DType)
	}
	v, err := tt.Float32()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func u8s(t *testing.T, ts map[string]*format.Tensor, key string) []byte {
	t.Helper()
	tt, ok := ts[key]
	if !ok || tt.DType != "U8" {
		t.Fatalf("golden tensor %s missing or not U8", key)
	}
	return tt.Data
}

// sameBits compares float32 slices bit for bit (+0 and -0 differ), reporting
// the first few mismatches.
func sameBits(t *testing.T, what string, got, want []float32) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: %d values, want %d", what, len(got), len(want))
		return
	}
	bad := 0
	for i := range got {
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
			if bad < 5 {
				t.Errorf("%s[%d] = %08x (%g), want %08x (%g)", what, i, math.Float32bits(got[i]), got[i], math.Float32bits(want[i]), want[i])
			}
			bad++
		}
	}
	if bad > 0 {
		t.Errorf("%s: %d of %d values differ", what, bad, len(got))
	}
}

func sameBytes(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: %d bytes, want %d", what, len(got), len(want))
		return
	}
	for i := range got {
		if got[i] != want[i] {
			t.Errorf("%s: byte %d is %02x, want %02x (%d bytes)", what, i, got[i], want[i], len(got))
			return
		}
	}
}

func TestGoldenCodeBooks(t *testing.T) {
	for _, typ := range []quant.Type{quant.NF4, quant.FP4} {
		g, ts := golden(t, typ.String())
		code := typ.Code()
		var want []float32
		for _, h := range g.QuantMapF32 {
			want = append(want, hexF32(t, h))
		}
		sameBits(t, typ.String()+" code book", code[:], want)
		sameBits(t, typ.String()+" quant_map tensor", code[:], f32s(t, ts, "quant_map"))
		dm := quant.DynamicMap()
		sameBits(t, "dynamic map", dm[:], f32s(t, ts, "nested_quant_map"))
		var wantDM []float32
		for _, h := range g.NestedMap {
			wantDM = append(wantDM, hexF32(t, h))
		}
		sameBits(t, "dynamic map (json)", dm[:], wantDM)
	}
}

// TestGolden quantizes every case with and without double quantization
// and compares everything bitsandbytes produced: packed bytes, absmax, the
// 8-bit codes, nested absmax and offset, dequantized absmax and weights,
// the quant-state JSON, and the round trip through the state dict.
func TestGolden(t *testing.T) {
	for _, typ := range []quant.Type{quant.NF4, quant.FP4} {
		g, ts := golden(t, typ.String())
		for name, c := range g.Cases {
			t.Run(fmt.Sprintf("%s/%s", typ, name), func(t *testing.T) {
				in := f32s(t, ts, name+".input")
				q := quant.Quantize4(typ, in, c.Shape, false)
				sameBytes(t, "packed", q.Packed, u8s(t, ts, name+".packed"))
				sameBits(t, "absmax", q.Absmax, f32s(t, ts, name+".absmax"))
				sameBits(t, "dequant", q.Dequantize(nil), f32s(t, ts, name+".dequant"))
				if c.Codes != nil {
					for i, want := range c.Codes {
						if got := q.Code(i); int(got) != want {
							t.Errorf("code[%d] = %d, want %d", i, got, want)
						}
					}
				}
				if c.PackedHex != "" && fmt.Sprintf("%x", q.Packed) != c.PackedHex {
					t.Errorf("packed %x, want %s", q.Packed, c.PackedHex)
				}
				st := q.State()
				if got := string(st.JSON()); got != c.QuantStateJSON {
					t.Errorf("quant state JSON\n got %s\nwant %s", got, c.QuantStateJSON)
				}
				roundTrip(t, q, in)

				dq := quant.Quantize4(typ, in, c.Shape, true)
				sameBytes(t, "dq packed", dq.Packed, u8s(t, ts, name+".packed"))
				sameBytes(t, "dq absmax codes", dq.Nested.Codes, u8s(t, ts, name+".dq.absmax"))
				for i, want := range c.DoubleQuant.AbsmaxU8 {
					if int(dq.Nested.Codes[i]) != want {
						t.Errorf("dq absmax code %d = %d, want %d", i, dq.Nested.Codes[i], want)
					}
				}
				sameBits(t, "dq nested absmax", dq.Nested.Absmax, f32s(t, ts, name+".dq.nested_absmax"))
				sameBits(t, "dq offset", []float32{dq.Offset}, f32s(t, ts, name+".dq.offset"))
				sameBits(t, "dq offset (json)", []float32{dq.Offset}, []float32{hexF32(t, c.DoubleQuant.OffsetF32)})
				sameBits(t, "dq absmax dequant", dq.Scales(), f32s(t, ts, name+".dq.absmax_dequant"))
				sameBits(t, "dq dequant", dq.Dequantize(nil), f32s(t, ts, name+".dq.dequant"))
				dst := dq.State()
				if got := string(dst.JSON()); got != c.DoubleQuant.QuantStateJSON {
					t.Errorf("dq quant state JSON\n got %s\nwant %s", got, c.DoubleQuant.QuantStateJSON)
				}
				roundTrip(t, dq, in)
			})
		}
	}
}

// roundTrip writes q's state dict, reads it back and checks that the
// result dequantizes to the same bits and re-serializes to the same bytes.
func roundTrip(t *testing.T, q *quant.Tensor4, in []float32) {
	t.Helper()
	sd := q.StateDict()
	back, err := quant.FromStateDict("model.layers.0.mlp.up_proj", sd)
	if err != nil {
		t.Fatalf("FromStateDict: %v", err)
	}
	sameBits(t, "round trip dequant", back.Dequantize(nil), q.Dequantize(nil))
	sd2 := back.StateDict()
	for k, r := range sd {
		r2, ok := sd2[k]
		if !ok || r2.DType != r.DType || fmt.Sprint(r2.Shape) != fmt.Sprint(r.Shape) || string(r2.Data) != string(r.Data) {
			t.Errorf("state dict %s differs after a round trip", k)
		}
	}
	if len(sd2) != len(sd) {
		t.Errorf("state dict has %d tensors after a round trip, want %d", len(sd2), len(sd))
	}
}
