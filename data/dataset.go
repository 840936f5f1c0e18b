package data

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/gopeft/gopeft/internal/safefile"
	"github.com/gopeft/gopeft/tokenizer"
)

// Format names accepted by Load.
const (
	FormatAuto             = "auto"
	FormatText             = "text"              // plain text, or {"text"} JSON/JSONL rows
	FormatAlpaca           = "alpaca"            // {"instruction", "input", "output"}
	FormatShareGPT         = "sharegpt"          // {"conversations"} or {"messages"}
	FormatPromptCompletion = "prompt_completion" // {"prompt", "completion"}; alias "jsonl"
)

// Options configure Load.
type Options struct {
	// Template names the chat template for instruction data; "" picks the
	// format's default: "alpaca" for Alpaca, "llama2" for ShareGPT,
	// "plain" for prompt/completion.
	Template string
	// MaxLen truncates instruction examples (0: no limit); see EncoderOptions.
	MaxLen int
	// SeqLen is the window of packed text (required for text).
	SeqLen int
	// TrainOnPrompt puts labels on prompt tokens too.
	TrainOnPrompt bool
	// System replaces every conversation's system prompt when not "".
	System string
	// SkipInvalid skips and counts bad rows instead of failing.
	SkipInvalid bool
	// TextDocs splits plain-text files into documents: DocsAuto, DocsFile
	// or DocsLines.
	TextDocs string
	// EvalFraction and Split hold out the end of the data: with Split
	// "train" Load returns all but the last EvalFraction, with "eval" only
	// that last part ("" returns everything). Text is split by bytes before
	// tokenizing (see SplitText), instruction data by rows.
	EvalFraction float64
	Split        string
}

// Dataset is a loaded, tokenized data file.
type Dataset struct {
	Path     string
	Format   string // the format used (never "auto")
	Template string // the chat template used ("" for text)
	Examples []Example
	Stats    Stats
}

// Len returns the number of examples.
func (d *Dataset) Len() int { return len(d.Examples) }

// Get returns example i.
func (d *Dataset) Get(i int) Example { return d.Examples[i] }

// Load reads the file at path in the named format (FormatAuto detects it;
// see DetectFormat) and tokenizes it with tok.
func Load(path, format string, tok tokenizer.Tokenizer, o Options) (*Dataset, error) {
	if tok == nil {
		return nil, fmt.Errorf("data: %s: nil tokenizer", path)
	}
	data, err := safefile.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("data: %w", err)
	}
	return LoadBytes(data, path, format, tok, o)
}

// LoadBytes is Load for data already in memory; name is used for format
// detection and messages.
func LoadBytes(data []byte, name, format string, tok tokenizer.Tokenizer, o Options) (*Dataset, error) {
	if o.Split != "" && o.Split != "train" && o.Split != "eval" {
		return nil, fmt.Errorf("data: %s: split %q, want \"\", \"train\" or \"eval\"", name, o.Split)
	}
	if !(o.EvalFraction >= 0 && o.EvalFraction <= 1) {
		return nil, fmt.Errorf("data: %s: eval fraction %v outside [0, 1]", name, o.EvalFraction)
	}
	format, err := resolveFormat(data, name, format)
	if err != nil {
		return nil, err
	}
	d := &Dataset{Path: name, Format: format}
	if format == FormatText {
		docs, st, err := readDocuments(data, name, o)
		if err != nil {
			return nil, err
		}
		if o.Split != "" {
			tr, ev := splitDocs(docs, o.EvalFraction)
			docs = pick(o.Split, tr, ev)
		}
		d.Stats = st
		d.Examples, err = PackText(docs, tok, o.SeqLen, &d.Stats)
		if err != nil {
			return nil, fmt.Errorf("data: %s: %w", name, err)
		}
		return d, nil
	}
	convs, st, err := parseConversations(data, name, format, o.SkipInvalid)
	if err != nil {
		return nil, err
	}
	if o.Split != "" {
		tr, ev := splitTail(convs, o.EvalFraction)
		convs = pick(o.Split, tr, ev)
	}
	d.Template = o.Template
	if d.Template == "" {
		d.Template = DefaultTemplate(format)
	}
	tmpl, err := LookupTemplate(d.Template)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	enc, err := NewEncoder(tok, tmpl, EncoderOptions{MaxLen: o.MaxLen, TrainOnPrompt: o.TrainOnPrompt, System: o.System})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	d.Stats = st
	d.Examples, err = enc.EncodeAll(convs, &d.Stats)
	if err != nil {
		return nil, err
	}
	return d, nil
}

// DefaultTemplate is the chat template instruction data of a format is
// encoded with when none is named: "alpaca" for Alpaca, "llama2" for
// ShareGPT, "plain" for prompt/completion ("" for text or an unknown
// format; format names as Load accepts them).
func DefaultTemplate(format string) string {
	if strings.EqualFold(format, FormatAuto) || format == "" {
		return ""
	}
	f, err := resolveFormat(nil, "", format)
	if err != nil {
		return ""
	}
	return map[string]string{FormatAlpaca: "alpaca", FormatShareGPT: "llama2", FormatPromptCompletion: "plain"}[f]
}

// ReadConversations reads an instruction-data file (format FormatAlpaca,
// FormatShareGPT, FormatPromptCompletion, or FormatAuto) without
// tokenizing it.
func ReadConversations(path, format string, skipInvalid bool) ([]Conversation, Stats, error) {
	data, err := safefile.ReadFile(path)
	if err != nil {
		return nil, Stats{}, fmt.Errorf("data: %w", err)
	}
	format, err = resolveFormat(data, path, format)
	if err != nil {
		return nil, Stats{}, err
	}
	return parseConversations(data, path, format, skipInvalid)
}

