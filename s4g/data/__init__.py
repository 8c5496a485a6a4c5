"""Readers of the benchmark releases: each turns a data root into TrainSet / EvalSet records.

One module per release layout (cvusa, cvact, vigor, university, csvpairs), the record types
(records), and the one registry of dataset names (registry). The image pipeline is
s4g.pipeline.
"""
