"""Infrastructure: how a `semtok` command is run, not what it computes.

- `main`: the `semtok` console script and `python -m semtok.cli`; hands a command to the fork server
  when one serves the run, else runs it in-process (`dispatch`).
- `dispatch`: the command table (command → job module of `semtok.jobs`) and the argument parsing.
- `forkserver`: local runs fork every job from a process that imported the heavy libraries once.
- `launch`: one process per GPU (or CPU) on every node of a Slurm allocation.
- `cluster`: `semtok install-profile`, the Snakemake site profile for Slurm.
- `schema`: `semtok config-schema` and `semtok resolve-config`.

Nothing in the library (`semtok/` outside `cli/` and `jobs/`) imports this package.
"""