// ReadDocuments reads a text file (plain text, or {"text"} JSON/JSONL
// rows when the name ends in .json or .jsonl) as documents.
func ReadDocuments(path string, o Options) ([]Document, Stats, error) {
	data, err := safefile.ReadFile(path)
	if err != nil {
		return nil, Stats{}, fmt.Errorf("data: %w", err)
	}
	return readDocuments(data, path, o)
}

func readDocuments(data []byte, name string, o Options) ([]Document, Stats, error) {
	if isJSONName(name) {
		return ParseTextRecords(data, name, o.SkipInvalid)
	}
	return ParseText(data, name, o.TextDocs)
}

func parseConversations(data []byte, name, format string, skipInvalid bool) ([]Conversation, Stats, error) {
	switch format {
	case FormatAlpaca:
		return ParseAlpaca(data, name, skipInvalid)
	case FormatShareGPT:
		return ParseShareGPT(data, name, skipInvalid)
	case FormatPromptCompletion:
		return ParsePromptCompletion(data, name, skipInvalid)
	}
	return nil, Stats{}, fmt.Errorf("data: %s: format %q is not instruction data", name, format)
}

// resolveFormat normalises a format name, detecting it for FormatAuto.
func resolveFormat(data []byte, name, format string) (string, error) {
	switch strings.ToLower(format) {
	case FormatAuto, "":
		return DetectFormat(data, name)
	case FormatText, "c4", "pretrain":
		return FormatText, nil
	case FormatAlpaca:
		return FormatAlpaca, nil
	case FormatShareGPT, "openai", "messages":
		return FormatShareGPT, nil
	case FormatPromptCompletion, "jsonl", "prompt-completion":
		return FormatPromptCompletion, nil
	}
	return "", fmt.Errorf("data: %s: unknown format %q (want auto, text, alpaca, sharegpt or prompt_completion)", name, format)
}

func isJSONName(name string) bool {
	ext := strings.ToLower(filepath.Ext(name))
	return ext == ".json" || ext == ".jsonl"
}

var errStop = errors.New("stop")

// DetectFormat guesses a file's format: FormatText for names ending in
// .txt, .text or .md, and for other names but .json and .jsonl whose data
// does not start with '[' or '{'; otherwise from the keys of the first record: "conversations" or
// "messages" → FormatShareGPT, "instruction" → FormatAlpaca, "prompt" and
// "completion" → FormatPromptCompletion, "text" → FormatText.
func DetectFormat(data []byte, name string) (string, error) {
	switch strings.ToLower(filepath.Ext(name)) {
	case ".txt", ".text", ".md":
		return FormatText, nil
	case ".json", ".jsonl":
	default:
		trimmed := bytes.TrimLeft(data, " \t\r\n\ufeff")
		if len(trimmed) == 0 || (trimmed[0] != '[' && trimmed[0] != '{') {
			return FormatText, nil
		}
	}
	var keys []string
	var st Stats
	err := forEachRecord(data, name, false, &st, func(p pos, o object) error {
		for k := range o {
			keys = append(keys, k)
		}
		return errStop
	})
	if err != nil && !errors.Is(err, errStop) {
		return "", err
	}
	if keys == nil {
		return "", fmt.Errorf("data: %s: no records to detect the format from", name)
	}
	has := func(k string) bool { return slices.Contains(keys, k) }
	switch {
	case has("conversations") || has("messages"):
		return FormatShareGPT, nil
	case has("instruction"):
		return FormatAlpaca, nil
	case has("prompt") && has("completion"):
		return FormatPromptCompletion, nil
	case has("text"):
		return FormatText, nil
	}
	slices.Sort(keys)
	return "", fmt.Errorf("data: %s: cannot tell the format from the first record's keys %s", name, mustJSON(keys))
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// splitTail returns the first and the last evalFraction of s.
func splitTail[T any](s []T, evalFraction float64) (train, eval []T) {
	cut := len(s) - int(float64(len(s))*evalFraction+0.5)
	return s[:cut], s[cut:]
}

func pick[T any](split string, train, eval []T) []T {
	if split == "eval" {
		return eval
	}
	return train
}

// splitDocs holds out the last evalFraction of the documents' bytes,
// splitting the document in which the cut falls as SplitText does.
func splitDocs(docs []Document, evalFraction float64) (train, eval []Document) {
	total := 0
	for _, d := range docs {
		total += len(d.Text)
	}
	cut := total - int(float64(total)*evalFraction+0.5)
	for i, d := range docs {
		if cut >= len(d.Text) {
			cut -= len(d.Text)
			train = append(train, d)
			continue
		}
		if cut > 0 {
			a, b := cutText(d.Text, cut, total/100)
			train = append(train, Document{Text: a, Source: d.Source})
			d.Text = b
		}
		if d.Text != "" {
			eval = append(eval, d)
		}
		eval = append(eval, docs[i+1:]...)
		break
	}
	return train, eval
}

// CheckFormat reports an error unless format names a format Load reads
// (an alias or "auto" included), without reading any data.
func CheckFormat(format string) error {
	if strings.EqualFold(format, FormatAuto) || format == "" {
		return nil
	}
	if _, err := resolveFormat(nil, "", format); err != nil {
		return fmt.Errorf("unknown format %q (want auto, text, alpaca, sharegpt or prompt_completion)", format)
	}
	return nil
}
