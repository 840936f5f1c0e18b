package serve

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// openaiScript uses the official openai npm client, unchanged, against the
// server: list models, a completion, a streamed chat completion.
const openaiScript = `
const OpenAI = require("openai");
const client = new OpenAI({ baseURL: process.env.BASE + "/v1", apiKey: "none" });
(async () => {
  const models = await client.models.list();
  const ids = models.data.map((m) => m.id);
  if (!ids.includes("stories260K") || !ids.includes("alpha")) throw new Error("models: " + ids);
  const c = await client.completions.create({ model: "alpha", prompt: "Once upon a time", max_tokens: 8, temperature: 0 });
  if (!c.choices[0].text || c.usage.completion_tokens < 1) throw new Error("completion: " + JSON.stringify(c));
  const stream = await client.chat.completions.create({ model: "beta", messages: [{ role: "user", content: "Hi" }], max_tokens: 8, temperature: 0, stream: true });
  let text = "", chunks = 0;
  for await (const chunk of stream) { chunks++; text += chunk.choices[0]?.delta?.content || ""; }
  if (chunks < 2 || !text) throw new Error("stream: " + chunks + " chunks, " + JSON.stringify(text));
  console.log("OK " + ids.join(",") + " | " + JSON.stringify(c.choices[0].text) + " | " + JSON.stringify(text));
})().catch((e) => { console.error(e); process.exit(1); });
`

// The official OpenAI client works against the server unchanged. It needs
// node and npm (and the openai package: installed here into a temporary
// directory, or found in $GOPEFT_OPENAI_NODE_MODULES); it is skipped,
// saying why, when they are missing.
func TestOpenAINodeClient(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the npm client test installs a package")
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed: the OpenAI npm client test needs node and npm")
	}
	dir := t.TempDir()
	modules := os.Getenv("GOPEFT_OPENAI_NODE_MODULES")
	if modules == "" {
		npm, err := exec.LookPath("npm")
		if err != nil {
			t.Skip("npm is not installed: the OpenAI npm client test needs it to install the openai package")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, npm, "install", "--silent", "--no-audit", "--no-fund", "openai@4")
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Skipf("npm install openai failed (no registry?): %v\n%s", err, out)
		}
		modules = filepath.Join(dir, "node_modules")
	}
	f := getFixture(t)
	_, ts := start(t, f, Config{MaxBatch: 4})
	script := filepath.Join(dir, "client.js")
	if err := os.WriteFile(script, []byte(openaiScript), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, script)
	cmd.Env = append(os.Environ(), "BASE="+ts.URL, "NODE_PATH="+modules)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "OK ") {
		t.Fatalf("the openai client failed: %v\n%s", err, out)
	}
	t.Logf("%s", out)
}
