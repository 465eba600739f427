package policies

import "errors"

// ErrNoSources is returned by Compile for an empty list of sources and by ReadDir
// for a directory without *.cedar files.
var ErrNoSources = errors.New("no policy sources")

// ErrInvalidPolicy wraps every problem Compile reports (syntax, @id, schema,
// lint, annotation values); test with errors.Is.
var ErrInvalidPolicy = errors.New("invalid policy")

// ErrNoCorpus is returned by ReadCorpora for a directory without a
// *.corpus.yaml file.
var ErrNoCorpus = errors.New("no corpus files")
