package serve

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// chromium finds a Chromium or Chrome binary: $GOPEFT_CHROMIUM, then the
// usual names on PATH (Debian's package installs /usr/bin/chromium).
func chromium() string {
	if p := os.Getenv("GOPEFT_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// The playground in a real headless browser: the page loads, lists the
// base and the three adapters, shows the server's figures, and a message
// sent to an adapter comes back streamed — the answer grows on the page
// chunk by chunk — and equals what `gopeft generate` gives for the chat
// prompt. Everything stays on the loopback interface.
func TestPlaygroundInBrowser(t *testing.T) {
	exe := chromium()
	if exe == "" && os.Getenv("GOPEFT_REQUIRE_CHROMIUM") != "" {
		t.Fatal("no chromium on this machine, and GOPEFT_REQUIRE_CHROMIUM is set (.ci/run installs it)")
	}
	if exe == "" {
		t.Skip("no chromium on this machine (Debian: apt-get install chromium; or set GOPEFT_CHROMIUM): the playground's browser test is skipped")
	}
	f := getFixture(t)
	e, ts := start(t, f, Config{})
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(exe),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox, // root in containers and CI
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancelTimeout := context.WithTimeout(ctx, 90*time.Second)
	defer cancelTimeout()

	step := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	step("loading the playground", chromedp.Do(ctx,
		chromedp.Navigate(ts.URL+"/"),
		chromedp.WaitReady(chromedp.CSS(`#model option[value="gamma"]`))))
	models, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll('#model option')).map(o => o.value)`))
	step("reading the model list", err)
	slices.Sort(models)
	if want := []string{"alpha", "beta", "gamma", "stories260K"}; !slices.Equal(models, want) {
		t.Fatalf("the page lists %v, want %v", models, want)
	}
	_, err = chromedp.Run(ctx, chromedp.Poll[bool](`document.getElementById('s-adapters').textContent === '3'`, chromedp.WithPollingTimeout(20*time.Second)))
	step("waiting for the live figures (adapters loaded: 3)", err)

	// Record every text the answer shows: each SSE chunk the page reads
	// replaces the answer's text node, so intermediate values mean the
	// answer was shown as it streamed.
	const watch = `window.seen = []; new MutationObserver(rs => { for (const r of rs) for (const n of r.addedNodes) if (n.nodeType === 3) window.seen.push(n.data); }).observe(document.getElementById('log'), {childList: true, subtree: true}); true`
	const msg, n = "Hello, who are you?", 24
	_, err = chromedp.Run(ctx, chromedp.Evaluate[bool](watch))
	step("watching the answer", err)
	step("sending a message", chromedp.Do(ctx,
		chromedp.SetValue(chromedp.ID("model"), "beta"),
		chromedp.SetValue(chromedp.ID("maxtok"), fmt.Sprint(n)),
		chromedp.SendKeys(chromedp.ID("msg"), msg),
		chromedp.Click(chromedp.ID("send")),
		chromedp.WaitReady(chromedp.CSS(`#answer-1[data-done="1"]`))))
	answer, err := chromedp.Run(ctx, chromedp.TextContent(chromedp.ID("answer-1")))
	step("reading the answer", err)
	seen, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`window.seen`))
	step("reading the texts shown", err)
	prompt, err := ChatTemplate([]chatMessage{{Role: "user", Content: json.RawMessage(fmt.Sprintf("%q", msg))}})
	if err != nil {
		t.Fatal(err)
	}
	ids := append([]int{e.Model().Config.BOSTokenID}, f.tok.Encode(prompt)...)
	want := f.reference(t, "beta", ids, n, false)
	if answer != want {
		t.Errorf("the page shows %q, gopeft generate gives %q", answer, want)
	}
	partial := 0
	for _, s := range seen {
		if s != "" && s != answer && strings.HasPrefix(answer, s) {
			partial++
		}
	}
	if partial == 0 {
		t.Errorf("the answer never showed partially (texts seen: %q): not streamed", seen)
	}
	t.Logf("browser %s: models %v, answer %q shown in %d partial steps", exe, models, answer, partial)
	waitEmpty(t, e)
}
