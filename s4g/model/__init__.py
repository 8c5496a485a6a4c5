"""The model: encoder (backbones), weights (where initial weights come from), checkpoint
(the file format), loss (symmetric InfoNCE), gradcache and chunksize (the chunked step).
"""
