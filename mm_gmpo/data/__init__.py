"""Records, prompt templates and dataset loaders."""
