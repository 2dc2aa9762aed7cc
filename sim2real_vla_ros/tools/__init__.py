"""Command-line tools: dry run, reference bundle, TensorRT engine builder."""
