"""The application: what the `s4g` command does with the library. cli (parse, one job,
print), jobs (train, eval/mine, locate), rundir (the run folder), synth (the procedural
world), pictures, plot. Nothing in the library imports from here."""
