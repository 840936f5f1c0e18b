// Package demo makes the built-in data of `gopeft demo`: a general corpus
// of short stories for the first stage (training a small LLaMA from
// scratch), and a narrow question-answering task for the second (a LoRA).
// Both are generated from small grammars with a seed, so the demo needs no
// files and no network, and the task's words never occur in the corpus.
package demo

import (
	"fmt"
	"math/rand/v2"
	"strings"
)

var (
	names   = []string{"Lily", "Tom", "Ben", "Mia", "Sam", "Anna", "Max", "Sue"}
	nouns   = []string{"cat", "dog", "bird", "ball", "tree", "box", "boat", "cake", "hat", "kite", "frog", "fish"}
	adjs    = []string{"big", "small", "red", "blue", "happy", "old", "little", "green"}
	verbs   = []string{"saw", "liked", "found", "had", "wanted", "made", "lost", "gave"}
	places  = []string{"in the park", "at home", "by the river", "in the garden", "at school", "on the hill"}
	feels   = []string{"happy", "sad", "tired", "glad", "scared", "proud"}
	endings = []string{"They played all day.", "Then they went home.", "It was a good day.", "They were friends."}
)

// Corpus returns about n bytes of short stories.
func Corpus(seed uint64, n int) string {
	r := rand.New(rand.NewPCG(seed, 1))
	pick := func(xs []string) string { return xs[r.IntN(len(xs))] }
	var b strings.Builder
	for b.Len() < n {
		who, what := pick(names), pick(nouns)
		fmt.Fprintf(&b, "Once upon a time, %s %s a %s %s %s. ", who, pick(verbs), pick(adjs), what, pick(places))
		for i := r.IntN(3); i >= 0; i-- {
			switch r.IntN(3) {
			case 0:
				fmt.Fprintf(&b, "%s was %s. ", who, pick(feels))
			case 1:
				fmt.Fprintf(&b, "The %s was %s. ", what, pick(adjs))
			default:
				fmt.Fprintf(&b, "%s %s the %s. ", pick(names), pick(verbs), what)
			}
		}
		b.WriteString(pick(endings))
		b.WriteString("\n")
	}
	return b.String()
}

// QA is one example of the second-stage task.
type QA struct{ Prompt, Answer string }

// animals and their sounds: the task is to answer what an animal says,
// which the story corpus never mentions.
var animals = [][2]string{
	{"cow", "moo"}, {"dog", "woof"}, {"cat", "meow"}, {"duck", "quack"}, {"sheep", "baa"},
	{"owl", "hoot"}, {"pig", "oink"}, {"horse", "neigh"}, {"bee", "buzz"}, {"frog", "ribbit"},
	{"lion", "roar"}, {"mouse", "squeak"},
}

// Task returns the question-answer pairs of the second stage.
func Task() []QA {
	var qs []QA
	for _, a := range animals {
		qs = append(qs, QA{Prompt: fmt.Sprintf("Q: What does the %s say?\nA:", a[0]), Answer: fmt.Sprintf(" The %s says %s.", a[0], a[1])})
	}
	return qs
}
