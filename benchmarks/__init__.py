"""The side-by-side benchmark suite: elsewhere against a process pool, ipyparallel, Dask
and Ray on the same workloads, in one run. ``python -m benchmarks`` from the repository
root; see README.md beside this file."""
