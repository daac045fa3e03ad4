"""Task adapters: the paper's input transformations for GLUE-style datasets."""
