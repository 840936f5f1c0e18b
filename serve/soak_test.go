package serve

import (
	"encoding/json"
	"flag"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var soakFor = flag.Duration("soak", 3*time.Second, "how long the soak test loads the server (longer runs: -soak 10m)")

// The soak test: clients asking for twice what the server holds (batch and
// queue) for a while. Some get 429; none gets anything else but a correct
// answer; nothing crashes; the pool returns to empty.
func TestSoak(t *testing.T) {
	f := getFixture(t)
	const batch, queue = 4, 4
	e, ts := start(t, f, Config{MaxBatch: batch, MaxQueue: queue})
	models := []string{"stories260K", "alpha", "beta", "gamma"}
	prompts := []string{"Once upon a time", "The dog", "Tom had a red ball"}
	want := map[string]string{}
	var wmu sync.Mutex
	bos := e.Model().Config.BOSTokenID
	expect := func(model, prompt string, n int) string {
		key := fmt.Sprint(model, "|", prompt, "|", n)
		wmu.Lock()
		defer wmu.Unlock()
		if w, ok := want[key]; ok {
			return w
		}
		adapter := model
		if model == "stories260K" {
			adapter = ""
		}
		w := f.reference(t, adapter, append([]int{bos}, f.tok.Encode(prompt)...), n, true)
		want[key] = w
		return w
	}
	deadline := time.Now().Add(*soakFor)
	var ok, rejected atomic.Int64
	var wg sync.WaitGroup
	for c := 0; c < 2*(batch+queue); c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Now().Before(deadline); i++ {
				model, prompt, n := models[(c+i)%4], prompts[(c*7+i)%3], 4+(c+i)%12
				body := map[string]any{"model": model, "prompt": prompt, "max_tokens": n, "temperature": 0, "ignore_eos": true}
				code, b := post(t, ts.URL+"/v1/completions", body)
				switch code {
				case 429:
					rejected.Add(1)
					time.Sleep(time.Millisecond)
				case 200:
					var r struct {
						Choices []struct{ Text string } `json:"choices"`
					}
					if err := json.Unmarshal(b, &r); err != nil || len(r.Choices) != 1 {
						t.Errorf("answer %s: %v", b, err)
						return
					}
					if w := expect(model, prompt, n); r.Choices[0].Text != w {
						t.Errorf("%s %q -n %d: %q, want %q", model, prompt, n, r.Choices[0].Text, w)
						return
					}
					ok.Add(1)
				default:
					t.Errorf("HTTP %d: %s", code, b)
					return
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("%d answered, %d refused with 429 in %v", ok.Load(), rejected.Load(), *soakFor)
	if ok.Load() == 0 || rejected.Load() == 0 {
		t.Errorf("%d answered, %d refused: want both at twice the capacity", ok.Load(), rejected.Load())
	}
	waitEmpty(t, e)
}
