"""The paper's data sets and models, shared by the examples, the benchmarks and the CLI."""
