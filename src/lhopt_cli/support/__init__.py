"""Ground utilities the commands share: run-folder files and locks (files.py), progress bars,
the process pool (executor.py), reports, plots, TensorBoard logs, scheduling and threads."""
