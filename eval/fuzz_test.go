package eval

import (
	"bytes"
	"strings"
	"testing"
)

func FuzzParseChoices(f *testing.F) {
	f.Add(`{"query": "Q", "choices": ["a", "b"], "gold": 1}` + "\n")
	f.Add(`{"query": "Q", "choices": ["a"], "gold": 0}`)
	f.Add(`{"query": 1}` + "\n\n" + `{"gold": -1}`)
	f.Add("\xff\n{")
	f.Fuzz(func(t *testing.T, s string) {
		items, err := ParseChoices(strings.NewReader(s), "fuzz.jsonl")
		if err != nil {
			return
		}
		for _, it := range items {
			if len(it.Choices) < 2 || it.Gold < 0 || it.Gold >= len(it.Choices) {
				t.Fatalf("accepted a bad item %+v", it)
			}
		}
	})
}

func FuzzParseHellaSwag(f *testing.F) {
	f.Add([]byte("ctx\n1\na\nb\nc\nd\n"))
	f.Add([]byte("ctx\n9\na\nb\nc\nd\n"))
	f.Add([]byte("BZh91AY&SY"))
	f.Add([]byte("ctx\n0\na\r\nb\nc\nd"))
	f.Fuzz(func(t *testing.T, b []byte) {
		items, err := ParseHellaSwag(bytes.NewReader(b), "fuzz.txt")
		if err != nil {
			return
		}
		for _, it := range items {
			if len(it.Choices) != 4 || it.Gold < 0 || it.Gold > 3 {
				t.Fatalf("accepted a bad item %+v", it)
			}
		}
	})
}

func FuzzParseGLUE(f *testing.F) {
	f.Add("mrpc", "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t1\t2\ta\t\"b\n")
	f.Add("stsb", "index\tsentence1\tsentence2\tscore\n0\ta\tb\t4.5\n1\tc\td\tNaN\n")
	f.Add("cola", "gj04\t1\t\tThe sailors rode.\nx\t2\n")
	f.Add("mnli", "sentence1\tsentence2\tgold_label\na\tb\tneutral\n")
	f.Add("rte", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n")
	f.Fuzz(func(t *testing.T, task, s string) {
		if _, ok := glueSpecs[task]; !ok {
			task = "sst2"
		}
		exs, err := ParseGLUE(task, strings.NewReader(s), "fuzz.tsv")
		if err != nil {
			return
		}
		for _, ex := range exs {
			if task == "stsb" {
				if !(ex.Score >= 0 && ex.Score <= 5) || ex.Label != -1 {
					t.Fatalf("accepted a bad score %+v", ex)
				}
			} else if ex.Label < 0 || ex.Label > 2 {
				t.Fatalf("accepted a bad label %+v", ex)
			}
		}
	})
}

func FuzzParseAlpacaChoices(f *testing.F) {
	f.Add(arcTrainJSON(2), 0)
	f.Add(`[{"instruction": "Please answer the following question with true or false, question: x?\n\nAnswer format: true/false", "answer": "true"}]`, 2)
	f.Add(`[{"instruction": "Please choose the correct answer to the question: q\n\nAnswer1: a Answer3: b", "answer": "answer9"}]`, 1)
	f.Fuzz(func(t *testing.T, s string, kind int) {
		k := AlpacaKind(((kind % 3) + 3) % 3)
		items, err := ParseAlpacaChoices(strings.NewReader(s), "fuzz.json", k)
		if err != nil {
			return
		}
		for _, it := range items {
			if len(it.Choices) < 2 || it.Gold < 0 || it.Gold >= len(it.Choices) {
				t.Fatalf("accepted a bad item %+v", it)
			}
		}
	})
}
