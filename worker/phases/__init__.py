"""The pipeline's phases, one module each: fetch, validate, execute, register, deploy."""
