package peft

import (
	"fmt"
	"slices"

	"github.com/gopeft/gopeft/model/format"
	"github.com/gopeft/gopeft/model/llama"
)

// TaskSeqCls is the task_type of sequence classification: the base
// carries a classification head ("score"), trained whole through
// modules_to_save.
const TaskSeqCls = "SEQ_CLS"

// classifierModules are the head names PEFT's
// PeftModelForSequenceClassification adds to modules_to_save.
var classifierModules = []string{"classifier", "score"}

// prepareTask applies what a task type implies before an adapter attaches:
// for SEQ_CLS, PEFT adds the classifier heads to modules_to_save (so the
// head trains whole and is saved with the adapter), and the base needs a
// head.
func (m *Model) prepareTask(c *BaseConfig) error {
	if c.TaskType != TaskSeqCls {
		return nil
	}
	if m.Base.Score == nil {
		return fmt.Errorf("task_type %s needs a classification head on the base model (llama.Model.AddScoreHead)", TaskSeqCls)
	}
	for _, k := range classifierModules {
		if !slices.Contains(c.ModulesToSave, k) {
			c.ModulesToSave = append(c.ModulesToSave, k)
		}
	}
	return nil
}

// scoreSaveName is the classification head's tensor name in an adapter file.
const scoreSaveName = SavePrefix + llama.NameScore

// ensureScoreHead gives the base the classification head an adapter file
// carries (base_model.model.score.weight [num_labels, hidden]) when the base
// has none, and reports whether it made one. A SEQ_CLS adapter brings its
// trained head, so the new head's starting values do not matter.
func (m *Model) ensureScoreHead(stored map[string]*format.Tensor, path string) (bool, error) {
	t, ok := stored[scoreSaveName]
	if !ok || m.Base.Score != nil {
		return false, nil
	}
	if len(t.Shape) != 2 || t.Shape[0] < 1 || t.Shape[1] != m.Base.Config.HiddenSize {
		return false, fmt.Errorf("%s: tensor %s has shape %v, this base model needs [num_labels, %d]", path, scoreSaveName, t.Shape, m.Base.Config.HiddenSize)
	}
	return true, m.Base.AddScoreHead(t.Shape[0], 0)
}
