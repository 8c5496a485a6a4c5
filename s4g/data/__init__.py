"""Readers of the benchmark releases: each turns a data root into TrainSet / EvalSet records.

One module per release layout (cvusa, cvact, vigor, university, csvpairs), the record types
(records), and what feeds images to the model (images, transforms, dataset). Which reader a
`--dataset` name uses is s4g.datasets' business.
"""
