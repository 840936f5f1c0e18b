package promptlearn

import (
	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/nn"
)

// Encoded is a prompt table that either trains as it is or comes out of an
// encoder that trains instead (prefix tuning's prefix_projection MLP,
// P-tuning's prompt encoder). An adapter file holds the table, as PEFT's
// get_prompt_embedding_to_save writes it: SavedParams computes it from the
// encoder, and Loaded makes a loaded table replace the encoder, as PEFT
// loads such adapters. A method embeds it to implement peft.Saver.
type Encoded struct {
	// Name is the table's save name (prompt_embeddings).
	Name string
	// Table is the table when it trains or was loaded; nil while the
	// encoder produces it.
	Table *autograd.Var
	// Encode computes the whole table from the encoder (nil tape: no
	// gradient); nil once a loaded table replaced the encoder.
	Encode func(tp *autograd.Tape) *autograd.Var
	// loading is the tensor the last SavedParams handed out: LoadAdapter
	// fills it, and Loaded makes it the table.
	loading *autograd.Var
}

// SavedParams implements peft.Saver: the table, or the encoder's output.
func (e *Encoded) SavedParams() (nn.Params, error) {
	if e.Table != nil {
		e.loading = e.Table
		return nn.Params{{Name: e.Name, Var: e.Table}}, nil
	}
	v := autograd.Param(e.Name, e.Encode(nil).Value.Clone(), false)
	e.loading = v
	return nn.Params{{Name: e.Name, Var: v}}, nil
}

// Loaded implements peft.Saver: a loaded table replaces the encoder, which
// a file does not hold.
func (e *Encoded) Loaded() error {
	if e.Table == nil && e.loading != nil {
		e.Table, e.Encode = e.loading, nil
	}
	return nil
}
