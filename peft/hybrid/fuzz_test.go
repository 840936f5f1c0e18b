package hybrid

import (
	"testing"

	"github.com/gopeft/gopeft/peft"
)

// A hybrid's adapter_config.json, nested pieces and all, is untrusted
// input: reading any bytes fails with an error, never a panic.
func FuzzConfig(f *testing.F) {
	f.Add([]byte(`{"peft_type": "UNIPELT", "prefix_tuning": {"num_virtual_tokens": 3}, "lora": {"r": 2}, "adapter": {"reduction_factor": 4}}`))
	f.Add([]byte(`{"peft_type": "MAM", "lora": null, "adapter": null}`))
	f.Add([]byte(`{"prefix_tuning": [1], "adapter": "x", "use_gating": 3}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, c := range []*Config{NewMAMConfig(), NewUniPELTConfig()} {
			_ = peft.DecodeConfig(b, c, "fuzz", false)
		}
	})
}
