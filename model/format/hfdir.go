package format

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"path/filepath"
	"slices"

	"github.com/gopeft/gopeft/internal/safefile"
)

// Hugging Face model directory file names.
const (
	HFConfigFile      = "config.json"
	HFSafetensorsFile = "model.safetensors"
	HFIndexFile       = "model.safetensors.index.json"
)

// ReadHFDir reads a Hugging Face model directory: config.json (returned as
// raw JSON, checked to be an object, for the caller to decode into its own
// config type) and the weights, either model.safetensors or the shards that
// model.safetensors.index.json lists in its weight_map. Tensors keep their
// stored names and types; q_proj/k_proj are in Hugging Face (rotate-half)
// order.
func ReadHFDir(dir string) (config []byte, tensors map[string]*Tensor, err error) {
	cfgPath := filepath.Join(dir, HFConfigFile)
	config, err = safefile.ReadFile(cfgPath)
	if err != nil {
		return nil, nil, err
	}
	if t := bytes.TrimLeft(config, " \t\r\n"); len(t) == 0 || t[0] != '{' || !json.Valid(config) {
		return nil, nil, fmt.Errorf("%s: not a JSON object", cfgPath)
	}

	indexPath := filepath.Join(dir, HFIndexFile)
	index, err := safefile.ReadFile(indexPath)
	switch {
	case err == nil:
		tensors, err = readHFShards(dir, indexPath, index)
		return config, tensors, err
	case !errors.Is(err, fs.ErrNotExist):
		return nil, nil, err
	}
	single := filepath.Join(dir, HFSafetensorsFile)
	tensors, _, err = ReadSafetensors(single)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, fmt.Errorf("%s: no %s or %s (only safetensors weights are supported)", dir, HFSafetensorsFile, HFIndexFile)
	}
	if err != nil {
		return nil, nil, err
	}
	return config, tensors, nil
}

// readHFShards loads every shard named in a safetensors index. A tensor the
// weight_map lists must be in the shard it names, and no tensor may appear
// in two shards.
func readHFShards(dir, indexPath string, index []byte) (map[string]*Tensor, error) {
	var idx struct {
		WeightMap map[string]string `json:"weight_map"`
	}
	if err := json.Unmarshal(index, &idx); err != nil {
		return nil, fmt.Errorf("%s: %v", indexPath, err)
	}
	if len(idx.WeightMap) == 0 {
		return nil, fmt.Errorf("%s: empty or missing weight_map", indexPath)
	}
	var shards []string
	seen := make(map[string]bool)
	for _, tensor := range slices.Sorted(maps.Keys(idx.WeightMap)) {
		shard := idx.WeightMap[tensor]
		// Shards must sit beside the index: no paths out of the directory.
		if shard == "" || shard == "." || shard == ".." || filepath.Base(shard) != shard || filepath.IsAbs(shard) {
			return nil, fmt.Errorf("%s: tensor %q: shard %q is not a file name in the directory", indexPath, tensor, shard)
		}
		if !seen[shard] {
			seen[shard] = true
			shards = append(shards, shard)
		}
	}
	slices.Sort(shards)
	tensors := make(map[string]*Tensor, len(idx.WeightMap))
	from := make(map[string]string, len(idx.WeightMap))
	for _, shard := range shards {
		path := filepath.Join(dir, shard)
		ts, _, err := ReadSafetensors(path)
		if err != nil {
			return nil, err
		}
		for _, name := range slices.Sorted(maps.Keys(ts)) {
			t := ts[name]
			if other, dup := from[name]; dup {
				return nil, fmt.Errorf("%s: tensor %q is in both %s and %s", dir, name, other, shard)
			}
			from[name] = shard
			tensors[name] = t
		}
	}
	for _, tensor := range slices.Sorted(maps.Keys(idx.WeightMap)) {
		shard := idx.WeightMap[tensor]
		if from[tensor] != shard {
			return nil, fmt.Errorf("%s: tensor %q is listed in shard %s but not found there", indexPath, tensor, shard)
		}
	}
	return tensors, nil
}
