package format

// ReadGGUFMetadata returns the metadata of the GGUF file at path (the
// tokenizer.ggml.* vocabulary, the architecture's keys), checked as
// ReadGGUF checks the whole file. Where the system can, the file is mapped
// rather than read: the vocabulary of a multi-gigabyte model then costs
// the pages of its header, not a second copy of the weights. The values
// returned are copies; nothing refers to the file afterwards.
func ReadGGUFMetadata(path string) (map[string]any, error) {
	data, release, err := mapFile(path)
	if err != nil {
		return nil, err
	}
	defer release()
	f, err := ParseGGUF(path, data)
	if err != nil {
		return nil, err
	}
	return f.Metadata, nil
}
