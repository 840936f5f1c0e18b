package demo

import (
	"strings"
	"testing"
)

func TestCorpusIsSeededAndFreeOfTheTask(t *testing.T) {
	a, b := Corpus(1, 5000), Corpus(1, 5000)
	if a != b || len(a) < 5000 {
		t.Fatalf("corpus not reproducible or too short (%d bytes)", len(a))
	}
	if Corpus(2, 5000) == a {
		t.Error("different seeds gave the same corpus")
	}
	for _, qa := range Task() {
		sound := qa.Answer[strings.LastIndex(qa.Answer, " ")+1 : len(qa.Answer)-1]
		if strings.Contains(a, sound) || strings.Contains(a, "says") {
			t.Errorf("the corpus already contains the task's answer %q", sound)
		}
	}
}
